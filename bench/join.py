"""join in one process: N predictions and their N outcomes, one stream after the other.

One ``services.join.service.build`` loop, subscribed to both topics, in two phases: the first
stream is produced and joined (every record stored in Redis, nothing labeled yet); then, with
the clock stopped and the consumer's fetching paused (so that the second phase fetches its
records inside its window, as the first did), the second stream is produced, and joined
(every record labels one prediction). The clock of :func:`throughput.measure_loop` runs from
the first batch of a phase to the end of the phase; the second ends when every labeled record
is acknowledged. outcomes/s joined = N / (phase 1 + phase 2): a join process handles a
prediction for every outcome.

Redis memory per pending record: Valkey's ``used_memory`` at the end of phase 1 minus before
it, over N: the join state of N predictions (or outcomes) waiting for their other side. Per
labeled event: the same at the end, once the stored predictions the broker has as labeled
records are pruned: what an event keeps for the rest of its join window.

The baseline (:func:`build_handwired`) is the join a user wires by hand on the same loop: each
record stores itself under its event id with a TTL and reads the other side's key, one
pipelined ``SET`` and ``GET`` per record (redis-py, as the services use it), and a record that
finds its other side publishes the two merged. It is the least a Redis-backed join does: one
prediction per event, no idempotency (a replay labels again), no corrections, nothing counted
when a window closes.

Redis CPU per record: Valkey's CPU time (``INFO cpu``, user + system) from before the loop
starts to after it ends, over the 2N records: the server's share of the work, which runs
beside the process's own (on another core when there is one). Valkey is idle otherwise
(the group join, the pause), so the window barely inflates it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from cProfile import Profile
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from services.join.service import IN_FLIGHT, build
from services.runtime import kafka, topics
from services.runtime.loop import Output, StreamLoop
from services.runtime.service import redis_client
from services.runtime.settings import Settings

from .labels import Labeled
from .stack import BenchStack, produce_all
from .throughput import LoopTiming, acknowledged, measure_loop

__all__ = ["First", "JoinTiming", "build_handwired", "measure_join"]

First = Literal["predictions", "outcomes"]


@dataclass
class JoinTiming:
    first: First
    outcomes: int
    loop: LoopTiming
    labeled: int  # predictions.labeled records acknowledged
    memory_per_pending: float  # bytes of Redis per record of the first stream
    memory_per_labeled: float  # bytes of Redis per event at the end (kept for the window)
    redis_cpu_seconds: float  # Valkey's CPU time over the run

    @property
    def rate(self) -> float:
        """Outcomes joined per second."""
        return self.outcomes / self.loop.seconds

    def note(self) -> str:
        second = "outcomes" if self.first == "predictions" else "predictions"
        first_rate, second_rate = self.loop.phase_rates()
        return (f"{self.outcomes:,} outcomes in {self.loop.seconds:.2f} s: {self.first} stored "
                f"{first_rate:,.0f}/s, then {second} labeling {second_rate:,.0f}/s "
                f"({self.loop.split()}); {self.labeled:,} labeled; Redis "
                f"{self.memory_per_pending:,.0f} B per pending {self.first[:-1]}, "
                f"{self.memory_per_labeled:,.0f} B per labeled event; CPU per "
                f"record: process {self.loop.cpu_per_event_us:.1f} µs, Redis "
                f"{self.redis_cpu_seconds / (2 * self.outcomes) * 1e6:.1f} µs")


def build_handwired(settings: Settings) -> StreamLoop:
    """The hand-wired join of the module's doc, on a StreamLoop configured as join's."""
    client = redis_client(settings)
    base = f"{settings.topic_prefix}handwired:"
    window_ms = settings.join_window_seconds * 1000
    predictions, labeled = settings.topics.predictions, settings.topics.predictions_labeled

    def handle(batch: list[Any]) -> list[Output]:
        pipe = client.pipeline(transaction=False)
        records = []
        for msg in batch:
            value = msg.value()
            rec = orjson.loads(value)
            mine, other = ("p:", "o:") if msg.topic() == predictions else ("o:", "p:")
            pipe.set(base + mine + rec["event_id"], value, px=window_ms)
            pipe.get(base + other + rec["event_id"])
            records.append((mine == "p:", rec))
        found = pipe.execute()[1::2]
        now = int(time.time() * 1000)
        out = []
        for (is_prediction, rec), other in zip(records, found, strict=True):
            if other is None:
                continue
            pred, outcome = (rec, orjson.loads(other)) if is_prediction else (
                orjson.loads(other), rec)
            merged = {**pred, "outcome_label": outcome.get("label"),
                      "outcome_value": outcome.get("value"),
                      "outcome_time": outcome["outcome_time"],
                      "label_delay_ms": max(outcome["outcome_time"] - pred["predicted_at"], 0),
                      "labeled_at": now}
            out.append(Output(labeled, orjson.dumps(merged), pred["entity_id"]))
        return out

    return StreamLoop(
        settings, service="handwired-join", group_id=f"{settings.topic_prefix}handwired-join",
        topics=[predictions, settings.topics.outcomes], handler=handle,
        batch_size=settings.join_batch_size, max_in_flight=IN_FLIGHT,
        consumer_overrides=kafka.THROUGHPUT_CONSUMER, producer_overrides=kafka.THROUGHPUT_PRODUCER,
        on_exit=client.close,
    )


def measure_join(
    stack: BenchStack, name: str, data: Labeled, first: First, timeout: float = 120.0,
    profiler: Profile | None = None, build: Callable[[Settings], StreamLoop] = build,
) -> JoinTiming:
    """One run of ``build``'s loop (join's, or :func:`build_handwired`); a ``profiler`` is
    enabled for both timed phases."""
    s = stack.settings(name)
    redis = redis_client(s)
    streams = {"predictions": (s.topics.predictions, data.predictions),
               "outcomes": (s.topics.outcomes, data.outcomes)}
    second: First = "outcomes" if first == "predictions" else "predictions"
    n = len(data.outcomes)
    memory: list[int] = []
    producer = stack.producer(s)

    def between() -> None:
        memory.append(int(redis.info("memory")["used_memory"]))
        produce_all(s, *streams[second], producer)

    def redis_cpu() -> float:
        info = redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    try:
        produce_all(s, *streams[first], producer)
        memory.append(int(redis.info("memory")["used_memory"]))
        loop = build(s)
        cpu = redis_cpu()
        timing = measure_loop(loop, 2 * n, timeout, profiler, pause_at=n, pause=between)
        cpu = redis_cpu() - cpu
        memory.append(int(redis.info("memory")["used_memory"]))
        labeled = acknowledged(loop.service, s, [topics.PREDICTIONS_LABELED]).get(
            topics.PREDICTIONS_LABELED, 0)
        if timing.first_phase_records != n or timing.consumed != 2 * n or labeled != n:
            raise RuntimeError(f"join handled {timing.first_phase_records:,} + "
                               f"{timing.consumed - timing.first_phase_records:,} records and "
                               f"labeled {labeled:,}, expected {n:,} each")
        return JoinTiming(first, n, timing, labeled, (memory[1] - memory[0]) / n,
                          (memory[2] - memory[0]) / n, cpu)
    finally:
        stack.drop_topics(s)
        stack.drop_keys(s)
