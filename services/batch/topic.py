"""Reading a time range of a topic for batch scoring: backfills and offline challenger runs.

Each partition is read from ``offsets_for_times(from)`` to its end as the fetch reports it
(``enable.partition.eof``), and records are kept when their timestamp is in ``[from, to)``. The
partitions are assigned directly (no consumer group, no committed offsets: a backfill never
disturbs the services). Timestamps are checked on the client because the embedded broker
(tansu 0.6) answers ``offsets_for_times`` with 0 and ListOffsets with the base offset of the
last batch; on Kafka the start offset is exact and the check drops nothing before ``from``.

Records of ``predictions`` and ``predictions.labeled`` are scored from the feature snapshot they
carry; only the served prediction of each event is taken (shadow scores of the same event would
repeat it), and only records of the model being scored: those are the input rows. Everything
else read is counted as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from ..runtime import kafka
from ..runtime.errors import ConfigError, DecodeError
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings
from .sources import PASSTHROUGH, Rejection, RowBatch

__all__ = ["SCORABLE_TOPICS", "TopicRange", "plan_range"]

SCORABLE_TOPICS: tuple[str, ...] = ("features.valid", "predictions", "predictions.labeled")
_IDLE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TopicRange:
    """Where to start per partition, the time range, and about how many records to read."""

    topic: str
    base: str
    offsets: dict[int, tuple[int, int]]  # partition -> (start, high watermark: an estimate)
    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def total(self) -> int:
        return sum(max(end - start, 0) for start, end in self.offsets.values())


def plan_range(
    settings: Settings, base: str, from_ms: int | None, to_ms: int | None
) -> TopicRange:
    """The offsets of the records with timestamps in ``[from_ms, to_ms)`` (open ends: all)."""
    if base not in SCORABLE_TOPICS:
        choices = ", ".join(SCORABLE_TOPICS)
        raise ConfigError(f"cannot score topic {base!r}; choose one of {choices}")
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ConfigError("--to must be later than --from")
    topic = settings.topics.name(base)
    consumer = kafka.consumer(settings, "modelstream-score")
    try:
        md = consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ConfigError(f"topic {topic} does not exist")
        offsets: dict[int, tuple[int, int]] = {}
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            offsets[p] = (_offset_at(consumer, topic, p, from_ms, low, high), high)
        return TopicRange(topic, base, offsets, from_ms, to_ms)
    finally:
        consumer.close()


def _offset_at(
    consumer: Any, topic: str, partition: int, ms: int | None, default: int, high: int
) -> int:
    if ms is None:
        return default
    (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, ms)], timeout=10)
    # -1: no record at or after that time, so the range starts (or ends) at the high watermark.
    return high if found.offset < 0 else int(found.offset)


def read_topic(
    settings: Settings, plan: TopicRange, model: str, features: list[str], batch_size: int
) -> Iterator[RowBatch]:
    """Batches of the records in ``plan`` that belong to ``model`` (served ones only)."""
    decoder = EventDecoder(plan.base, max_bytes=1 << 24, registry_url=settings.schema_registry_url)
    served_only = plan.base != "features.valid"
    low = -(1 << 62) if plan.from_ms is None else plan.from_ms
    high = 1 << 62 if plan.to_ms is None else plan.to_ms
    consumer = kafka.consumer(settings, "modelstream-score",
                              **{"enable.partition.eof": True, "statistics.interval.ms": 0})
    consumer.assign([TopicPartition(plan.topic, p, start)
                     for p, (start, _) in plan.offsets.items()])
    pending = set(plan.offsets)
    ordinal = 0
    last_progress = time.monotonic()
    try:
        while pending:
            messages = consumer.consume(batch_size, 0.5)
            if not messages:
                if time.monotonic() - last_progress > _IDLE_SECONDS:
                    raise ConfigError(f"{plan.topic}: no end of partition after"
                                      f" {_IDLE_SECONDS:g} s; is the broker up?")
                continue
            last_progress = time.monotonic()
            batch = RowBatch([], {}, {n: [] for n in (*PASSTHROUGH, "partition", "offset")})
            vectors: list[dict[str, Any]] = []
            for msg in messages:
                p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)
                    continue
                batch.progress += 1
                _, ts = msg.timestamp()
                if not low <= ts < high:
                    continue  # outside the time range: not an input row
                record = _decode(decoder, msg.value(), ordinal, p, offset, batch)
                if record is None:
                    ordinal += 1
                    continue
                if record.get("model", model) != model or (
                    served_only and record.get("served") is False
                ):
                    batch.skipped += 1
                    continue
                ordinal += 1
                batch.rows.append(ordinal)
                vectors.append(record["features"])
                for name in PASSTHROUGH:
                    batch.extras[name].append(record.get(name))
                batch.extras["partition"].append(p)
                batch.extras["offset"].append(offset)
            batch.columns = {n: [v.get(n) for v in vectors] for n in features}
            yield batch
    finally:
        consumer.close()


def _decode(
    decoder: EventDecoder, value: bytes | None, ordinal: int, partition: int, offset: int,
    batch: RowBatch,
) -> dict[str, Any] | None:
    where = {"partition": partition, "offset": offset}
    try:
        record = decoder.decode(value)
    except DecodeError as exc:
        batch.rejected.append(Rejection(ordinal + 1, exc.reason, exc.detail, where))
        return None
    if type(record.get("features")) is not dict:
        batch.rejected.append(Rejection(ordinal + 1, "bad_features", "no features object", where))
        return None
    return record
