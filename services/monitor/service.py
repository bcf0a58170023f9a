"""monitor: the quality, drift and health of every model version, online.

Consumes ``predictions`` (input and prediction drift, the label-free estimate) and
``predictions.labeled`` (quality from labels, concept drift), per (model, version, role), over
sliding windows. Every ``MONITOR_EVAL_SECONDS`` it updates the Prometheus gauges, publishes a
snapshot per version on ``monitor.metrics`` and the alert events on ``monitor.alerts``.

Counting is exact across restarts: the state (windows, detectors, alert episodes, the recent
prediction ids used to ignore duplicates) is checkpointed to Redis together with the consumer
positions it reflects, and the offsets are committed only then; a restarted monitor loads the
checkpoint and resumes every partition at the checkpointed position. Run one replica per model
group: the windows of a version must see all its partitions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message

from ..models import ArtifactStore
from ..runtime import kafka, metrics, topics
from ..runtime.errors import DecodeError, ModelLoadError
from ..runtime.loop import Output, StreamLoop
from ..runtime.records import check_labeled, check_prediction
from ..runtime.redis_batch import retrying
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.service import redis_client
from ..runtime.settings import Settings
from . import checkpoint
from .alerts import AlertBook, AlertEvent, AlertKey, AlertRule
from .drift import FalseAlarmBudget
from .version import VersionMonitor

__all__ = ["ModelMonitor", "build"]

SERVICE = "monitor"
log = logging.getLogger(__name__)
VersionKey = tuple[str, str, str]  # model, version, role
CHECKS = {"predictions": check_prediction, "labeled": check_labeled}
CONCEPT_RULE = AlertRule(kind="performance", warning=0.5, fire_after=1, resolve_after=6)


class RecentIds:
    """The last ``capacity`` prediction ids, to count each prediction once.

    An id is remembered as a 64-bit key (its BLAKE2b digest), in a set for the lookup and a
    ring for the order of eviction: about 85 bytes an id (measured: 200,000 ids, 16.6 MiB) where
    the id strings in an ``OrderedDict`` took 150, and the checkpoint holds 8 bytes an id as one
    ``uint64`` array where the JSON strings took 35 (and 10× the time to encode). Two different
    ids sharing a key (the second then counted as a replay) are a chance of ~1e-14 per id at
    this capacity.

    >>> ids = RecentIds(2)
    >>> [ids.add(x) for x in ("a", "b", "a", "c", "a")]
    [True, True, False, True, True]
    >>> ids.state().tolist() == [key("c"), key("a")]
    True
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, not {capacity}")
        self.capacity = capacity
        self._keys: set[int] = set()
        self._ring: list[int] = []  # oldest at _pos once full
        self._pos = 0

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, pid: str) -> bool:
        """True if new."""
        return self._add(key(pid))

    def _add(self, k: int) -> bool:
        keys = self._keys
        if k in keys:
            return False
        if not self.capacity:
            return True
        ring = self._ring
        keys.add(k)
        if len(ring) < self.capacity:
            ring.append(k)
        else:
            pos = self._pos
            keys.discard(ring[pos])
            ring[pos] = k
            self._pos = (pos + 1) % self.capacity
        return True

    def state(self) -> np.ndarray:
        """The keys, oldest first, as ``uint64``: plain data for a checkpoint."""
        ring, pos = self._ring, self._pos
        return np.array(ring[pos:] + ring[:pos], dtype=np.uint64)

    def load(self, ids: Sequence[int | str] | np.ndarray) -> None:
        """Restore what ``state()`` returned; id strings (an older checkpoint) are keyed."""
        self._keys, self._ring, self._pos = set(), [], 0
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        for v in values[-self.capacity:] if self.capacity else []:
            self._add(key(v) if isinstance(v, str) else int(v))


