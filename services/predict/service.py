"""predict: scores every complete feature vector on ``features.valid`` with the model's
champion, in micro-batches, and publishes one prediction per event on ``predictions``."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
from confluent_kafka import Message

from ..models import ArtifactStore, OnnxModel
from ..runtime import metrics, topics
from ..runtime.deadletter import DeadLetters
from ..runtime.errors import DecodeError, ModelLoadError
from ..runtime.loop import Output, StreamLoop
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.settings import Settings
from .scorer import VersionScorer

__all__ = ["Predictor", "build"]

SERVICE = "predict"
log = logging.getLogger(__name__)


class Predictor:
    """The batch handler: decode → group by model → one ONNX run per model → publish."""

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
        self.dead_letters = DeadLetters(settings, SERVICE, topics.FEATURES_DLQ)
        self.scorers: dict[str, VersionScorer] = {}
        self._refreshed = time.monotonic()
        # The configured model must load: a broken artifact is an error, never a fallback.
        self.scorers[settings.default_model] = self._load(
            settings.default_model, settings.model_version
        )

    def _load(self, model: str, version: str | None) -> VersionScorer:
        loaded = OnnxModel.load(self.store, model, version, threads=self.settings.ort_threads)
        log.info("serving %s v%s as champion", model, loaded.card.version)
        return VersionScorer(loaded)

    def scorer(self, model: str) -> VersionScorer:
        found = self.scorers.get(model)
        if found is None:
            try:
                found = self.scorers[model] = self._load(model, None)
            except ModelLoadError as exc:
                raise DecodeError("model_unavailable", str(exc)) from exc
        return found

    def refresh(self) -> None:
        """Follow the newest stored version of each model unless a version is pinned."""
        if time.monotonic() - self._refreshed < 10 or self.settings.model_version:
            return
        self._refreshed = time.monotonic()
        for model, current in list(self.scorers.items()):
            latest = self.store.latest(model)
            if latest and latest != current.version:
                try:
                    self.scorers[model] = self._load(model, latest)
                except ModelLoadError as exc:
                    log.error("keeping %s v%s: v%s failed to load: %s",
                              model, current.version, latest, exc)

    def __call__(self, batch: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        now_ms = int(time.time() * 1000)
        for msg in batch:
            try:
                event = self.decoder.decode(msg.value())
                model = event.get("model") or self.settings.default_model
                self.scorer(model)  # an unknown model is this event's problem, not the batch's
                groups[model].append(event)
            except DecodeError as exc:
                outputs.append(self.dead_letters.output(msg, exc.reason, exc.detail, now_ms))
                continue
        encode = self.encoder.encode
        topic = self.out_topic
        for model, events in groups.items():
            scorer = self.scorers[model]
            predicted_at = int(time.time() * 1000)
            predictions = scorer.score(events, predicted_at)
            for p in predictions:
                outputs.append(Output(topic, encode(p), p["entity_id"]))
            metrics.observe_many(
                metrics.PREDICTION_LATENCY.labels(model, scorer.version),
                np.fromiter((p["latency_ms"] for p in predictions), float, len(predictions)) / 1e3,
            )
            metrics.PREDICTIONS.labels(model, scorer.version, scorer.role).inc(len(predictions))
        return outputs



def build(settings: Settings) -> StreamLoop:
    predictor = Predictor(settings, ArtifactStore(settings.artifacts))
    return StreamLoop(
        settings,
        service=SERVICE,
        group_id=f"{settings.topic_prefix}modelstream-predict",
        topics=[settings.topics.features_valid],
        handler=predictor,
        on_idle=predictor.refresh,
    )
