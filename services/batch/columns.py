"""Validating and encoding a whole batch of rows at once, column by column.

Batch scoring reads millions of rows, so checking each value in Python the way ingest does
would cost far more than the model. Here each feature column becomes one float64 array in a
single numpy pass; only a column that holds something unusual (text, booleans, objects) falls
back to a per-value check. Each rejected row carries the first problem found, in the feature
order of the card, with the same reason codes as ingest (``wrong_type``, ``non_finite``,
``out_of_range``, ``unknown_category``, ``missing_feature``).

The encoding is the model's own (``FeatureSpec``): numbers as themselves, categories as their
code; an absent optional feature is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models.card import FeatureSpec

__all__ = ["ColumnEncoder", "EncodedBatch"]

_NUMBER_TYPES = frozenset({int, float, type(None)})
_MISSING = object()


@dataclass(slots=True)
class EncodedBatch:
    """The matrix of the rows that passed, and why each of the others did not."""

    matrix: np.ndarray  # (n_ok, n_features) float32, C order
    ok: np.ndarray  # bool mask over the input rows
    reasons: dict[int, tuple[str, str]]  # input row index -> (reason, detail)


class ColumnEncoder:
    """Checks and encodes columns for one feature list; build once per model version."""

    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        self.specs = list(specs)
        self.names = [s.name for s in self.specs]
        self._codes: list[dict[Any, float] | None] = []
        for spec in self.specs:
            if spec.type != "category":
                self._codes.append(None)
                continue
            lookup: dict[Any, float] = {}
            for category, code in zip(
                spec.categories or [], spec.category_codes(), strict=True
            ):
                lookup[category] = code
                lookup[str(category)] = code  # CSV and kcat users write "3" for 3
            self._codes.append(lookup)

    def encode(self, columns: Mapping[str, Any], n: int) -> EncodedBatch:
        """Encode ``n`` rows given as ``{feature: column}``; a column is a list or an array.

        A feature absent from ``columns`` counts as missing in every row.
        """
        out = np.empty((n, len(self.specs)), dtype=np.float32)
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, tuple[str, str]] = {}
        for j, spec in enumerate(self.specs):
            column = columns.get(spec.name, _MISSING)
            if column is _MISSING:
                values = np.full(n, np.nan)
                problems: dict[int, tuple[str, str]] = {}
            elif self._codes[j] is not None:
                values, problems = _categories(spec, column, self._codes[j] or {})
            else:
                values, problems = _numbers(spec, column)
            if spec.required:
                for i in np.flatnonzero(np.isnan(values)).tolist():
                    problems.setdefault(i, ("missing_feature", f"{spec.name} is required"))
            for i, problem in problems.items():
                if not bad[i]:
                    bad[i] = True
                    reasons[i] = problem
            out[:, j] = values
        ok = ~bad
        matrix = np.ascontiguousarray(out[ok]) if bad.any() else out
        return EncodedBatch(matrix=matrix, ok=ok, reasons=reasons)


def _numbers(spec: FeatureSpec, column: Any) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    problems: dict[int, tuple[str, str]] = {}
    values = _as_float_array(column)
    if values is None:
        values, problems = _numbers_one_by_one(spec.name, list(column))
    finite = np.isfinite(values)
    nan = np.isnan(values)
    if not finite.all():
        # NaN stands for "missing" (None, an empty cell, a null); ±inf is never a value.
        for i in np.flatnonzero(~finite & ~nan).tolist():
            problems.setdefault(i, ("non_finite", f"{spec.name}: {values[i]} is not finite"))
    low = -np.inf if spec.min is None else spec.min
    high = np.inf if spec.max is None else spec.max
    with np.errstate(invalid="ignore"):
        outside = finite & ((values < low) | (values > high))
        if spec.type == "int":
            fractional = finite & (values != np.floor(values))
        else:
            fractional = np.zeros_like(finite)
    for i in np.flatnonzero(outside).tolist():
        problems.setdefault(
            i, ("out_of_range", f"{spec.name}: {values[i]:g} is outside [{spec.min}, {spec.max}]")
        )
    for i in np.flatnonzero(fractional).tolist():
        problems.setdefault(i, ("wrong_type", f"{spec.name}: expected an integer, got {values[i]}"))
    # A rejected value must not read as "missing" later on; the row is dropped anyway.
    if problems:
        values[list(problems)] = 0.0
    return values, problems


def _as_float_array(column: Any) -> np.ndarray | None:
    """The column as float64 in one pass, or None when it holds anything but numbers/nulls."""
    if isinstance(column, np.ndarray):
        if column.dtype.kind in "fiu":
            return column.astype(np.float64)
        return None
    if not set(map(type, column)) <= _NUMBER_TYPES:
        return None
    try:
        return np.array(column, dtype=np.float64)  # None becomes NaN
    except OverflowError:
        return None  # an integer past float range: the slow path says which one


def _numbers_one_by_one(
    name: str, column: list[Any]
) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    values = np.empty(len(column), dtype=np.float64)
    problems: dict[int, tuple[str, str]] = {}
    for i, value in enumerate(column):
        kind = type(value)
        if value is None or (kind is str and not value.strip()):
            values[i] = np.nan
            continue
        if kind is bool or not isinstance(value, str | int | float | np.number):
            problems[i] = ("wrong_type", f"{name}: expected a number, got {_show(value)}")
            values[i] = 0.0
            continue
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            problems[i] = ("wrong_type", f"{name}: expected a number, got {_show(value)}")
            number = 0.0
        if kind is str and math.isnan(number):
            problems[i] = ("non_finite", f"{name}: {value!r} is not a finite number")
            number = 0.0
        values[i] = number
    return values, problems


def _categories(
    spec: FeatureSpec, column: Any, codes: dict[Any, float]
) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    name = spec.name
    if isinstance(column, np.ndarray):
        fast = _integer_categories(spec, column)
        if fast is not None:
            return fast
        column = column.tolist()
    nan = math.nan
    # One dict lookup per value: the declared category, as itself or as its string form.
    values = np.array(
        [nan if v.__class__ is bool else codes.get(v, nan) for v in _hashable(column)],
        dtype=np.float64,
    )
    problems: dict[int, tuple[str, str]] = {}
    for i in np.flatnonzero(np.isnan(values)).tolist():
        value = column[i]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # missing
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            code = codes.get(int(value))  # 3.0 from a float column is category 3
            if code is not None:
                values[i] = code
                continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            problems[i] = ("wrong_type", f"{name}: expected a category, got {_show(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            if math.isnan(value):
                continue  # a null read from a float column
            problems[i] = ("non_finite", f"{name}: {value} is not a finite number")
        else:
            problems[i] = ("unknown_category", f"{name}: {_show(value)} is not a known category")
        values[i] = 0.0
    return values, problems


def _integer_categories(
    spec: FeatureSpec, column: np.ndarray
) -> tuple[np.ndarray, dict[int, tuple[str, str]]] | None:
    """Integer categories in a numeric array: their code is the value itself, checked at once."""
    if column.dtype.kind not in "fiu" or not spec.categories:
        return None
    if not all(isinstance(c, int) for c in spec.categories):
        return None
    values = column.astype(np.float64)
    known = np.isin(values, np.asarray(spec.categories, dtype=np.float64))
    unknown = ~known & ~np.isnan(values)
    problems: dict[int, tuple[str, str]] = {}
    for i in np.flatnonzero(unknown).tolist():
        v = values[i]
        reason = "unknown_category" if np.isfinite(v) else "non_finite"
        problems[i] = (reason, f"{spec.name}: {v:g} is not a known category")
        values[i] = 0.0
    return values, problems


def _hashable(column: Sequence[Any]) -> list[Any]:
    """Values usable as dict keys; lists and dicts (always wrong) become a sentinel."""
    return [v if v.__class__ not in (list, dict) else _MISSING for v in column]


def _show(value: Any) -> str:
    text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."
