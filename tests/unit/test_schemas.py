"""The Avro contracts in ``schemas/``: one per topic, documented, evolvable, and usable."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate

from services.runtime import schemas as schemas_module
from services.runtime.errors import ConfigError
from services.runtime.schemas import raw_schema, schema_dir, schema_for, schema_json
from services.runtime.topics import ALL_TOPICS

FEATURES: dict[str, Any] = {"salary": 52000.0, "age": 41, "car": "sedan", "elevel": None}

PREDICTION: dict[str, Any] = {
    "prediction_id": "p-9b1c",
    "event_id": "e-1",
    "entity_id": "c-42",
    "model": "agrawal",
    "model_version": "3",
    "role": "champion",
    "served": True,
    "label": "1",
    "score": 0.87,
    "scores": {"0": 0.13, "1": 0.87},
    "features": FEATURES,
    "event_time": 1763900000000,
    "predicted_at": 1763900000012,
    "latency_ms": 1.5,
}

DEAD_LETTER: dict[str, Any] = {
    "topic": "features",
    "partition": 3,
    "offset": 1234,
    "reason": "not_json",
    "detail": "unexpected character",
    "service": "ingest",
    "failed_at": 1763900000000,
    "payload": b"{oops",
    "payload_size": 5,
    "payload_truncated": False,
    "payload_text": "{oops",
}

SAMPLES: dict[str, dict[str, Any]] = {
    "features": {
        "event_id": "e-1",
        "entity_id": "c-42",
        "event_time": 1763900000000,
        "model": "agrawal",
        "features": FEATURES,
        "ingested_at": None,
    },
    "features.valid": {
        "event_id": "e-1",
        "entity_id": "c-42",
        "event_time": 1763900000000,
        "model": None,
        "features": FEATURES,
        "ingested_at": 1763900000005,
    },
    "features.dlq": DEAD_LETTER,
    "outcomes.dlq": {**DEAD_LETTER, "topic": "outcomes", "service": "join", "payload": None,
                     "payload_size": 0, "payload_text": None, "reason": "empty"},
    "predictions": PREDICTION,
    "outcomes": {"event_id": "e-1", "label": "1", "value": None, "outcome_time": 1763900060000},
    "predictions.labeled": {
        **PREDICTION,
        "outcome_label": "1",
        "outcome_value": None,
        "outcome_time": 1763900060000,
        "label_delay_ms": 60000,
        "correct": True,
        "labeled_at": 1763900060003,
    },
    "model.events": {
        "model": "agrawal",
        "version": "3",
        "transition": "canary",
        "time": 1763900000000,
        "actor": "retrain",
        "reason": "accuracy recovered after retraining",
        "artifact_uri": "file:///var/artifacts/agrawal/3/model.onnx",
        "sha256": "ab" * 32,
        "card": json.dumps({"task": "binary"}),
        "metrics": {"accuracy": 0.93},
        "lineage": json.dumps({"parent_version": "2"}),
        "traffic_fraction": 0.1,
    },
    "monitor.metrics": {
        "model": "agrawal",
        "model_version": "3",
        "role": "champion",
        "window_start": 1763900000000,
        "window_end": 1763900060000,
        "predictions": 6000,
        "labeled": 4200,
        "metrics": {"accuracy": 0.91, "latency_ms_p99": 4.2},
        "feature_drift": {"salary": 0.02},
        "emitted_at": 1763900060001,
    },
    "monitor.alerts": {
        "alert_id": "a-drift-salary-3-1763900000000",
        "model": "agrawal",
        "model_version": "3",
        "role": "champion",
        "kind": "drift",
        "metric": "psi",
        "feature": "salary",
        "value": 0.31,
        "threshold": 0.2,
        "severity": "warning",
        "state": "firing",
        "message": "salary drifted: PSI 0.31 > 0.2",
        "window_start": 1763900000000,
        "window_end": 1763900060000,
        "raised_at": 1763900060002,
    },
    "retrain.requests": {
        "request_id": "r-1",
        "model": "agrawal",
        "requested_by": "alice",
        "requested_at": 1763900000000,
        "reason": "new season",
        "alert_id": None,
        "base_version": None,
        "window_start": None,
        "window_end": None,
        "params": {"n_estimators": "200"},
    },
    "retrain.jobs": {
        "job_id": "j-1",
        "model": "agrawal",
        "status": "succeeded",
        "updated_at": 1763900300000,
        "request_id": "r-1",
        "base_version": "3",
        "new_version": "4",
        "window_start": 1763800000000,
        "window_end": 1763900000000,
        "artifact_uri": "file:///var/artifacts/agrawal/4/model.onnx",
        "metrics": {"accuracy": 0.94},
        "error": None,
        "step": "promoted",
        "trigger": "alert:a-1",
        "reason": "live accuracy 0.94 vs champion 0.81 on 500 events",
        "started_at": 1763900000000,
    },
}


def _branches(avro_type: Any) -> list[Any]:
    return avro_type if isinstance(avro_type, list) else [avro_type]


def _default_matches(avro_type: Any, default: Any) -> bool:
    first = _branches(avro_type)[0]
    kind = first["type"] if isinstance(first, dict) else first
    return {
        "null": default is None,
        "boolean": isinstance(default, bool),
        "int": isinstance(default, int) and not isinstance(default, bool),
        "long": isinstance(default, int) and not isinstance(default, bool),
        "double": isinstance(default, float | int) and not isinstance(default, bool),
        "string": isinstance(default, str),
        "map": isinstance(default, dict),
        "array": isinstance(default, list),
    }[kind]


def test_every_topic_has_a_schema_and_a_sample() -> None:
    files = {path.name.removesuffix(".avsc") for path in schema_dir().glob("*.avsc")}
    assert files == set(ALL_TOPICS) == set(SAMPLES)


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_schema_is_documented_and_evolvable(topic: str) -> None:
    schema = raw_schema(topic)
    assert schema["type"] == "record"
    assert schema["namespace"] == "io.modelstream"
    assert schema["doc"]
    for field in schema["fields"]:
        assert field.get("doc"), f"{topic}.{field['name']} has no doc"
        if "null" in _branches(field["type"]):
            assert "default" in field, f"optional {topic}.{field['name']} has no default"
        if "default" in field:
            assert _default_matches(field["type"], field["default"]), (
                f"{topic}.{field['name']}: default must match the first union branch"
            )


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_first_field_is_a_required_string(topic: str) -> None:
    """Serde tells plain Avro from Confluent framing (0x00) and JSON by the first byte: a
    non-empty leading string never encodes to 0x00, ``{`` or ``[``."""
    assert raw_schema(topic)["fields"][0]["type"] == "string"


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_sample_validates_and_round_trips(topic: str) -> None:
    schema = schema_for(topic)
    sample = SAMPLES[topic]
    assert validate(sample, schema, raise_errors=True)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, sample)
    assert fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), schema) == sample


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_fields_with_defaults_may_be_left_out(topic: str) -> None:
    """An old producer that does not know the defaulted fields stays readable."""
    full = raw_schema(topic)
    old = {**full, "fields": [f for f in full["fields"] if "default" not in f]}
    sample = {k: v for k, v in SAMPLES[topic].items() if k in {f["name"] for f in old["fields"]}}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), sample)
    read = fastavro.schemaless_reader(
        io.BytesIO(buf.getvalue()), fastavro.parse_schema(old), schema_for(topic)
    )
    defaults = {f["name"]: f["default"] for f in full["fields"] if "default" in f}
    assert read == {**sample, **defaults}


def test_integer_features_stay_integers() -> None:
    """``long`` precedes ``double`` in the feature union: with double first, fastavro would
    write every int as a double and Avro would not read back what JSON does."""
    values = raw_schema("features")["fields"][4]["type"]["values"]
    assert values == ["null", "long", "double", "string"]


def test_shared_schemas_are_identical() -> None:
    assert raw_schema("features") == raw_schema("features.valid")
    assert raw_schema("features.dlq") == raw_schema("outcomes.dlq")


def test_schema_json_is_compact_and_keeps_defaults() -> None:
    text = schema_json("predictions")
    assert "\n" not in text
    assert json.loads(text) == raw_schema("predictions")
    assert '"default":{}' in text
    schema_for("predictions")  # parsing must not alter the text registered
    assert schema_json("predictions") == text


def test_lookups_are_cached() -> None:
    assert schema_for("features") is schema_for("features")


def test_unknown_topic() -> None:
    with pytest.raises(ConfigError, match="no Avro schema"):
        schema_for("nope")


def test_installed_copy_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel ships ``schemas/`` as ``services/_schemas`` (see pyproject's force-include)."""
    installed = tmp_path / "services" / "_schemas"
    installed.mkdir(parents=True)
    monkeypatch.setattr(schemas_module, "_PACKAGE_ROOT", tmp_path / "services")
    schema_dir.cache_clear()
    try:
        assert schema_dir() == installed
    finally:
        schema_dir.cache_clear()
