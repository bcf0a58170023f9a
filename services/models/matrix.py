"""Turning feature dicts into the float32 matrix an ONNX model takes.

The encoding is the one ``FeatureSpec`` documents: numbers as themselves, categories as their
code, anything missing or unknown as NaN. It lives here once so that the smoke test, the
trainers and the services all feed a model the same way it was trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .card import FeatureSpec

__all__ = ["FeatureEncoder", "feature_matrix"]

_NAN = float("nan")


class FeatureEncoder:
    """Encodes rows for one feature list; build it once per model version, not per batch."""

    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        self.names = [spec.name for spec in specs]
        # Only string categories need a lookup; every other value is already its own code.
        self._lookups: list[dict[object, float] | None] = [
            dict(zip(spec.categories, spec.category_codes(), strict=True))
            if spec.categories and isinstance(spec.categories[0], str)
            else None
            for spec in specs
        ]

    def encode(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """A ``(len(rows), n_features)`` float32 matrix; missing or unknown values become NaN."""
        out = np.full((len(rows), len(self.names)), np.nan, dtype=np.float32)
        for j, (name, lookup) in enumerate(zip(self.names, self._lookups, strict=True)):
            column = [row.get(name) for row in rows]
            if lookup is not None:
                out[:, j] = [lookup.get(v, _NAN) for v in column]
            else:
                out[:, j] = [_NAN if v is None else _as_float(v) for v in column]
        return out


def feature_matrix(
    rows: Sequence[Mapping[str, object]], specs: Sequence[FeatureSpec]
) -> np.ndarray:
    """One-shot ``FeatureEncoder(specs).encode(rows)``."""
    return FeatureEncoder(specs).encode(rows)


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _NAN
