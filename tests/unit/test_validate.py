"""The feature validator: each rule and its reason code."""

from __future__ import annotations

import math

import pytest

from services.ingest.validate import FeatureValidator, validate_envelope
from services.models.agrawal import AGRAWAL_FEATURES
from services.runtime.errors import ValidationError

V = FeatureValidator("agrawal", AGRAWAL_FEATURES)
NOW = 1_763_900_000_000


def reason(fn, *args, **kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return info.value.reason


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"salary": "52000"}, "wrong_type"),
        ({"salary": True}, "wrong_type"),
        ({"salary": [1]}, "wrong_type"),
        ({"age": 41.5}, "wrong_type"),
        ({"car": {"id": 3}}, "wrong_type"),
        ({"loan": math.nan}, "non_finite"),
        ({"loan": math.inf}, "non_finite"),
        ({"loan": -math.inf}, "non_finite"),
        ({"car": math.nan}, "non_finite"),
        ({"age": 19}, "out_of_range"),
        ({"salary": 150000.01}, "out_of_range"),
        ({"car": 21}, "unknown_category"),
        ({"elevel": "high"}, "unknown_category"),
        ({"colour": "red"}, "unknown_feature"),
    ],
)
def test_each_rule_has_its_reason(features, expected):
    assert reason(V.features, features) == expected


def test_values_are_canonicalised():
    out = V.features({"age": 41.0, "car": "3", "elevel": 2.0, "salary": 52000, "loan": None})
    assert out == {"age": 41, "car": 3, "elevel": 2, "salary": 52000.0}
    assert isinstance(out["age"], int) and isinstance(out["salary"], float)


def test_bounds_are_inclusive():
    assert V.features({"age": 20, "hyears": 30}) == {"age": 20, "hyears": 30}


def test_unknown_features_can_be_ignored():
    lenient = FeatureValidator("agrawal", AGRAWAL_FEATURES, reject_unknown=False)
    assert lenient.features({"colour": "red", "age": 30}) == {"age": 30}


def test_missing_lists_required_features_absent_after_the_merge():
    assert V.missing({"age": 30}) == [f.name for f in AGRAWAL_FEATURES if f.name != "age"]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"entity_id": "c", "features": {}}, "missing_event_id"),
        ({"event_id": "", "entity_id": "c", "features": {}}, "missing_event_id"),
        ({"event_id": 7, "entity_id": "c", "features": {}}, "missing_event_id"),
        ({"event_id": "e", "features": {}}, "missing_entity_id"),
        ({"event_id": "e", "entity_id": "x" * 300, "features": {}}, "missing_entity_id"),
        ({"event_id": "e", "entity_id": "c", "features": []}, "bad_features"),
        ({"event_id": "e", "entity_id": "c"}, "bad_features"),
        ({"event_id": "e", "entity_id": "c", "features": {}, "event_time": 1_763_900_000},
         "bad_event_time"),
        ({"event_id": "e", "entity_id": "c", "features": {}, "event_time": "today"},
         "bad_event_time"),
        # ISO-8601 without a UTC offset: which zone it meant is unknown.
        ({"event_id": "e", "entity_id": "c", "features": {}, "event_time": "2026-12-01T10:00:00"},
         "bad_event_time"),
        ({"event_id": "e", "entity_id": "c", "features": {}, "event_time": True},
         "bad_event_time"),
        ({"event_id": "e", "entity_id": "c", "features": {}, "model": 3}, "unknown_model"),
    ],
)
def test_envelope_rules(event, expected):
    got = reason(validate_envelope, event, default_model="agrawal", fallback_time_ms=NOW)
    assert got == expected


def test_envelope_defaults():
    out = validate_envelope({"event_id": "e", "entity_id": "c", "features": {"age": 30}},
                            default_model="agrawal", fallback_time_ms=NOW)
    assert out == ("e", "c", NOW, "agrawal", {"age": 30})


@pytest.mark.parametrize(("given", "ms"), [
    (1_796_119_200_000, 1_796_119_200_000),
    ("2026-12-01T10:00:00Z", 1_796_119_200_000),
    ("2026-12-01T11:00:00.250+01:00", 1_796_119_200_250),
    ("2026-12-01 10:00:00.123456+00:00", 1_796_119_200_123),
])
def test_event_time_is_epoch_ms_or_iso_8601_with_an_offset(given, ms):
    event = {"event_id": "e", "entity_id": "c", "features": {}, "event_time": given}
    assert validate_envelope(event, default_model="agrawal", fallback_time_ms=NOW)[2] == ms


def test_unbounded_numbers_still_reject_infinity_and_nan():
    from services.models.card import FeatureSpec

    v = FeatureValidator("m", [FeatureSpec(name="x", type="float")])
    assert v.features({"x": 1e300}) == {"x": 1e300}
    for bad in (math.inf, -math.inf, math.nan):
        assert reason(v.features, {"x": bad}) == "non_finite"
