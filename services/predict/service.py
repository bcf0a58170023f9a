"""predict: scores every complete feature vector on ``features.valid`` and publishes one
prediction per serving version on ``predictions``.

Which versions serve comes from the registry (``model.events``, followed live, see
:mod:`.serving`): the champion serves every entity but the canary's share, the canary serves its
share (``served: true`` for both), and each shadow scores every event (``served: false``). The
versions scoring a record are those in force at its Kafka timestamp minus ``SWITCH_DELAY_MS``,
so a record replayed after a promotion or a rollback is scored exactly as the first time. A
model the registry does not know is served from the artifact store as before: the pinned
``MODELSTREAM_MODEL_VERSION`` or the newest version, followed as new ones appear.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from confluent_kafka import Message

from ..models import ArtifactStore, OnnxModel
from ..registry import SWITCH_DELAY_MS, ModelEvent, entity_bucket
from ..runtime import metrics, topics
from ..runtime.deadletter import DeadLetters
from ..runtime.errors import DecodeError, ModelLoadError
from ..runtime.loop import Output, StreamLoop
from ..runtime.records import NOT_SCORABLE, check_scorable
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.settings import Settings
from .scorer import VersionScorer
from .serving import ModelServing, Period, RegistryWatch

__all__ = ["PredictLoop", "Predictor", "build"]

SERVICE = "predict"
log = logging.getLogger(__name__)

_REFRESH_SECONDS = 10.0


class Predictor:
    """The batch handler: decode → group by model → one ONNX run per serving version → publish."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.out_topic = settings.topics.predictions
        self.decoder = EventDecoder(
            topics.FEATURES_VALID, max_bytes=settings.max_event_bytes * 4,
            registry_url=settings.schema_registry_url,
        )
        self.encoder = EventEncoder(
            topics.PREDICTIONS, settings.output_format, settings.schema_registry_url
        )
        self.event_encoder = EventEncoder(
            topics.MODEL_EVENTS, settings.output_format, settings.schema_registry_url,
            topic=settings.topics.model_events,
        )
        self.dead_letters = DeadLetters(settings, SERVICE, topics.FEATURES_DLQ)
        self.watch = RegistryWatch(settings, store)
        # Models the registry does not know, served straight from the store.
        self.legacy: dict[str, ModelServing] = {}
        self._refreshed = time.monotonic()
        default = settings.default_model
        if default not in self.watch.plan:
            if self.watch.knows(default):
                # The configured model must serve: a broken champion is an error, not a fallback.
                raise ModelLoadError(
                    f"{default}: the registry names no champion that loads; see the log above"
                )
            self.legacy[default] = ModelServing(self._load(default, settings.model_version))

    def close(self) -> None:
        self.watch.close()

    def _load(self, model: str, version: str | None) -> VersionScorer:
        loaded = OnnxModel.load(self.store, model, version, threads=self.settings.ort_threads)
        log.info("serving %s v%s as champion (from the artifact store)", model, loaded.version)
        metrics.SERVING_VERSIONS.labels(model, loaded.version, "champion").set(1)
        return VersionScorer(loaded)

    def serving(self, model: str, at_ms: int, periods: dict[str, list[Period]]) -> ModelServing:
        """The versions that serve ``model`` for a record of time ``at_ms``; ``periods`` keeps
        the periods this batch has looked up."""
        known = periods.get(model)
        if known is None:
            latest = self.watch.latest(model)
            if latest is None:
                return self.legacy.get(model) or self._legacy(model)
            known = periods[model] = [latest]
        found = next((p for p in known if p[0] <= at_ms and (p[1] is None or at_ms < p[1])), None)
        if found is None:
            found = self.watch.serving_at(model, at_ms)
            known.append(found)
        serving = found[2]
        if serving is None:
            raise DecodeError("model_unavailable", f"{model}: no champion of the registry loads")
        return serving

    def _legacy(self, model: str) -> ModelServing:
        if self.watch.knows(model):
            raise DecodeError("model_unavailable", f"{model}: no champion in the registry")
        try:
            found = self.legacy[model] = ModelServing(self._load(model, None))
        except ModelLoadError as exc:
            raise DecodeError("model_unavailable", str(exc)) from exc
        return found

    def on_idle(self) -> list[Output]:
        """Between batches: read the registry, publish challenger rejections, follow the store."""
        outputs = [self._event_output(e) for e in self.watch.poll()]
        if time.monotonic() - self._refreshed >= _REFRESH_SECONDS:
            self._refreshed = time.monotonic()
            self._refresh_legacy()
        return outputs

    def _refresh_legacy(self) -> None:
        if self.settings.model_version:
            return
        for model, current in list(self.legacy.items()):
            if self.watch.knows(model):
                continue  # the registry decides now; a registered version alone never serves
            latest = self.store.latest(model)
            if latest and latest != current.champion.version:
                try:
                    self.legacy[model] = ModelServing(self._load(model, latest))
                except ModelLoadError as exc:
                    log.error("keeping %s v%s: v%s failed to load: %s",
                              model, current.champion.version, latest, exc)

    def __call__(self, batch: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        groups: dict[int, tuple[str, ModelServing, list[dict[str, Any]]]] = {}
        periods: dict[str, list[Period]] = {}
        now_ms = int(time.time() * 1000)
        # A record is served by the versions in force at its timestamp (less the switch delay),
        # whenever it is processed: a replay after a champion change is scored as the first time.
        stamps = [_stamp(msg, now_ms) - SWITCH_DELAY_MS for msg in batch]
        self.watch.ensure_known(max(stamps))
        for msg, at in zip(batch, stamps, strict=True):
            try:
                event = self.decoder.decode(msg.value())
                model = event.get("model") or self.settings.default_model
                if type(model) is not str:
                    raise DecodeError(NOT_SCORABLE, f"model must be a string, got {model!r:.60}")
                # An unknown model is this event's problem, not the batch's.
                serving = self.serving(model, at, periods)
                champion = serving.champion
                check_scorable(event, champion.names, champion.codes)
                group = groups.get(id(serving))
                if group is None:
                    group = groups[id(serving)] = (model, serving, [])
                group[2].append(event)
            except DecodeError as exc:
                outputs.append(self.dead_letters.output(msg, exc.reason, exc.detail, now_ms))
                continue
        for model, serving, events in groups.values():
            if serving.canary is None and not serving.shadows:
                self._emit(serving.champion, events, outputs)
            else:
                self._score_with_challengers(model, serving, events, outputs)
        return outputs

    def _score_with_challengers(
        self, model: str, serving: ModelServing, events: list[dict[str, Any]],
        outputs: list[Output],
    ) -> None:
        champion_events = events
        canary = serving.canary
        if canary is not None:
            fraction = serving.fraction
            to_canary = [entity_bucket(e["entity_id"]) < fraction for e in events]
            canary_events = [e for e, c in zip(events, to_canary, strict=True) if c]
            if canary_events:
                champion_events = [e for e, c in zip(events, to_canary, strict=True) if not c]
                if not self._emit_challenger(model, canary, canary_events, outputs):
                    champion_events = events  # the champion serves the canary's share too
        self._emit(serving.champion, champion_events, outputs)
        for shadow in serving.shadows:
            self._emit_challenger(model, shadow, events, outputs)

    def _emit_challenger(
        self, model: str, scorer: VersionScorer, events: list[dict[str, Any]],
        outputs: list[Output],
    ) -> bool:
        """Score with a challenger; on failure, isolate it and publish nothing of it."""
        staged: list[Output] = []
        try:
            self._emit(scorer, events, staged)
        except Exception as exc:  # anything a broken model can throw
            rejection = self.watch.isolate(model, scorer.version, scorer.role, exc)
            outputs.append(self._event_output(rejection))
            return False
        outputs.extend(staged)
        return True

    def _emit(
        self, scorer: VersionScorer, events: list[dict[str, Any]], outputs: list[Output]
    ) -> None:
        if not events:
            return
        predictions = scorer.score(events, int(time.time() * 1000))
        encode = self.encoder.encode
        topic = self.out_topic
        for p in predictions:
            outputs.append(Output(topic, encode(p), p["entity_id"]))
        metrics.observe_many(
            metrics.PREDICTION_LATENCY.labels(scorer.name, scorer.version),
            np.fromiter((p["latency_ms"] for p in predictions), float, len(predictions)) / 1e3,
        )
        metrics.PREDICTIONS.labels(scorer.name, scorer.version, scorer.role).inc(len(predictions))

    def _event_output(self, event: ModelEvent) -> Output:
        value = self.event_encoder.encode(event.to_record())
        return Output(self.settings.topics.model_events, value, event.key)


def _stamp(msg: Message, default: int) -> int:
    """The record's Kafka timestamp (create or log-append time; fixed for good once written)."""
    kind, ts = msg.timestamp()
    return ts if kind else default


class PredictLoop(StreamLoop):
    """The stream loop of predict; the registry follower closes with it."""

    def __init__(self, settings: Settings, predictor: Predictor) -> None:
        super().__init__(
            settings,
            service=SERVICE,
            group_id=f"{settings.topic_prefix}modelstream-predict",
            topics=[settings.topics.features_valid],
            handler=predictor,
            on_idle=predictor.on_idle,
        )
        self.predictor = predictor

    def run(self, max_idle_seconds: float | None = None) -> None:
        try:
            super().run(max_idle_seconds)
        finally:
            self.predictor.close()


def build(settings: Settings) -> PredictLoop:
    return PredictLoop(settings, Predictor(settings, ArtifactStore(settings.artifacts)))
