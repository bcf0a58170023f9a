"""Event validation against a model's feature spec. Each failure has a stable reason code:

============================  ====================================================
``missing_event_id``          no ``event_id``, or not a non-empty string
``missing_entity_id``         no ``entity_id``, or not a non-empty string
``bad_event_time``            ``event_time`` present but not a time (epoch ms or ISO-8601)
``unknown_model``             ``model`` names no deployed model
``bad_features``              ``features`` missing or not an object
``unknown_feature``           a feature the spec does not declare (when rejecting)
``wrong_type``                a string for a number, an object for a scalar, 1.5 for an int
``non_finite``                NaN or ±Infinity
``out_of_range``              below ``min`` or above ``max``
``unknown_category``          a category outside the declared set
``missing_feature``           a required feature absent from the event and the store
============================  ====================================================
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..runtime.errors import ValidationError
from ..runtime.times import epoch_ms

__all__ = ["FeatureValidator", "ValidEvent", "validate_envelope"]

MAX_ID_LENGTH = 256

Canonical = float | int | str
Check = Callable[[Any], Canonical]


@dataclass(slots=True)
class ValidEvent:
    event_id: str
    entity_id: str
    event_time: int
    model: str
    features: dict[str, Canonical]


def _id(event: dict[str, Any], field: str) -> str:
    value = event.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValidationError(
            f"missing_{field}", f"{field} must be a non-empty string of at most "
            f"{MAX_ID_LENGTH} characters, got {_show(value)}"
        )
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_envelope(
    event: dict[str, Any], *, default_model: str, fallback_time_ms: int
) -> tuple[str, str, int, str, dict[str, Any]]:
    """Checks the fields every event has; returns (event_id, entity_id, time, model, features)."""
    event_id = _id(event, "event_id")
    entity_id = _id(event, "entity_id")
    given = event.get("event_time")
    event_time = fallback_time_ms if given is None else epoch_ms(given)
    if event_time is None:
        raise ValidationError("bad_event_time", f"event_time must be epoch milliseconds or "
                              f"ISO-8601 with a UTC offset, got {_show(given)}")
    model = event.get("model") or default_model
    if not isinstance(model, str):
        raise ValidationError("unknown_model", f"model must be a string, got {_show(model)}")
    features = event.get("features")
    if not isinstance(features, dict):
        raise ValidationError("bad_features", f"features must be an object, got {_show(features)}")
    return event_id, entity_id, event_time, model, features


def _numeric(name: str, kind: str, lo: float | None, hi: float | None) -> Check:
    # Unbounded still excludes ±inf: the largest finite float is the bound.
    low = -sys.float_info.max if lo is None else lo
    high = sys.float_info.max if hi is None else hi
    as_int = kind == "int"

    # The hot path of ingest: exact type checks first, the slow explanations only on failure.
    def check(value: Any) -> Canonical:
        t = type(value)
        if t is float:
            if not low <= value <= high:
                raise _bad_number(name, value, lo, hi)
            if as_int:
                if not value.is_integer():
                    raise ValidationError("wrong_type", f"{name}: expected an integer, got {value}")
                return int(value)
            return value
        if t is int:
            if not low <= value <= high:
                raise _bad_number(name, value, lo, hi)
            return value if as_int else float(value)
        raise ValidationError(
            "wrong_type", f"{name}: expected a number, got {t.__name__} {_show(value)}"
        )

    return check


def _bad_number(name: str, value: float, lo: float | None, hi: float | None) -> ValidationError:
    if not math.isfinite(value):  # NaN fails every comparison, ±inf every finite bound
        return ValidationError("non_finite", f"{name}: {value} is not a finite number")
    return ValidationError("out_of_range", f"{name}: {value} is outside [{lo}, {hi}]")


def _category(name: str, categories: Iterable[int | str]) -> Check:
    # Accept the category as declared or as its string form ("3" for 3): kcat users type strings.
    allowed: dict[Any, int | str] = {}
    for c in categories:
        allowed[c] = c
        allowed[str(c)] = c

    def check(value: Any) -> Canonical:
        if value.__class__ is not bool:  # True == 1 would otherwise find category 1
            try:
                return allowed[value]  # the hot path: a declared category, as int or string
            except (KeyError, TypeError):
                pass
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(
                "wrong_type",
                f"{name}: expected a category, got {type(value).__name__} {_show(value)}",
            )
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError("non_finite", f"{name}: {value} is not a finite number")
            if value == int(value):
                value = int(value)
        try:
            return allowed[value]
        except (KeyError, TypeError):
            raise ValidationError(
                "unknown_category", f"{name}: {_show(value)} is not one of the known categories"
            ) from None

    return check


class FeatureValidator:
    """Validates the (possibly partial) features of one model's events."""

    def __init__(self, model: str, specs: Iterable[Any], *, reject_unknown: bool = True) -> None:
        self.model = model
        self.checks: dict[str, Check] = {}
        self.required: list[str] = []
        self.names: list[str] = []
        for spec in specs:
            self.names.append(spec.name)
            if spec.required:
                self.required.append(spec.name)
            if spec.type == "category":
                self.checks[spec.name] = _category(spec.name, spec.categories or [])
            else:
                self.checks[spec.name] = _numeric(spec.name, spec.type, spec.min, spec.max)
        self.reject_unknown = reject_unknown

    def features(self, raw: dict[str, Any]) -> dict[str, Canonical]:
        """Canonical values of the features present; ``None`` means not provided."""
        out: dict[str, Canonical] = {}
        checks = self.checks
        for name, value in raw.items():
            check = checks.get(name)
            if check is None:
                if self.reject_unknown:
                    raise ValidationError(
                        "unknown_feature", f"{_show(name)} is not a feature of model {self.model}"
                    )
                continue
            if value is None:
                continue
            out[name] = check(value)
        return out

    def missing(self, merged: dict[str, Any]) -> list[str]:
        return [name for name in self.required if name not in merged]
