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
from typing import Any

import orjson
from prometheus_client import REGISTRY

from services.cli.traffic import agrawal_events
from services.runtime import topics
from services.runtime.loop import Output, StreamLoop
from services.runtime.settings import Settings

from .passthrough import Passthrough
from .stack import BenchStack, produce_all

__all__ = [
    "LoopTiming",
    "Records",
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
    consumed: int = 0
    outputs: dict[str, int] = field(default_factory=dict)  # topic → records it holds after
    started: float | None = None
    finished: float | None = None
    handler_seconds: float = 0.0  # inside the service's handler (decode, score/merge, encode)
    flush_seconds: float = 0.0  # waiting in producer.flush for the batch's acknowledgements
    clock: str = "last flush"  # what stopped the clock

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
        if self.started is None or self.finished is None:
            return float("nan")
        return self.finished - self.started

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
        if t.finished is None and t.consumed >= self._target:
            t.finished = time.perf_counter()
            if self._profiler is not None:
                self._profiler.disable()
        return left


def measure_loop(
    loop: StreamLoop, target: int, timeout: float = 120.0, profiler: Profile | None = None
) -> LoopTiming:
    """Run a service's real StreamLoop until ``target`` records have been handled and flushed.

    A ``profiler`` is enabled for exactly the timed window.
    """
    timing = LoopTiming()
    inner = loop.handler

    def counted(batch: list[Any]) -> Sequence[Output]:
        if timing.started is None:
            timing.started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
        before = time.perf_counter()
        outputs = inner(batch)
        timing.handler_seconds += time.perf_counter() - before
        timing.consumed += len(batch)  # nothing per record: the bench must not cost the loop
        if timing.consumed >= target:
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
    if timing.finished is None and timing.consumed >= target:
        # The loop no longer flushes through ``loop.producer``: its exit is the next best clock
        # (it includes the final commit and leaving the group, so it understates the rate).
        timing.finished = time.perf_counter()
        timing.clock = "loop exit"
    return timing


def measure_passthrough(stack: BenchStack, records: Records, timeout: float = 120.0) -> LoopTiming:
    s = stack.settings("raw", extra_topics=[PASSTHROUGH_OUT])
    try:
        produce_all(s, s.topics.features, records)
        relay = Passthrough(
            s, s.topics.features, s.topics.name(PASSTHROUGH_OUT), f"{s.topic_prefix}bench-raw"
        )
        t = relay.run(target=len(records), timeout=timeout)
        return LoopTiming(
            consumed=t.consumed, outputs={PASSTHROUGH_OUT: t.consumed},
            started=t.first_consumed, finished=t.last_acked, flush_seconds=t.flush_seconds,
        )
    finally:
        stack.drop_topics(s)


def _acknowledged(service: str, s: Settings, bases: Sequence[str]) -> dict[str, int]:
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
        produce_all(s, input_topic(s), records)
        loop = build(s)
        timing = measure_loop(loop, len(records), profiler=profiler)
        timing.outputs = _acknowledged(loop.service, s, OUTPUT_TOPICS)
        return timing
    finally:
        stack.drop_topics(s)
