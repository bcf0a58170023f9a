"""One-process throughput: pre-produce N records, then time a loop over them.

The clock starts when the first batch reaches the handler (so the ~3 s consumer-group join is
left out) and stops when the flush of the batch that completes N returns: every output of the
N records is acknowledged by then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from cProfile import Profile
from dataclasses import dataclass, field
from time import process_time
from typing import Any

import orjson
from prometheus_client import REGISTRY

from services.cli.traffic import agrawal_events
from services.runtime import topics
from services.runtime.loop import Output, StreamLoop
from services.runtime.service import tune_gc
from services.runtime.settings import Settings

from .passthrough import Passthrough
from .stack import BenchStack, produce_all

__all__ = [
    "LoopTiming",
    "Records",
    "acknowledged",
    "as_valid",
    "feature_events",
    "measure_loop",
    "measure_passthrough",
    "measure_service",
]

Records = list[tuple[bytes, bytes]]
PASSTHROUGH_OUT = "passthrough.out"
OUTPUT_TOPICS = (topics.FEATURES_VALID, topics.FEATURES_DLQ, topics.PREDICTIONS)
# Topic high watermarks cannot count outputs: tansu 0.6 reports the base offset of a
# partition's last record batch as its end offset. The loop's own counter can.
EVENTS_OUT = "modelstream_events_out_total"


def feature_events(n: int, *, partial: bool, seed: int = 7) -> Records:
    """Raw ``features`` events as a producer sends them: all valid, full or with partials."""
    kwargs: dict[str, Any] = {"bad_rate": 0.0, "seed": seed}
    if not partial:
        kwargs["partial_rate"] = 0.0
    return [(e.key, e.value) for e in agrawal_events(n, **kwargs)]


def as_valid(full: Records) -> Records:
    """Complete ``features`` events in the JSON form ingest writes to ``features.valid``."""
    now_ms = int(time.time() * 1000)
    out = []
    for key, value in full:
        e = orjson.loads(value)
        record = {
            "event_id": e["event_id"],
            "entity_id": e["entity_id"],
            "event_time": e["event_time"],
            "model": "agrawal",
            "features": e["features"],
            "ingested_at": now_ms,
        }
        out.append((key, orjson.dumps(record)))
    return out


@dataclass
class LoopTiming:
    consumed: int = 0  # records handled in the timed window
    outputs: dict[str, int] = field(default_factory=dict)  # topic → records it holds after
    started: float | None = None
    finished: float | None = None
    handler_seconds: float = 0.0  # inside the service's handler (decode, score/merge, encode)
    flush_seconds: float = 0.0  # waiting in producer.flush for the batch's acknowledgements
    paused_at: float | None = None  # end of the first phase of a two-phase run
    resumed_at: float | None = None  # the first batch of its second phase
    first_phase_records: int = 0
    warm_records: int = 0  # records handled before the clock started (an untimed first phase)
    clock: str = "last flush"  # what stopped the clock
    # Process CPU time (every thread: librdkafka's too) in the timed window, pause left out.
    cpu_started: float | None = None
    cpu_finished: float | None = None
    cpu_paused: float = 0.0

    @property
    def cpu_seconds(self) -> float:
        if self.cpu_started is None or self.cpu_finished is None:
            return float("nan")
        return self.cpu_finished - self.cpu_started - self.cpu_paused

    @property
    def cpu_per_event_us(self) -> float:
        """Process CPU microseconds per record handled in the timed window."""
        return self.cpu_seconds / self.consumed * 1e6 if self.consumed else float("nan")

    def split(self) -> str:
        """Where the timed window went: handler, flush wait, and the loop's own work."""
        total = self.seconds
        if not total or total != total:
            return ""
        rest = total - self.handler_seconds - self.flush_seconds
        stopped = "" if self.clock == "last flush" else f"clock stopped at {self.clock}; "
        return (f"{stopped}handler {self.handler_seconds / total:.0%}, flush wait "
                f"{self.flush_seconds / total:.0%}, consume/produce/commit {rest / total:.0%}")

    @property
    def seconds(self) -> float:
        """The timed window; for a two-phase run, both phases without the pause between."""
        if self.started is None or self.finished is None:
            return float("nan")
        return self.finished - self.started - self.paused_seconds

    @property
    def paused_seconds(self) -> float:
        if self.paused_at is None or self.resumed_at is None:
            return 0.0
        return self.resumed_at - self.paused_at

    def phase_rates(self) -> tuple[float, float]:
        """Records/s of the first phase and of the second, of a two-phase run."""
        if self.started is None or self.finished is None or self.paused_at is None:
            return float("nan"), float("nan")
        first = self.first_phase_records / (self.paused_at - self.started)
        second = self.finished - (self.resumed_at or self.paused_at)
        return first, (self.consumed - self.first_phase_records) / second

    @property
    def rate(self) -> float:
        return self.consumed / self.seconds


class _FlushClock:
    """Stands in for the loop's producer and notes when the final batch's flush returns."""

    def __init__(
        self, producer: Any, timing: LoopTiming, target: int, profiler: Profile | None
    ) -> None:
        self._producer = producer
        self._timing = timing
        self._target = target
        self._profiler = profiler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def flush(self, *args: Any) -> int:
        before = time.perf_counter()
        left: int = self._producer.flush(*args)
        t = self._timing
        if t.started is not None and t.finished is None:
            t.flush_seconds += time.perf_counter() - before
        if t.finished is None and t.consumed + t.warm_records >= self._target:
            t.finished = time.perf_counter()
            t.cpu_finished = process_time()
            if self._profiler is not None:
                self._profiler.disable()
        return left


