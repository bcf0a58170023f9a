"""The benchmark's clock around a service loop, without a broker: one phase and two."""

from __future__ import annotations

import math
from types import SimpleNamespace

import orjson
import pytest

from bench import throughput
from bench.labels import feature_events_with_truth
from bench.throughput import LoopTiming, measure_loop


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    def flush(self, *_args: object) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: list[str] | None = None
        self.calls: list[str] = []

    def assignment(self) -> list[str]:
        return ["t[0]", "t[1]"]

    def pause(self, partitions: list[str]) -> None:
        self.calls.append("pause")
        self.paused = partitions

    def resume(self, partitions: list[str]) -> None:
        assert partitions == self.paused
        self.calls.append("resume")
        self.paused = None


class FakeLoop:
    """What measure_loop uses of a StreamLoop: a handler per batch, then a final flush."""

    def __init__(self, clock: Clock, batches: list[list[int]]) -> None:
        self.clock = clock
        self.batches = batches
        self.handler = self.handle
        self.producer = FakeProducer()
        self.consumer = FakeConsumer()
        self.running = True
        self.handled = 0

    def handle(self, batch: list[int]) -> list[object]:
        self.clock.now += 10  # the service's work
        self.handled += 1
        return []

    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        i = 0
        while self.running and i < len(self.batches):
            self.handler(self.batches[i])
            i += 1
            self.clock.now += 1  # the loop's own work between batches
        self.producer.flush(10)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=c))
    return c


def test_one_phase_runs_from_the_first_batch_to_the_final_flush(clock):
    clock.now = 5.0  # the group join, before the first batch: not timed
    loop = FakeLoop(clock, [[1, 2], [3, 4], [5, 6]])
    t = measure_loop(loop, target=4)  # type: ignore[arg-type]
    assert loop.handled == 2  # stopped once the target was handled
    assert (t.started, t.finished, t.consumed) == (5.0, 27.0, 4)
    assert t.seconds == 22.0 and t.rate == pytest.approx(4 / 22)
    assert t.handler_seconds == 20.0 and t.clock == "last flush"
    assert "handler 91%" in t.split()


def test_two_phases_leave_the_pause_out(clock):
    batches = [[1, 2], [3, 4]]
    paused: list[float] = []
    loop = FakeLoop(clock, batches)

    def pause() -> None:
        assert loop.consumer.paused == ["t[0]", "t[1]"]  # nothing is fetched meanwhile
        paused.append(clock.now)
        clock.now += 100  # producing the second stream: not timed
        batches.extend([[5, 6], [7, 8]])

    t = measure_loop(loop, 8, pause_at=4, pause=pause)  # type: ignore[arg-type]
    assert loop.consumer.calls == ["pause", "resume"]
    assert paused == [21.0] and t.paused_at == 21.0 and t.resumed_at == 122.0
    assert t.first_phase_records == 4 and t.consumed == 8
    assert t.finished == 144.0
    assert t.paused_seconds == 101.0 and t.seconds == 43.0
    first, second = t.phase_rates()
    assert first == pytest.approx(4 / 21) and second == pytest.approx(4 / 22)


def test_timing_of_a_run_that_never_started():
    t = LoopTiming()
    assert math.isnan(t.seconds) and t.split() == ""
    assert all(math.isnan(r) for r in t.phase_rates())


def test_events_with_truth_are_the_complete_events_the_other_runs_read():
    def timeless(records: throughput.Records) -> list[tuple[bytes, dict]]:
        return [(k, {**orjson.loads(v), "event_time": 0}) for k, v in records]

    records, truth = feature_events_with_truth(50)
    assert timeless(records) == timeless(throughput.feature_events(50, partial=False))
    assert len(truth) == 50 and set(truth) <= {"0", "1"}


def test_an_untimed_first_phase_is_a_warm_up(clock):
    batches = [[1, 2], [3, 4]]

    def pause() -> None:
        clock.now += 100
        batches.extend([[5, 6, 7], [8, 9, 10]])

    t = measure_loop(FakeLoop(clock, batches), 10, pause_at=4, pause=pause,  # type: ignore[arg-type]
                     time_first_phase=False)
    assert (t.warm_records, t.consumed) == (4, 6)
    assert (t.started, t.finished) == (122.0, 144.0)
    assert t.seconds == 22.0 and t.rate == pytest.approx(6 / 22)
    assert t.handler_seconds == 20.0
