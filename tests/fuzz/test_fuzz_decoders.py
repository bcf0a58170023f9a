"""Every decoder and validator against hostile bytes: each either returns a well-formed event
or raises :class:`DecodeError` with a documented reason code — nothing else escapes, and what
is accepted can be published again (JSON and Avro)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.validate import FeatureValidator, validate_envelope
from services.join.service import validate_outcome
from services.models import AGRAWAL_FEATURES
from services.runtime.errors import DecodeError
from services.runtime.records import BAD_LABELED, BAD_PREDICTION, check_labeled, check_prediction
from services.runtime.schemas import schema_json
from services.runtime.serde import DECODE_REASONS, EventDecoder, EventEncoder
from tests.fuzz.hostile import (
    FUZZ,
    SANE,
    TOPIC_FIELDS,
    avro_with_hostile_values,
    confluent_frames,
    event_shaped_json,
    hostile_payloads,
)
from tests.unit.test_serde import FakeRegistry, _server, registry, registry_url  # noqa: F401

MAX = 65536
INGEST_REASONS = {
    "missing_event_id", "missing_entity_id", "bad_event_time", "unknown_model", "bad_features",
    "unknown_feature", "wrong_type", "non_finite", "out_of_range", "unknown_category",
}
OUTCOME_REASONS = {"missing_event_id", "missing_outcome", "wrong_type", "non_finite",
                   "bad_outcome_time"}
PREDICTION = b"{" + b",".join(
    b'"%s":%s' % (k.encode(), SANE[k].encode()) for k in TOPIC_FIELDS["predictions"]) + b"}"
TOPICS = ["features", "features.valid", "outcomes", "predictions", "predictions.labeled"]
DECODERS = {t: EventDecoder(t, max_bytes=MAX) for t in TOPICS}
VALIDATOR = FeatureValidator("agrawal", AGRAWAL_FEATURES)
VALID_OUT = {fmt: EventEncoder("features.valid", fmt) for fmt in ("json", "avro")}
LABELED_OUT = {fmt: EventEncoder("predictions.labeled", fmt) for fmt in ("json", "avro")}


def decoded_or_reason(decoder: EventDecoder, payload: bytes) -> dict[str, Any] | str:
    try:
        event = decoder.decode(payload)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS, exc
        assert isinstance(exc.detail, str)
        return exc.reason
    assert type(event) is dict
    return event


@pytest.mark.parametrize("topic", TOPICS)
@FUZZ
@given(data=st.data())
def test_decoders_return_an_event_or_a_reason(topic: str, data: st.DataObject) -> None:
    decoded_or_reason(DECODERS[topic], data.draw(hostile_payloads(topic)))


def ingest_verdict(payload: bytes) -> str:
    """What ingest decides for one record before the store: 'valid' or the reason."""
    event = decoded_or_reason(DECODERS["features"], payload)
    if isinstance(event, str):
        return event
    try:
        event_id, entity_id, t, model, raw = validate_envelope(
            event, default_model="agrawal", fallback_time_ms=1_763_900_000_000)
        if model != "agrawal":
            return "unknown_model"
        features = VALIDATOR.features(raw)
    except DecodeError as exc:
        assert exc.reason in INGEST_REASONS, exc
        return exc.reason
    record = {"event_id": event_id, "entity_id": entity_id, "event_time": t, "model": model,
              "features": features, "ingested_at": t}
    for encoder in VALID_OUT.values():
        encoder.encode(record)  # an accepted event can always be published
    return "valid"


@FUZZ
@given(payload=st.one_of(hostile_payloads("features"), event_shaped_json("features"),
                         avro_with_hostile_values("features")))
def test_ingest_validation_accepts_or_gives_a_reason(payload: bytes) -> None:
    ingest_verdict(payload)


@FUZZ
@given(payload=st.one_of(hostile_payloads("outcomes"), event_shaped_json("outcomes"),
                         avro_with_hostile_values("outcomes")))
def test_outcome_validation_accepts_or_gives_a_reason(payload: bytes) -> None:
    event = decoded_or_reason(DECODERS["outcomes"], payload)
    if isinstance(event, str):
        return
    try:
        outcome = validate_outcome(event, 1_763_900_000_000)
    except DecodeError as exc:
        assert exc.reason in OUTCOME_REASONS, exc
        return
    orjson.dumps(outcome)  # join stores it as JSON in Redis
    labeled = {"prediction_id": "p", "event_id": "e", "entity_id": "c", "model": "m",
               "model_version": "1", "role": "champion", "served": True, "label": "1",
               "score": 0.5, "scores": {}, "features": {}, "event_time": 1_763_900_000_000,
               "predicted_at": 1_763_900_000_000, "latency_ms": 1.0,
               "outcome_label": outcome["label"], "outcome_value": outcome["value"],
               "outcome_time": outcome["outcome_time"],
               "label_delay_ms": max(outcome["outcome_time"] - 1_763_900_000_000, 0),
               "correct": None, "labeled_at": 1_763_900_000_000}
    for encoder in LABELED_OUT.values():
        encoder.encode(labeled)


@pytest.mark.parametrize("topic", ["predictions", "predictions.labeled"])
@FUZZ
@given(data=st.data())
def test_prediction_records_pass_their_check_or_give_a_reason(
    topic: str, data: st.DataObject
) -> None:
    payload = data.draw(st.one_of(hostile_payloads(topic), event_shaped_json(topic),
                                  avro_with_hostile_values(topic)))
    rec = decoded_or_reason(DECODERS[topic], payload)
    if isinstance(rec, str):
        return
    check = check_labeled if topic == "predictions.labeled" else check_prediction
    try:
        check(rec)
    except DecodeError as exc:
        assert exc.reason in (BAD_PREDICTION, BAD_LABELED)
        return
    orjson.dumps(rec)  # join keeps it in Redis as JSON
    hash((rec["model"], rec["model_version"], rec["role"], rec["prediction_id"]))


_REGISTRY_DECODERS: dict[str, EventDecoder] = {}


@FUZZ
@given(payload=confluent_frames())
def test_schema_id_confusion_with_a_registry(
    registry: FakeRegistry, registry_url: str, payload: bytes  # noqa: F811
) -> None:
    # Ids 1..3 exist, but hold other topics' schemas (and one that is not Avro at all).
    registry.add(schema_json("outcomes"))
    registry.add(schema_json("features"))
    registry.add('syntax = "proto3"; message M {}', "PROTOBUF")
    decoder = _REGISTRY_DECODERS.get(registry_url)
    if decoder is None:  # one client per registry: building one costs ~50 ms
        decoder = _REGISTRY_DECODERS[registry_url] = EventDecoder(
            "features", max_bytes=MAX, registry_url=registry_url,
            registry_conf={"max.retries": 0})
    result = decoded_or_reason(decoder, payload)
    if isinstance(result, dict):
        # Only the features schema (id 2) can yield an event.
        assert payload[1:5] == (2).to_bytes(4, "big")


@pytest.mark.parametrize("t", [2**63, 2**64 - 1, 10_000_000_000_001])
def test_outcome_time_past_year_2286_is_rejected(t: int) -> None:
    # Found by the fuzzer: accepted, then the labeled record broke the Avro encoder (a crash).
    raw = DECODERS["outcomes"].decode(b'{"event_id":"e","label":"1","outcome_time":%d}' % t)
    with pytest.raises(DecodeError) as info:
        validate_outcome(raw, 1_763_900_000_000)
    assert info.value.reason == "bad_outcome_time"


@pytest.mark.parametrize("spoil", [
    {"model": ["agrawal"]}, {"prediction_id": {"a": 1}}, {"predicted_at": "soon"},
    {"features": [1, 2]}, {"features": {"age": [41]}}, {"score": "high"}, {"label": 1},
    {"event_time": True}, {"entity_id": ""},
])
def test_prediction_check_names_the_bad_field(spoil: dict[str, Any]) -> None:
    rec = {**orjson.loads(PREDICTION), **spoil}
    with pytest.raises(DecodeError) as info:
        check_prediction(rec)
    assert info.value.reason == BAD_PREDICTION
    assert next(iter(spoil)) in info.value.detail