def measure_loop(
    loop: StreamLoop,
    target: int,
    timeout: float = 120.0,
    profiler: Profile | None = None,
    *,
    pause_at: int | None = None,
    pause: Callable[[], None] | None = None,
    time_first_phase: bool = True,
) -> LoopTiming:
    """Run a service's real StreamLoop until ``target`` records have been handled and flushed.

    A ``profiler`` is enabled for exactly the timed window.

    Two phases in one loop (one group join): once the handler has returned for the batch that
    completes ``pause_at`` records, ``pause()`` runs (say, to produce the second phase's
    records) with the clock stopped and the consumer's fetching paused, so that the second
    phase fetches its records inside its window, as the first did; the clock runs again from
    the next batch. Only for a first phase that publishes nothing: its last batch's outputs are
    not yet acknowledged there. With ``time_first_phase=False`` the first phase is a warm-up
    (to time a service in its steady state): only the second is timed, and only its records
    count (``warm_records`` tells the others).

    The garbage collector is tuned as ``run_service`` tunes it in production (``tune_gc``).
    """
    tune_gc()
    timing = LoopTiming()
    inner = loop.handler
    phase = 1
    paused_cpu = 0.0

    def counted(batch: list[Any]) -> Sequence[Output]:
        nonlocal phase, paused_cpu
        now = time.perf_counter()
        if timing.started is None:
            timing.started = now
            timing.cpu_started = process_time()
            if profiler is not None and time_first_phase:
                profiler.enable()
        elif phase == 1 and timing.paused_at is not None:
            phase = 2
            if time_first_phase:
                timing.resumed_at = now
                timing.cpu_paused += process_time() - paused_cpu
            else:  # the warm-up is over: the clock starts now
                timing.warm_records, timing.consumed = timing.consumed, 0
                timing.started, timing.paused_at, timing.handler_seconds = now, None, 0.0
                timing.cpu_started = process_time()
            if profiler is not None:
                profiler.enable()
        before = time.perf_counter()
        outputs = inner(batch)
        timing.handler_seconds += time.perf_counter() - before
        timing.consumed += len(batch)  # nothing per record: the bench must not cost the loop
        if phase == 1 and pause_at is not None and pause is not None and (
            timing.consumed >= pause_at
        ):
            timing.paused_at = time.perf_counter()
            paused_cpu = process_time()
            timing.first_phase_records = timing.consumed
            if profiler is not None:
                profiler.disable()
            _without_fetching(loop, pause)
        elif timing.consumed + timing.warm_records >= target:
            loop.stop()  # the loop still produces and commits this batch, then leaves
        return outputs

    loop.handler = counted
    loop.producer = _FlushClock(loop.producer, timing, target, profiler)  # type: ignore[assignment]
    watchdog = threading.Timer(timeout, loop.stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        loop.run()
    finally:
        watchdog.cancel()
    if timing.finished is None and timing.consumed + timing.warm_records >= target:
        # The loop no longer flushes through ``loop.producer``: its exit is the next best clock
        # (it includes the final commit and leaving the group, so it understates the rate).
        timing.finished = time.perf_counter()
        timing.cpu_finished = process_time()
        timing.clock = "loop exit"
    return timing


def _without_fetching(loop: StreamLoop, pause: Callable[[], None]) -> None:
    assigned = loop.consumer.assignment()
    loop.consumer.pause(assigned)
    try:
        pause()
    finally:
        loop.consumer.resume(assigned)


def measure_passthrough(stack: BenchStack, records: Records, timeout: float = 120.0) -> LoopTiming:
    s = stack.settings("raw", extra_topics=[PASSTHROUGH_OUT])
    try:
        produce_all(s, s.topics.features, records, stack.producer(s))
        relay = Passthrough(
            s, s.topics.features, s.topics.name(PASSTHROUGH_OUT), f"{s.topic_prefix}bench-raw"
        )
        t = relay.run(target=len(records), timeout=timeout)
        return LoopTiming(
            consumed=t.consumed, outputs={PASSTHROUGH_OUT: t.consumed},
            started=t.first_consumed, finished=t.last_acked, flush_seconds=t.flush_seconds,
            cpu_started=t.cpu_first_consumed, cpu_finished=t.cpu_last_acked,
        )
    finally:
        stack.drop_topics(s)


def acknowledged(service: str, s: Settings, bases: Sequence[str]) -> dict[str, int]:
    """Records the loop produced and had acknowledged, per output topic, from its metrics."""
    counts = {}
    for base in bases:
        labels = {"service": service, "topic": s.topics.name(base)}
        n = REGISTRY.get_sample_value(EVENTS_OUT, labels)
        if n:
            counts[base] = int(n)
    return counts


def measure_service(
    stack: BenchStack,
    name: str,
    build: Callable[[Settings], StreamLoop],
    input_topic: Callable[[Settings], str],
    records: Records,
    profiler: Profile | None = None,
    **overrides: Any,
) -> LoopTiming:
    s = stack.settings(name, **overrides)
    try:
        produce_all(s, input_topic(s), records, stack.producer(s))
        loop = build(s)
        timing = measure_loop(loop, len(records), profiler=profiler)
        timing.outputs = acknowledged(loop.service, s, OUTPUT_TOPICS)
        return timing
    finally:
        stack.drop_topics(s)
