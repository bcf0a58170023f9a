"""The monitor's and the registry's topics, read into the dashboard's history.

``monitor.metrics`` (a snapshot per model version every few seconds: quality, the label-free
estimate, drift per feature), ``monitor.alerts`` (firing and resolved) and ``model.events``
(every transition of every version: the registry's history). The feed reads them by
assignment, with no consumer group: on start it replays the recent tail of the monitor's
topics and all of ``model.events``, then follows.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..registry import ModelEvent, RegistryState
from ..runtime import metrics, topics
from ..runtime.errors import DecodeError, ModelstreamError
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings

__all__ = ["TopicFeed", "TopicHistory"]

log = logging.getLogger(__name__)

REPLAY = {topics.MONITOR_METRICS: 2000, topics.MONITOR_ALERTS: 2000, topics.MODEL_EVENTS: None}
MAX_VERSIONS = 12  # (model, version, role) keys kept; the oldest-updated leave first
MAX_ALERT_EVENTS = 300
QUALITY_METRICS = ("accuracy", "expected_accuracy", "f1", "expected_f1")


class TopicHistory:
    """What the three topics said, bounded in memory."""

    def __init__(self, points: int) -> None:
        self.points = points
        self.quality: dict[tuple[str, str, str], deque[dict[str, Any]]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}  # alert id -> its latest event
        self.alert_events: deque[dict[str, Any]] = deque(maxlen=MAX_ALERT_EVENTS)
        self.registry = RegistryState()  # the registry's own fold: champions, rollbacks
        self.undecodable = 0

    def add(self, base: str, record: dict[str, Any]) -> None:
        if base == topics.MONITOR_METRICS:
            self._snapshot(record)
        elif base == topics.MONITOR_ALERTS:
            self._alert(record)
        elif base == topics.MODEL_EVENTS:
            entry = self.registry.apply(ModelEvent.from_record(record))
            if entry.applied:
                e = entry.event
                metrics.MODEL_LAST_TRANSITION.labels(e.model, e.transition).set(e.time / 1000)

    def _snapshot(self, s: dict[str, Any]) -> None:
        key = (s["model"], s["model_version"], s.get("role") or "")
        history = self.quality.get(key)
        if history is None:
            if len(self.quality) >= MAX_VERSIONS:
                stalest = min(self.quality, key=lambda k: self.quality[k][-1]["t"])
                del self.quality[stalest]
            history = self.quality[key] = deque(maxlen=self.points)
        if history and s["emitted_at"] <= history[-1]["t"]:
            return  # a replayed or reordered snapshot: history keeps time order
        m = s.get("metrics") or {}
        history.append({
            "t": s["emitted_at"], "predictions": s.get("predictions"), "labeled": s.get("labeled"),
            **{name: m.get(name) for name in QUALITY_METRICS},
            "drift": dict(s.get("feature_drift") or {}),
        })

    def _alert(self, a: dict[str, Any]) -> None:
        event = {k: a.get(k) for k in (
            "alert_id", "model", "model_version", "role", "kind", "metric", "feature", "value",
            "threshold", "severity", "state", "message", "raised_at")}
        self.alert_events.append(event)
        before = self.alerts.get(a["alert_id"])
        # An episode opens with its first firing event; escalations and the resolution keep it.
        ongoing = before is not None and (before["state"] == "firing" or a["state"] != "firing")
        opened = before["opened_at"] if ongoing and before else a["raised_at"]
        self.alerts[a["alert_id"]] = {**event, "opened_at": opened}
        if len(self.alerts) > MAX_ALERT_EVENTS:
            resolved = [k for k, v in self.alerts.items() if v["state"] != "firing"]
            for k in resolved[: len(self.alerts) - MAX_ALERT_EVENTS]:
                del self.alerts[k]


class TopicFeed:
    """A thread that follows the topics into a :class:`TopicHistory` (under ``lock``)."""

    def __init__(self, settings: Settings, history: TopicHistory, lock: threading.Lock) -> None:
        self.settings = settings
        self.history = history
        self.lock = lock
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-feed", daemon=True)
        reg = settings.schema_registry_url
        self._bases = {settings.topics.name(b): b for b in REPLAY}
        self._decoders = {b: EventDecoder(b, max_bytes=1 << 24, registry_url=reg) for b in REPLAY}

    def start(self) -> TopicFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _assign(self, consumer: Consumer) -> bool:
        md = consumer.list_topics(timeout=5)
        missing = [t for t in self._bases if t not in md.topics]
        if missing:
            log.info("dashboard waits for topics %s", ", ".join(missing))
            return False
        parts = []
        for name, base in self._bases.items():
            last = REPLAY[base]
            for p in md.topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                start = low if last is None else max(low, high - last)
                parts.append(TopicPartition(name, p, start))
        consumer.assign(parts)
        return True

    def _run(self) -> None:
        consumer = Consumer(self.settings.kafka_config(**{
            "group.id": f"{self.settings.topic_prefix}modelstream-dashboard",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 200,
        }))
        try:
            while not self._stop.is_set() and not self.assigned.is_set():
                try:
                    if self._assign(consumer):
                        self.assigned.set()
                        break
                except KafkaException as exc:
                    log.warning("dashboard cannot read the topics yet: %s", exc)
                self._stop.wait(2.0)
            while not self._stop.is_set():
                self._consume(consumer.consume(500, 0.5))
        finally:
            consumer.close()

    def _consume(self, messages: list[Any]) -> None:
        decoded: list[tuple[str, dict[str, Any]]] = []
        bad = 0
        for m in messages:
            if m.error():
                continue
            base = self._bases[m.topic()]
            try:
                decoded.append((base, self._decoders[base].decode(m.value())))
            except DecodeError as exc:
                bad += 1
                log.warning("dashboard skips %s[%d]@%d: %s", m.topic(), m.partition(),
                            m.offset(), exc.reason)
        with self.lock:
            self.history.undecodable += bad
            for base, record in decoded:
                try:
                    self.history.add(base, record)
                except (KeyError, TypeError, ModelstreamError) as exc:  # not the shape we read
                    self.history.undecodable += 1
                    log.warning("dashboard skips a %s record: %r", base, exc)
