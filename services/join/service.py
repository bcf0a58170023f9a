"""join: labels predictions with the outcomes that arrive later (or earlier), on event id.

Consumes ``predictions`` and ``outcomes``; publishes ``predictions.labeled`` — each prediction
(every version and role) with its outcome and the label delay — and dead-letters malformed
outcomes to ``outcomes.dlq``. The state lives in Redis (see :mod:`.state`), so replicas share
it and a restart loses nothing. Predictions that expire unlabeled and outcomes that never find a
prediction are counted when their join window closes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from confluent_kafka import Message

from ..runtime import metrics, topics
from ..runtime.deadletter import DeadLetters
from ..runtime.errors import DecodeError, ValidationError
from ..runtime.loop import Output, StreamLoop
from ..runtime.records import check_prediction
from ..runtime.redis_batch import ScriptCall
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.service import redis_client
from ..runtime.settings import Settings
from .state import (
    CORRECTION,
    DUPLICATE,
    FIRST,
    IGNORED,
    LABELED,
    OUTCOME_REPLAY,
    REPLAYED,
    WAITING,
    JoinState,
    OutcomeResult,
    PredictionResult,
    split_outcome,
)

__all__ = ["OutcomeJoiner", "build", "validate_outcome"]

SERVICE = "join"
_PRED_RESULTS = {WAITING: "stored", LABELED: "labeled", IGNORED: "repeat_ignored",
                 REPLAYED: "replayed"}
_OUT_RESULTS = {FIRST: "first", DUPLICATE: "duplicate_ignored", CORRECTION: "correction",
                OUTCOME_REPLAY: "replayed"}


# Epoch milliseconds between 2001 and 2286, as for feature events.
MIN_TIME_MS, MAX_TIME_MS = 1_000_000_000_000, 10_000_000_000_000


def validate_outcome(raw: dict[str, Any], fallback_time_ms: int) -> dict[str, Any]:
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValidationError("missing_event_id", f"event_id must be a non-empty string: {raw}")
    label, value = raw.get("label"), raw.get("value")
    if label is None and value is None:
        raise ValidationError("missing_outcome", "an outcome needs a label or a value")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise ValidationError("wrong_type", f"label must be a string, got {label!r}")
        label = str(label)
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("wrong_type", f"value must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValidationError("non_finite", f"value {value} is not finite")
        value = float(value)
    t = raw.get("outcome_time", fallback_time_ms)
    # Bounded above too: a time past 2286 is a mistake, and past 2**63 it breaks Avro output.
    if isinstance(t, bool) or not isinstance(t, int) or not MIN_TIME_MS <= t <= MAX_TIME_MS:
        raise ValidationError("bad_outcome_time", f"outcome_time must be epoch ms, got {t!r}")
    return {"event_id": event_id, "label": label, "value": value, "outcome_time": t}


class OutcomeJoiner:
    """The batch handler: every record becomes one atomic script call, all in one round trip."""

    def __init__(self, settings: Settings, state: JoinState) -> None:
        self.state = state
        self.predictions_topic = settings.topics.predictions
        self.out_topic = settings.topics.name(topics.PREDICTIONS_LABELED)
        self.window_ms = settings.join_window_seconds * 1000
        self.windows_ms = {m: s * 1000 for m, s in settings.join_windows.items()}
        self.sweep_every = settings.join_sweep_seconds
        self._swept = 0.0
        reg = settings.schema_registry_url
        self.prediction_decoder = EventDecoder(topics.PREDICTIONS, max_bytes=1 << 22,
                                               registry_url=reg)
        self.outcome_decoder = EventDecoder(topics.OUTCOMES, max_bytes=settings.max_event_bytes,
                                            registry_url=reg)
        self.encoder = EventEncoder(topics.PREDICTIONS_LABELED, settings.output_format, reg)
        self.dead_letters = DeadLetters(settings, SERVICE, topics.OUTCOMES_DLQ)

    def __call__(self, batch: list[Message]) -> list[Output]:
        now_ms = int(time.time() * 1000)
        outputs: list[Output] = []
        calls: list[ScriptCall] = []
        sources: list[Any] = []
        for msg in batch:
            source = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            try:
                if msg.topic() == self.predictions_topic:
                    pred = self.prediction_decoder.decode(msg.value())
                    check_prediction(pred)  # stored in Redis only if its outcome can label it
                    window = self.windows_ms.get(pred["model"], self.window_ms)
                    calls.append(self.state.prediction_call(
                        pred["event_id"], pred["prediction_id"], orjson.dumps(pred), window,
                        source, now_ms))
                    sources.append(pred)
                else:
                    ts_type, ts = msg.timestamp()
                    outcome = validate_outcome(
                        self.outcome_decoder.decode(msg.value()), ts if ts_type else now_ms
                    )
                    calls.append(self.state.outcome_call(
                        outcome["event_id"], outcome["outcome_time"], orjson.dumps(outcome),
                        self.window_ms, source, now_ms))
                    sources.append(None)
            except DecodeError as exc:
                outputs.append(self.dead_letters.output(msg, exc.reason, exc.detail, now_ms))
            except KeyError as exc:  # a prediction record without its required fields
                outputs.append(self.dead_letters.output(
                    msg, "bad_prediction", f"missing field {exc}", now_ms))
        for pred, result in zip(sources, self.state.run(calls), strict=True):
            if isinstance(result, PredictionResult):
                metrics.JOIN_PREDICTIONS.labels(_PRED_RESULTS[result.status]).inc()
                if result.outcome is not None:
                    outputs.append(self._labeled(pred, result.outcome, now_ms))
            else:
                self._count_outcome(result)
                if result.outcome is not None:
                    for body in result.predictions:
                        outputs.append(self._labeled(orjson.loads(body), result.outcome, now_ms))
        return outputs

    def _count_outcome(self, result: OutcomeResult) -> None:
        metrics.JOIN_OUTCOMES.labels(_OUT_RESULTS[result.status]).inc()

    def _labeled(self, pred: dict[str, Any], stored_outcome: bytes, now_ms: int) -> Output:
        outcome_time, body = split_outcome(stored_outcome)
        outcome = orjson.loads(body)
        label = outcome["label"]
        record = {
            **pred,
            "outcome_label": label,
            "outcome_value": outcome["value"],
            "outcome_time": outcome_time,
            "label_delay_ms": max(outcome_time - pred["predicted_at"], 0),
            "correct": (pred["label"] == label) if label is not None else None,
            "labeled_at": now_ms,
        }
        metrics.JOIN_LABELED.labels(pred["model"], pred["model_version"], pred["role"]).inc()
        metrics.LABEL_DELAY.labels(pred["model"]).observe(record["label_delay_ms"] / 1000)
        return Output(self.out_topic, self.encoder.encode(record), pred["entity_id"])

    def sweep(self) -> None:
        """Close the join windows that are due: count what expired, free the state."""
        if time.monotonic() - self._swept < self.sweep_every:
            return
        self._swept = time.monotonic()
        while True:
            result = self.state.sweep(int(time.time() * 1000))
            metrics.JOIN_EXPIRED.inc(result.expired_predictions)
            metrics.JOIN_UNMATCHED.inc(result.unmatched_outcomes)
            metrics.JOIN_PENDING.set(result.pending)
            if result.events < 1000:
                break


def build(settings: Settings) -> StreamLoop:
    state = JoinState(redis_client(settings), prefix=settings.topic_prefix,
                      grace_seconds=settings.join_grace_seconds)
    joiner = OutcomeJoiner(settings, state)
    return StreamLoop(
        settings,
        service=SERVICE,
        group_id=f"{settings.topic_prefix}modelstream-join",
        topics=[settings.topics.predictions, settings.topics.outcomes],
        handler=joiner,
        on_idle=joiner.sweep,
    )
