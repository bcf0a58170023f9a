"""The loop's wait for acknowledgements: its timeout counts waiting, not a frozen process's
time, and records the broker never acknowledges still stop the service."""

from __future__ import annotations

import types
from typing import Any

import pytest

from services.runtime import loop as loop_module
from services.runtime.loop import DeliveryFailed, Output, StreamLoop
from services.runtime.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FakeProducer:
    """Acknowledges nothing until ``ack_after`` polls; the second poll (the first the loop
    makes while it waits) may freeze the process for ``freeze`` seconds (as SIGSTOP does)."""

    def __init__(self, clock: Clock, *, freeze: float = 0.0, ack_after: int | None = None) -> None:
        self.clock = clock
        self.freeze = freeze
        self.ack_after = ack_after
        self.polls = 0
        self.waiting: list[Any] = []

    def produce(self, topic: str, value: bytes, key: Any = None, *, on_delivery: Any,
                timestamp: int = 0) -> None:
        self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        self.clock.now += timeout
        if self.polls == 2 and self.freeze:
            self.clock.now += self.freeze
        if self.ack_after is not None and self.polls >= self.ack_after:
            for report in self.waiting:
                report(None, None)
            self.waiting = []
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[Any] = []

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        self.commits.append(offsets)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    fake_time = types.SimpleNamespace(monotonic=c.monotonic, perf_counter=c.monotonic)
    monkeypatch.setattr(loop_module, "time", fake_time)
    monkeypatch.setattr(loop_module.kafka, "consumer", lambda *a, **k: FakeConsumer())
    return c


def _loop(clock: Clock, producer: FakeProducer) -> StreamLoop:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="settle.")
    loop = StreamLoop(settings, service="settle", group_id="g", topics=["in"],
                      handler=lambda batch: [], max_in_flight=0)
    loop.producer = producer  # type: ignore[assignment]
    return loop


def test_a_frozen_process_gives_the_broker_its_full_timeout_after_waking(clock: Clock) -> None:
    # Frozen for 60 s while it waits (twice the 30-s timeout); acknowledged 0.5 s after waking.
    producer = FakeProducer(clock, freeze=60.0, ack_after=12)
    loop = _loop(clock, producer)
    loop._send([Output("out", b"x"), Output("out", b"y")], {("in", 0): 8})
    assert clock.now > 1060
    assert loop._committed == {("in", 0): 8}
    assert not loop._in_flight


def test_records_never_acknowledged_still_stop_the_service(clock: Clock) -> None:
    producer = FakeProducer(clock)
    loop = _loop(clock, producer)
    with pytest.raises(DeliveryFailed, match="2 records unacknowledged after 30s"):
        loop._send([Output("out", b"x"), Output("out", b"y")], {("in", 0): 8})
    assert 1029 < clock.now < 1032  # it waited its 30 s, polling
    assert loop._committed == {}
