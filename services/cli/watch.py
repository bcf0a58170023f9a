"""Counting what comes out of the pipeline, from the topics themselves (used by the demo,
the benchmarks and the tests): valid events, rejections by reason, predictions (served and
challengers', and any scored twice by one version), latency, labeled predictions, the monitor's
latest snapshot per version and its alerts, and the loop's control plane — every
``model.events`` transition and ``retrain.jobs`` step, read from the start of those topics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from ..runtime import topics
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings

__all__ = ["PipelineWatcher", "WatchCounts"]


@dataclass
class WatchCounts:
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    predictions: int = 0
    prediction_ids: set[str] = field(default_factory=set)
    served_events: set[str] = field(default_factory=set)  # event ids with a served prediction
    challenger_predictions: int = 0  # shadow predictions (served: false)
    scored_twice: int = 0  # a prediction id seen again: one version scored one event twice
    e2e_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    labeled_ids: set[str] = field(default_factory=set)
    labeled_served: set[str] = field(default_factory=set)  # event ids of served, labeled ones
    snapshots: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    model_events: list[dict[str, Any]] = field(default_factory=list)
    job_steps: list[dict[str, Any]] = field(default_factory=list)
    # (emitted_at, accuracy, labeled) of every snapshot, per (model, version, role)
    accuracy: dict[tuple[str, str, str], list[tuple[int, float, int]]] = field(
        default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def latency(self, q: float, which: str = "e2e") -> float:
        data = self.e2e_ms if which == "e2e" else self.service_ms
        return float(np.percentile(data, q)) if data else float("nan")


class PipelineWatcher:
    """Reads the data plane's topics from their current end onwards, and ``model.events`` and
    ``retrain.jobs`` from their start (the registry's history and the jobs so far)."""

    def __init__(self, settings: Settings) -> None:
        t = settings.topics
        kinds = {
            topics.FEATURES_VALID: "valid", topics.FEATURES_DLQ: "dlq",
            topics.PREDICTIONS: "pred", topics.PREDICTIONS_LABELED: "labeled",
            topics.MONITOR_METRICS: "snapshot", topics.MONITOR_ALERTS: "alert",
            topics.MODEL_EVENTS: "model", topics.RETRAIN_JOBS: "job",
        }
        from_start = {t.name(topics.MODEL_EVENTS), t.name(topics.RETRAIN_JOBS)}
        self.names = {t.name(base): kind for base, kind in kinds.items()}
        self.decoders = {t.name(base): EventDecoder(base, max_bytes=1 << 22) for base in kinds}
        self.counts = WatchCounts()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.consumer = Consumer(
            settings.kafka_config(
                **{"group.id": "modelstream-watch", "enable.auto.commit": False,
                   "fetch.wait.max.ms": 10}
            )
        )
        md = self.consumer.list_topics(timeout=10)
        assignment = []
        for name in self.names:
            for p in md.topics[name].partitions:
                if name in from_start:
                    assignment.append(TopicPartition(name, p, OFFSET_BEGINNING))
                    continue
                high = self.consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                assignment.append(TopicPartition(name, p, high))
        self.consumer.assign(assignment)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PipelineWatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self.consumer.consume(5000, timeout=0.1)
            now_ms = time.time() * 1000
            with self.lock:
                c = self.counts
                for msg in msgs:
                    if msg.error():
                        continue
                    topic = msg.topic() or ""
                    kind = self.names[topic]
                    rec = self.decoders[topic].decode(msg.value())
                    if kind == "valid":
                        c.valid += 1
                    elif kind == "dlq":
                        c.rejected[rec["reason"]] += 1
                    elif kind == "pred":
                        c.predictions += 1
                        if rec["prediction_id"] in c.prediction_ids:
                            c.scored_twice += 1
                        c.prediction_ids.add(rec["prediction_id"])
                        if not rec.get("served", True):
                            c.challenger_predictions += 1
                            continue
                        c.served_events.add(rec["event_id"])
                        c.labels[rec["label"]] += 1
                        c.e2e_ms.append(now_ms - rec["event_time"])
                        c.service_ms.append(rec["latency_ms"])
                    elif kind == "labeled":
                        c.labeled_ids.add(rec["prediction_id"])
                        if rec.get("served", True):
                            c.labeled_served.add(rec["event_id"])
                    elif kind == "snapshot":
                        key = (rec["model"], rec["model_version"], rec["role"])
                        c.snapshots[key] = rec
                        acc = rec["metrics"].get("accuracy")
                        if acc is not None:
                            c.accuracy.setdefault(key, []).append(
                                (int(rec["emitted_at"]), float(acc), int(rec["labeled"])))
                    elif kind == "model":
                        c.model_events.append(rec)
                    elif kind == "job":
                        c.job_steps.append(rec)
                    else:
                        c.alerts.append(rec)
