"""Training data and live evidence, both read from ``predictions.labeled``.

The training set is the latest labeled examples of a model within the configured window: the
feature snapshots that were actually served, with the outcome that arrived for them, so
training sees exactly what serving saw. One example per event (several versions may have
scored it; their snapshots are the same), ordered by event time and split by time: the most
recent ``holdout_fraction`` is the holdout. Examples whose outcome is not one of the model's
labels, or whose snapshot the feature spec cannot encode, are left out and counted.

``LabeledReader`` reads the topic from a point in time onwards and keeps its position, so the
coordinator's periodic checks of a shadow, a canary or a new champion read each record once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, TopicPartition

from ..batch.columns import ColumnEncoder
from ..models.card import ModelCard
from ..runtime import kafka, topics
from ..runtime.errors import DecodeError
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings

__all__ = [
    "LabeledReader",
    "TrainingSet",
    "gather_training_set",
    "live_pairs",
    "outcome_of",
    "read_window",
]


class LabeledReader:
    """``predictions.labeled`` from ``since_ms`` (record time) on, for one model.

    The end of a partition is known from the fetch (``enable.partition.eof``), not from
    ``ListOffsets``: the embedded broker (tansu 0.6) answers ListOffsets with the base offset of
    the last batch, and ``offsets_for_times`` with 0, so positions are found by timestamp on the
    client (on Kafka the start offset is exact and the filter drops nothing).
    """

    def __init__(
        self, settings: Settings, model: str, since_ms: int, *, latest: int | None = None
    ) -> None:
        self.model = model
        self.since_ms = since_ms
        self.topic = settings.topics.predictions_labeled
        self._decoder = EventDecoder(topics.PREDICTIONS_LABELED, max_bytes=1 << 24,
                                     registry_url=settings.schema_registry_url)
        self._consumer = kafka.consumer(
            settings, f"modelstream-retrain-reader-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, "statistics.interval.ms": 0},
        )
        md = self._consumer.list_topics(self.topic, timeout=10)
        parts = sorted(md.topics[self.topic].partitions)
        found = self._consumer.offsets_for_times(
            [TopicPartition(self.topic, p, since_ms) for p in parts], timeout=10)
        # -1: nothing that recent; start at the end (OFFSET_END).
        start = {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in found}
        if latest is not None:  # at most about `latest` records: the most recent ones
            share = -(-latest // max(len(parts), 1))
            for p in parts:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=10)
                if start[p] >= 0:
                    start[p] = max(start[p], high - share)
        self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
        self._at_end = dict.fromkeys(parts, False)

    def read_new(
        self, until_ms: int | None = None, max_seconds: float = 10.0
    ) -> list[dict[str, Any]]:
        """Records of the model that arrived since the last call, up to the end of every
        partition (records stamped at or after ``until_ms`` are left out)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + max_seconds
        first = True
        while first or (not all(self._at_end.values()) and time.monotonic() < deadline):
            first = False
            for msg in self._consumer.consume(5000, 0.1):
                p = int(msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._at_end[p] = True
                    continue
                self._at_end[p] = False
                _, ts = msg.timestamp()
                if ts < self.since_ms or (until_ms is not None and ts >= until_ms):
                    continue
                try:
                    record = self._decoder.decode(msg.value())
                except DecodeError:
                    continue
                if record.get("model") == self.model:
                    out.append(record)
        return out

    def close(self) -> None:
        self._consumer.close()


def outcome_of(record: dict[str, Any], regression: bool) -> Any:
    """The actual outcome of a labeled prediction: its label, or its value for regression."""
    if regression:
        return record.get("outcome_value")
    label = record.get("outcome_label")
    return None if label is None else str(label)


@dataclass(slots=True)
class TrainingSet:
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    window_start: int
    window_end: int
    dropped: int  # labeled examples left out: unknown label or unencodable snapshot

    @property
    def rows(self) -> int:
        return len(self.y_train) + len(self.y_holdout)

    def numbers(self) -> dict[str, float]:
        return {"train_rows": float(len(self.y_train)),
                "holdout_rows": float(len(self.y_holdout)), "dropped_rows": float(self.dropped)}


def gather_training_set(
    records: list[dict[str, Any]], card: ModelCard, holdout_fraction: float,
    window: tuple[int, int],
) -> TrainingSet:
    """One example per event from labeled predictions, split by event time."""
    by_event: dict[str, dict[str, Any]] = {}
    for r in records:
        event_id = r.get("event_id")
        if not isinstance(event_id, str) or not isinstance(r.get("features"), dict):
            continue
        # Prefer the served prediction's record; the snapshot is the same for every version.
        if event_id not in by_event or r.get("served"):
            by_event[event_id] = r
    rows = sorted(by_event.values(), key=lambda r: (int(r.get("event_time") or 0), r["event_id"]))
    regression = not card.is_classifier
    targets = [outcome_of(r, regression) for r in rows]
    encoded = ColumnEncoder(card.features).encode(
        {f: [r["features"].get(f) for r in rows] for f in card.feature_names}, len(rows)
    )
    keep: list[int] = []
    y: list[Any] = []
    label_index = {label: i for i, label in enumerate(card.labels)}
    ok_rows = np.flatnonzero(encoded.ok).tolist()
    for position, i in enumerate(ok_rows):
        target = targets[i]
        if regression:
            if isinstance(target, int | float) and np.isfinite(target):
                keep.append(position)
                y.append(float(target))
        elif target in label_index:
            keep.append(position)
            y.append(label_index[target])
    x = encoded.matrix[keep]
    y_arr = np.asarray(y, dtype=np.float64 if regression else np.int64)
    split = int(round(len(y_arr) * (1.0 - holdout_fraction)))
    return TrainingSet(x[:split], y_arr[:split], x[split:], y_arr[split:], window[0], window[1],
                       dropped=len(rows) - len(keep))


def read_window(
    settings: Settings, model: str, start_ms: int, end_ms: int, latest: int | None = None
) -> list[dict[str, Any]]:
    """The labeled predictions of ``model`` recorded in ``[start_ms, end_ms)``; with ``latest``,
    only about that many of the topic's most recent records are read (memory and time stay
    bounded whatever the window holds)."""
    reader = LabeledReader(settings, model, start_ms, latest=latest)
    try:
        return reader.read_new(until_ms=end_ms, max_seconds=120.0)
    finally:
        reader.close()


def live_pairs(
    records: list[dict[str, Any]], version: str, regression: bool, role: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """``{event_id: (predicted, actual)}`` of one version (optionally in one role)."""
    out: dict[str, tuple[Any, Any]] = {}
    for r in records:
        if r.get("model_version") != version or (role is not None and r.get("role") != role):
            continue
        actual = outcome_of(r, regression)
        if actual is None:
            continue
        predicted = r.get("score") if regression else r.get("label")
        out[str(r.get("event_id"))] = (predicted, actual)
    return out
