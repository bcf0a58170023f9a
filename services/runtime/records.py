"""Checks of the records services read from each other's topics: predictions, labeled ones.

JSON carries no schema, so a record on ``predictions`` written by a foreign or broken producer
may lack a field, or hold an object where a string belongs. join and monitor check the fields
they use once, where the record comes in: a record that fails is dead-lettered (join) or
counted and skipped (monitor) with its reason — it never fails a batch, and it is never stored
in the join state to fail again when its outcome arrives. Avro-decoded records already have the
schema's types; the checks cost ~1 µs a record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ValidationError

__all__ = [
    "BAD_LABELED",
    "BAD_PREDICTION",
    "NOT_SCORABLE",
    "check_labeled",
    "check_prediction",
    "check_scorable",
]

BAD_PREDICTION = "bad_prediction"
BAD_LABELED = "bad_labeled"

_IDS = ("prediction_id", "event_id", "entity_id", "model", "model_version", "role")
_TIMES = ("event_time", "predicted_at")
_MAX_LONG = 2**63 - 1
_SCALARS = (str, int, float, type(None))


def _fail(reason: str, detail: str) -> ValidationError:
    return ValidationError(reason, detail[:300])


def _time(rec: dict[str, Any], name: str, reason: str) -> None:
    t = rec.get(name)
    if type(t) is not int or not 0 <= t <= _MAX_LONG:
        raise _fail(reason, f"{name} must be epoch milliseconds, got {t!r:.60}")


def _number(value: Any) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and abs(value) <= _MAX_LONG  # larger ints overflow float()


def check_prediction(rec: dict[str, Any], reason: str = BAD_PREDICTION) -> None:
    """Raises :class:`ValidationError` unless ``rec`` has the prediction fields, well typed."""
    for name in _IDS:
        v = rec.get(name)
        if type(v) is not str or not v:
            raise _fail(reason, f"{name} must be a non-empty string, got {v!r:.60}")
    if type(rec.get("label")) is not str:
        raise _fail(reason, f"label must be a string, got {rec.get('label')!r:.60}")
    score = rec.get("score")
    if score is not None and not _number(score):
        raise _fail(reason, f"score must be a finite number or null, got {score!r:.60}")
    features = rec.get("features")
    if type(features) is not dict:
        raise _fail(reason, f"features must be an object, got {features!r:.60}")
    for name, value in features.items():
        if not isinstance(value, _SCALARS):
            raise _fail(reason, f"features[{name!r:.60}] is {type(value).__name__}, not a scalar")
    for name in _TIMES:
        _time(rec, name, reason)


def check_labeled(rec: dict[str, Any]) -> None:
    """:func:`check_prediction`, and the outcome fields a labeled record adds."""
    check_prediction(rec, BAD_LABELED)
    label = rec.get("outcome_label")
    if label is not None and type(label) is not str:
        raise _fail(BAD_LABELED, f"outcome_label must be a string or null, got {label!r:.60}")
    value = rec.get("outcome_value")
    if value is not None and not _number(value):
        raise _fail(BAD_LABELED, f"outcome_value must be a finite number, got {value!r:.60}")
    _time(rec, "labeled_at", BAD_LABELED)


NOT_SCORABLE = "not_scorable"


def check_scorable(
    rec: dict[str, Any], names: Sequence[str], codes: Mapping[str, Mapping[Any, float]]
) -> None:
    """Raises :class:`ValidationError` unless a ``features.valid`` record can be scored by a
    model with features ``names`` (string categories looked up in ``codes``)."""
    for name in ("event_id", "entity_id"):
        v = rec.get(name)
        if type(v) is not str or not v:
            raise _fail(NOT_SCORABLE, f"{name} must be a non-empty string, got {v!r:.60}")
    model = rec.get("model")
    if model is not None and type(model) is not str:
        raise _fail(NOT_SCORABLE, f"model must be a string, got {model!r:.60}")
    _time(rec, "event_time", NOT_SCORABLE)
    if rec.get("ingested_at") is not None:
        _time(rec, "ingested_at", NOT_SCORABLE)
    features = rec.get("features")
    if type(features) is not dict:
        raise _fail(NOT_SCORABLE, f"features must be an object, got {features!r:.60}")
    for name in names:
        value = features.get(name)
        known = codes.get(name)
        if not (_number(value) if known is None else value in known):
            raise _fail(NOT_SCORABLE, f"features[{name!r:.60}] cannot be scored: {value!r:.60}")
