"""monitor in one process: N predictions and their N labeled records, both streams at once.

``services.monitor.service.build`` with its default settings: every metric, the drift of the
9 demo features and of the score, the label-free estimate, concept drift, alerts, evaluated
every ``monitor_eval_seconds`` and checkpointed every ``monitor_checkpoint_seconds``.

The monitor is timed in its steady state: one loop first handles W predictions and their W
labeled records untimed (W = 10,000 by default: every sliding window fills; the monitor's
memory of recent prediction ids, ``monitor_dedup_ids`` per stream, costs the same per id
whether full or not, one set insertion and, once full, one removal). Then, with the clock
stopped and the consumer's fetching paused, N more of each stream are produced, and timed by
:func:`throughput.measure_loop` from the next batch, fetching included, as for the other
services. The handler publishes nothing here (snapshots and drift alerts come from the idle
ticks; a concept-drift alert would leave with its batch, and these records have none), so
the clock stops when the loop, stopped after the batch completing the records, flushes on its
way out. labeled events/s = 2N / that time: both streams' records.

The periodic evaluation and checkpoint are timed on their own: a run shorter than their period
may hold none of them, so their cost is reported beside the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from cProfile import Profile
from dataclasses import dataclass, field
from typing import Any

from services.models import ArtifactStore
from services.monitor.service import ModelMonitor, build
from services.runtime import topics
from services.runtime.service import redis_client

from .labels import Labeled
from .stack import BenchStack, produce_all
from .throughput import LoopTiming, measure_loop

__all__ = ["MonitorTiming", "measure_monitor", "warm_up"]


@dataclass
class MonitorTiming:
    loop: LoopTiming
    predictions: int  # counted by the monitor, per version
    labeled: int
    evaluations: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    checkpoints: list[tuple[float, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.loop.rate

    def note(self) -> str:
        t = self.loop
        start, end = t.started or 0.0, t.finished or 0.0

        def timed(calls: list[tuple[float, float]]) -> str:
            xs = [s for at, s in calls if start <= at < end]
            return f"{len(xs)} × {sum(xs) / len(xs) * 1000:.0f} ms" if xs else "none"

        last = [s for at, s in self.checkpoints if at >= end]
        closing = f"{last[-1] * 1000:.0f} ms" if last else "none"
        return (f"{t.consumed:,} records in {t.seconds:.2f} s after {t.warm_records:,} untimed "
                f"({self.predictions:,} predictions + {self.labeled:,} labeled in all; "
                f"{t.split()}); in the window: evaluations {timed(self.evaluations)}, "
                f"checkpoints {timed(self.checkpoints)}; checkpoint at close (after the clock) "
                f"{closing}")


def _timed(fn: Callable[..., Any], into: list[tuple[float, float]]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        before = time.perf_counter()
        try:
            return fn(*args)
        finally:
            into.append((before, time.perf_counter() - before))

    return run


def measure_monitor(
    stack: BenchStack, name: str, data: Labeled, warm: int = 10_000, timeout: float = 120.0,
    profiler: Profile | None = None, **overrides: Any,
) -> MonitorTiming:
    """One run over ``data``: its first ``warm`` records of each stream untimed, the rest timed."""
    s = stack.settings(name, **overrides)
    labeled_topic = s.topics.name(topics.PREDICTIONS_LABELED)

    def produce(part: Labeled) -> None:
        produce_all(s, s.topics.predictions, part.predictions, stack.producer(s))
        produce_all(s, labeled_topic, part.labeled, stack.producer(s))

    try:
        warm = max(0, min(warm, len(data.predictions) - 1))
        produce(data.part(0, warm) if warm else data)
        loop = build(s)
        monitor = loop.handler
        assert isinstance(monitor, ModelMonitor)
        result = MonitorTiming(LoopTiming(), 0, 0)
        # Instance attributes: tick() and the loop's on_close reach them through the monitor.
        monitor.evaluate = _timed(monitor.evaluate, result.evaluations)  # type: ignore[method-assign]
        monitor.save = _timed(monitor.save, result.checkpoints)  # type: ignore[method-assign]
        loop.on_close = monitor.save
        n = len(data.predictions)
        result.loop = measure_loop(
            loop, 2 * n, timeout, profiler, time_first_phase=not warm,
            pause_at=2 * warm if warm else None, pause=lambda: produce(data.part(warm)),
        )
        result.predictions = sum(vm.predictions for vm in monitor.versions.values())
        result.labeled = sum(vm.labeled for vm in monitor.versions.values())
        if (result.predictions, result.labeled) != (n, n):
            raise RuntimeError(f"monitor counted {result.predictions:,} predictions and "
                               f"{result.labeled:,} labeled, expected {n:,} each")
        return result
    finally:
        stack.drop_topics(s)
        stack.drop_keys(s)


class _Record:
    """Stands in for a consumed ``confluent_kafka.Message``: what the monitor reads of one."""

    __slots__ = ("_topic", "_value")

    def __init__(self, topic: str, value: bytes) -> None:
        self._topic, self._value = topic, value

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value


def warm_up(stack: BenchStack, data: Labeled, limit: int = 10_000, batch: int = 1000) -> float:
    """One untimed pass over ``limit`` records of each stream, in this process and without
    Kafka, and an evaluation.

    It fills the per-process caches of the one-time calibrations (the Monte-Carlo null samples
    of the drift thresholds, the CUSUM designs) that a long-running monitor has long filled.
    Returns its seconds: the cold cost, reported beside the warm rate.
    """
    s = stack.settings("mwarm")
    try:
        monitor = ModelMonitor(s, ArtifactStore(s.artifacts), redis_client(s))
        labeled_topic = s.topics.name(topics.PREDICTIONS_LABELED)
        started = time.perf_counter()
        for i in range(0, min(limit, len(data.predictions)), batch):
            for topic, records in ((s.topics.predictions, data.predictions),
                                   (labeled_topic, data.labeled)):
                monitor([_Record(topic, v) for _, v in records[i:i + batch]])  # type: ignore[misc]
        monitor.evaluate(int(time.time() * 1000))
        return time.perf_counter() - started
    finally:
        stack.drop_topics(s)
        stack.drop_keys(s)
