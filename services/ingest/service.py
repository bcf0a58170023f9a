"""ingest: every event on ``features`` is validated, merged into the online feature store and
published complete on ``features.valid`` — or sent to ``features.dlq`` with its reason.
Counts reconcile: records in = valid out + rejected."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message

from ..models import ArtifactStore
from ..runtime import topics
from ..runtime.deadletter import DeadLetters
from ..runtime.errors import DecodeError, ValidationError
from ..runtime.loop import Output, StreamLoop
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.service import redis_client
from ..runtime.settings import Settings
from .catalog import ModelCatalog
from .feature_store import FeatureStore
from .validate import validate_envelope

__all__ = ["FeatureIngestor", "build"]

SERVICE = "ingest"


class FeatureIngestor:
    """The batch handler: decode → validate → merge (one Redis round trip) → publish."""

    def __init__(self, settings: Settings, store: FeatureStore, catalog: ModelCatalog) -> None:
        self.valid_topic = settings.topics.features_valid
        self.default_model = settings.default_model
        self.store = store
        self.catalog = catalog
        self.decoder = EventDecoder(
            topics.FEATURES, max_bytes=settings.max_event_bytes,
            registry_url=settings.schema_registry_url,
        )
        self.valid_encoder = EventEncoder(
            topics.FEATURES_VALID, settings.output_format, settings.schema_registry_url
        )
        self.dead_letters = DeadLetters(settings, SERVICE, topics.FEATURES_DLQ)

    def __call__(self, batch: list[Message]) -> list[Output]:
        outputs: list[Output] = []
        pending: list[tuple[Message, str, str, int, str, dict[str, Any]]] = []
        now_ms = int(time.time() * 1000)
        for msg in batch:
            try:
                event = self.decoder.decode(msg.value())
                ts_type, ts = msg.timestamp()
                event_id, entity_id, event_time, model, raw = validate_envelope(
                    event, default_model=self.default_model,
                    fallback_time_ms=ts if ts_type else now_ms,
                )
                validator = self.catalog.validators.get(model)
                if validator is None:
                    raise ValidationError("unknown_model", f"no deployed model named {model!r}")
                features = validator.features(raw)
            except DecodeError as exc:
                outputs.append(self.dead_letters.output(msg, exc.reason, exc.detail, now_ms))
                continue
            pending.append((msg, event_id, entity_id, event_time, model, features))

        merged = self.store.merge_many(
            [(m, ent, t, f) for (_, _, ent, t, m, f) in pending], self.catalog.required
        )
        encode = self.valid_encoder.encode
        for (msg, event_id, entity_id, event_time, model, _), result in zip(
            pending, merged, strict=True
        ):
            if result.features is None:
                detail = f"required features absent from the event and the store: {result.missing}"
                outputs.append(self.dead_letters.output(msg, "missing_feature", detail, now_ms))
                continue
            record = {
                "event_id": event_id,
                "entity_id": entity_id,
                "event_time": event_time,
                "model": model,
                "features": result.features,
                "ingested_at": now_ms,
            }
            # The source record's timestamp: a replay's copy carries the same one, so predict
            # serves both with the same versions (it picks them by this timestamp).
            ts_type, ts = msg.timestamp()
            outputs.append(Output(self.valid_topic, encode(record), entity_id,
                                  ts if ts_type else 0))
        return outputs



def build(settings: Settings) -> StreamLoop:
    catalog = ModelCatalog(
        ArtifactStore(settings.artifacts), reject_unknown=settings.unknown_features == "reject"
    )
    store = FeatureStore(
        redis_client(settings), prefix=settings.topic_prefix,
        ttl_seconds=settings.feature_ttl_seconds,
    )
    return StreamLoop(
        settings,
        service=SERVICE,
        group_id=f"{settings.topic_prefix}modelstream-ingest",
        topics=[settings.topics.features],
        handler=FeatureIngestor(settings, store, catalog),
        on_idle=catalog.maybe_refresh,
    )