def key(pid: str) -> int:
    """An id's 64-bit key (a lone surrogate, which no UTF-8 holds, is keyed too)."""
    return int.from_bytes(blake2b(pid.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little")


class ModelMonitor:
    def __init__(self, settings: Settings, store: ArtifactStore, redis: Any) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.loop: StreamLoop | None = None
        t = settings.topics
        self.labeled_topic = t.name(topics.PREDICTIONS_LABELED)
        self.metrics_topic = t.name(topics.MONITOR_METRICS)
        self.alerts_topic = t.name(topics.MONITOR_ALERTS)
        self.checkpoint_key = f"{settings.topic_prefix}monitor:checkpoint"
        reg = settings.schema_registry_url
        self.decoders = {
            t.predictions: EventDecoder(topics.PREDICTIONS, max_bytes=1 << 22, registry_url=reg),
            self.labeled_topic: EventDecoder(topics.PREDICTIONS_LABELED, max_bytes=1 << 22,
                                             registry_url=reg),
        }
        self.snapshot_encoder = EventEncoder(topics.MONITOR_METRICS, settings.output_format, reg)
        self.alert_encoder = EventEncoder(topics.MONITOR_ALERTS, settings.output_format, reg)
        self.budget = FalseAlarmBudget(settings.monitor_arl0_windows)
        self.versions: dict[VersionKey, VersionMonitor] = {}
        self.missing_cards: set[tuple[str, str]] = set()
        capacity = settings.monitor_dedup_ids
        self.seen = {"predictions": RecentIds(capacity), "labeled": RecentIds(capacity)}
        self._streams = {
            topic: (stream, self.decoders[topic].decode, self.seen[stream].add)
            for topic, stream in ((t.predictions, "predictions"),
                                  (self.labeled_topic, "labeled"))
        }
        self.alerts = AlertBook()
        self.positions: dict[tuple[str, int], int] = {}
        self._evaluated = self._checkpointed = time.monotonic()
        self.restore()

    # -- records -------------------------------------------------------------------------

    def __call__(self, batch: list[Message]) -> list[Output]:
        # Per record only what must be: decode, dedup, group by version. Counters and every
        # window take the batch at once.
        groups: dict[str, dict[VersionKey, list[dict[str, Any]]]] = {
            "predictions": defaultdict(list), "labeled": defaultdict(list)}
        tally: Counter[tuple[str, str]] = Counter()
        streams = self._streams
        for msg in batch:
            stream, decode, add = streams[msg.topic() or ""]
            try:
                rec = decode(msg.value())
                CHECKS[stream](rec)  # a hostile record must not fail the batch's windows
                key = (rec["model"], rec["model_version"], rec["role"])
                pid = rec["prediction_id"]
            except (DecodeError, KeyError, TypeError) as exc:
                log.warning("skipping an undecodable %s record: %s", stream, exc)
                tally[stream, "undecodable"] += 1
                continue
            if add(pid):
                groups[stream][key].append(rec)
            else:
                tally[stream, "duplicate"] += 1
        for stream, by_version in groups.items():
            counted = sum(map(len, by_version.values()))
            if counted:
                tally[stream, "counted"] += counted
        for key, recs in groups["predictions"].items():
            if (vm := self.version(key)) is not None:
                vm.add_predictions(recs)
        outputs: list[Output] = []
        for key, recs in groups["labeled"].items():
            if (vm := self.version(key)) is None:
                continue
            truth = vm.truth_field
            if any(r.get(truth) is None for r in recs):
                # A labeled record without the outcome this model's task needs (no label for a
                # classifier, no value for a regressor) cannot be scored: counted, not used.
                kept = [r for r in recs if r.get(truth) is not None]
                log.warning("skipping %d labeled records of %s v%s without %s",
                            len(recs) - len(kept), key[0], key[1], truth)
                tally["labeled", "counted"] -= len(recs) - len(kept)
                tally["labeled", "undecodable"] += len(recs) - len(kept)
                if not (recs := kept):
                    continue
            signals = vm.add_labeled(recs)
            if signals:
                # Concept drift is alerted from the batch whose error raised it, not at the
                # next evaluation: its delay is counted in labeled events, not in timer ticks.
                metrics.CONCEPT_DRIFTS.labels(*key).inc(signals)
                outputs += self._publish(self._concept_alert(key, vm, int(time.time() * 1000)),
                                         key[0])
        for (stream, result), n in tally.items():
            if n:
                metrics.MONITOR_EVENTS.labels(stream, result).inc(n)
        if outputs:
            self._export_active()
        return outputs

    def version(self, key: VersionKey) -> VersionMonitor | None:
        vm = self.versions.get(key)
        if vm is None:
            model, version, role = key
            if (model, version) in self.missing_cards:
                return None
            try:
                card = self.store.card(model, version)
            except ModelLoadError as exc:
                log.error("not monitoring %s v%s: %s", model, version, exc)
                self.missing_cards.add((model, version))
                return None
            s = self.settings
            vm = self.versions[key] = VersionMonitor(
                card, role, window=s.monitor_window, max_age_s=s.monitor_window_seconds,
                budget=self.budget, concept_arl0=s.monitor_concept_arl0,
                holdout_prior=s.monitor_concept_holdout_prior,
            )
        return vm

    # -- evaluation ----------------------------------------------------------------------

    def tick(self) -> list[Output]:
        """Between batches: evaluate and publish, and checkpoint, when due."""
        now = time.monotonic()
        outputs: list[Output] = []
        if now - self._evaluated >= self.settings.monitor_eval_seconds:
            self._evaluated = now
            outputs = self.evaluate(int(time.time() * 1000))
        if self.loop is not None and now - self._checkpointed >= (
            self.settings.monitor_checkpoint_seconds
        ):
            self._checkpointed = now
            self.save()
        return outputs

    def evaluate(self, now_ms: int) -> list[Output]:
        outputs: list[Output] = []
        for key, vm in self.versions.items():
            model, version, role = key
            window = (vm.first_ms or now_ms, vm.last_ms or now_ms)
            values = vm.metrics(now_ms)
            for name, value in values.items():
                metrics.MODEL_QUALITY.labels(model, version, role, name).set(value)
            drift: dict[str, float] = {}
            events: list[AlertEvent] = []
            for f in vm.drift.evaluate():
                feature = f.feature or "__score__"
                metrics.FEATURE_DRIFT.labels(model, version, role, feature, f.statistic).set(
                    f.value)
                metrics.DRIFT_THRESHOLD.labels(model, version, role, feature, f.statistic).set(
                    f.threshold)
                drift[f"{feature}.{f.statistic}"] = f.value
                rule = AlertRule(kind="drift", warning=f.threshold, margin=0.2 * f.threshold,
                                 fire_after=2, resolve_after=2)
                events += self.alerts.evaluate(
                    AlertKey(model, version, role, f.statistic, feature), f.value, rule,
                    now_ms, window)
            events += self._quality_alerts(key, vm, values, now_ms, window)
            outputs.append(Output(self.metrics_topic, self.snapshot_encoder.encode({
                "model": model, "model_version": version, "role": role,
                "window_start": window[0], "window_end": window[1],
                "predictions": vm.predictions, "labeled": vm.labeled,
                "metrics": values, "feature_drift": drift, "emitted_at": now_ms,
            }), model))
            outputs += self._publish(events, model)
        self._export_active()
        return outputs

    def _publish(self, events: list[AlertEvent], model: str) -> list[Output]:
        outputs = []
        for e in events:
            metrics.ALERT_EVENTS.labels(e.kind, e.severity, e.state).inc()
            log.warning("alert %s: %s", e.state, e.message)
            outputs.append(Output(self.alerts_topic, self.alert_encoder.encode(e.to_record()),
                                  model))
        return outputs

    def _quality_alerts(
        self, key: VersionKey, vm: VersionMonitor, values: dict[str, float], now_ms: int,
        window: tuple[int, int],
    ) -> list[AlertEvent]:
        model, version, role = key
        s = self.settings
        events: list[AlertEvent] = []
        trained = vm.card.metrics.get("accuracy")
        if trained is not None:
            rule = AlertRule(kind="performance", direction="below",
                             warning=trained - s.monitor_accuracy_warning_drop,
                             critical=trained - s.monitor_accuracy_critical_drop,
                             margin=0.01, fire_after=2, resolve_after=2)
            if (values.get("n") or 0) >= s.monitor_min_labeled:
                events += self.alerts.evaluate(AlertKey(model, version, role, "accuracy"),
                                               values.get("accuracy"), rule, now_ms, window)
            if vm.drift.score_window.full:
                events += self.alerts.evaluate(
                    AlertKey(model, version, role, "expected_accuracy"),
                    values.get("expected_accuracy"), rule, now_ms, window)
        return events + self._concept_alert(key, vm, now_ms)

    def _concept_alert(
        self, key: VersionKey, vm: VersionMonitor, now_ms: int
    ) -> list[AlertEvent]:
        """The concept-drift episode: the signals since the last look (it fires on the first,
        resolves after six evaluations without one)."""
        window = (vm.first_ms or now_ms, vm.last_ms or now_ms)
        value = float(vm.concept_drifts - vm.reported_drifts)
        vm.reported_drifts = vm.concept_drifts
        return self.alerts.evaluate(AlertKey(*key, "concept_drift"), value, CONCEPT_RULE,
                                    now_ms, window)

    def _export_active(self) -> None:
        metrics.ALERTS_FIRING.clear()
        for key, (kind, severity) in self.alerts.firing().items():
            metrics.ALERTS_FIRING.labels(key.model, key.version, key.role, kind or "-",
                                         key.metric, key.feature or "", severity).set(1)

    # -- checkpoints ---------------------------------------------------------------------

    def save(self) -> None:
        assert self.loop is not None
        positions = self.loop.positions()
        state = {
            "positions": [[t, p, o] for (t, p), o in positions.items()],
            "versions": [[list(k), vm.state()] for k, vm in self.versions.items()],
            "seen": {name: ids.state() for name, ids in self.seen.items()},
            "alerts": self.alerts.state(),
        }
        encoded = checkpoint.encode(state)
        retrying(lambda: self.redis.set(self.checkpoint_key, encoded))  # rides out a restart
        self.loop.commit_positions()  # after the state: a crash in between replays, never skips

    def restore(self) -> None:
        raw = retrying(lambda: self.redis.get(self.checkpoint_key))
        if not raw:
            return
        state = checkpoint.decode(raw)
        self.positions = {(t, int(p)): int(o) for t, p, o in state["positions"]}
        for key, vstate in state["versions"]:
            vm = self.version((key[0], key[1], key[2]))
            if vm is not None:
                vm.load(vstate)
        for name, ids in state["seen"].items():
            self.seen[name].load(ids)
        self.alerts.load(state["alerts"])
        log.info("restored the checkpoint: %d versions, positions %s",
                 len(self.versions), orjson.dumps(state["positions"]).decode())

    def start_offset(self, topic: str, partition: int) -> int | None:
        return self.positions.get((topic, partition))


def build(settings: Settings) -> StreamLoop:
    monitor = ModelMonitor(settings, ArtifactStore(settings.artifacts), redis_client(settings))
    loop = StreamLoop(
        settings,
        service=SERVICE,
        group_id=f"{settings.topic_prefix}modelstream-monitor",
        topics=[settings.topics.predictions, monitor.labeled_topic],
        handler=monitor,
        on_idle=monitor.tick,
        on_close=monitor.save,
        commit_each_batch=False,
        start_offsets=monitor.start_offset,
        consumer_overrides=kafka.THROUGHPUT_CONSUMER,
        producer_overrides=kafka.THROUGHPUT_PRODUCER,
    )
    monitor.loop = loop
    return loop
