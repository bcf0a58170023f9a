"""Building the reference profile of a model from its training data and held-out scores.

The profile is computed once, when a version is trained, and frozen into its card; the monitor
then compares live windows against it. Everything here works on the encoded float matrix the
model itself sees, so the monitor can bin live feature vectors with no extra translation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .card import CategoricalProfile, FeatureSpec, NumericProfile, ReferenceProfile

__all__ = [
    "DECILES",
    "build_reference_profile",
    "categorical_profile",
    "numeric_profile",
    "reference_sample",
]

# Inner deciles only: the two open-ended tail bins then hold ~10% each, so no bin starts empty.
DECILES: tuple[float, ...] = tuple(i / 10 for i in range(1, 10))


def _column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64, and its non-missing values; refuses a column with none."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot profile an empty column")
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        raise ValueError("cannot profile a column with no values")
    return values, finite


def numeric_profile(values: np.ndarray, quantiles: Sequence[float] = DECILES) -> NumericProfile:
    """Quantile edges (deduplicated) and the share of ``values`` in each bin, plus moments."""
    values, finite = _column(values)
    # Discrete or point-mass columns repeat quantiles; duplicates would make empty, unusable bins.
    edges = np.unique(np.quantile(finite, list(quantiles)))
    index = np.searchsorted(edges, finite, side="right")
    counts = np.bincount(index, minlength=edges.size + 1)
    return NumericProfile(
        count=int(values.size),
        missing=float(1.0 - finite.size / values.size),
        edges=edges.tolist(),
        proportions=(counts / finite.size).tolist(),
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
    )


def categorical_profile(
    values: np.ndarray, categories: Sequence[int | str], codes: Sequence[float]
) -> CategoricalProfile:
    """The share of each category among encoded ``values`` (``codes[i]`` encodes category i)."""
    values, finite = _column(values)
    code_array = np.asarray(codes, dtype=np.float64)
    hits = finite[:, None] == code_array[None, :]
    counts = hits.sum(axis=0)
    return CategoricalProfile(
        count=int(values.size),
        missing=float(1.0 - finite.size / values.size),
        categories=list(categories),
        proportions=(counts / finite.size).tolist(),
        unseen=float(1.0 - hits.any(axis=1).sum() / finite.size),
    )


def reference_sample(
    x: np.ndarray, specs: Sequence[FeatureSpec], size: int = 200, seed: int = 0
) -> list[dict[str, float | int | str | None]]:
    """Up to ``size`` random rows decoded back to raw JSON values, as an event would carry them."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(x.shape[0], size=min(size, x.shape[0]), replace=False))
    return [
        {spec.name: _decode(float(row[j]), spec) for j, spec in enumerate(specs)} for row in x[take]
    ]


def build_reference_profile(
    x: np.ndarray,
    feature_specs: Sequence[FeatureSpec],
    scores: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    sample_size: int = 200,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile the encoded training matrix ``x`` and the model's ``scores`` on held-out rows.

    ``scores`` is 1-D (binary P(positive) or a regression value) or a probability matrix
    (multiclass: the top probability is profiled). Given ``labels``, the predicted-label mix of a
    classifier is profiled too, using the same argmax the scorer uses.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != len(feature_specs):
        raise ValueError(f"x has shape {x.shape}, expected (n, {len(feature_specs)})")
    features = {spec.name: _feature_profile(x[:, j], spec) for j, spec in enumerate(feature_specs)}
    scores = np.asarray(scores, dtype=np.float64)
    score_values = scores.max(axis=1) if scores.ndim == 2 else scores
    predicted = None
    if labels:
        # Ties go to the first label, exactly as argmax over [1 - p, p] does in the scorer.
        index = scores.argmax(axis=1) if scores.ndim == 2 else (scores > 0.5).astype(np.int64)
        predicted = categorical_profile(index, list(labels), list(range(len(labels))))
    return ReferenceProfile(
        rows=int(x.shape[0]),
        features=features,
        score=numeric_profile(score_values),
        predicted=predicted,
        sample=reference_sample(x, feature_specs, sample_size, seed),
    )


def _feature_profile(column: np.ndarray, spec: FeatureSpec) -> NumericProfile | CategoricalProfile:
    if spec.type != "category":
        return numeric_profile(column)
    if spec.categories:
        return categorical_profile(column, spec.categories, spec.category_codes())
    # No declared categories: the observed codes are the categories.
    finite = column[~np.isnan(column)]
    observed = np.unique(finite).tolist()
    return categorical_profile(column, [int(c) for c in observed], observed)


def _decode(value: float, spec: FeatureSpec) -> float | int | str | None:
    if value != value:  # NaN: the feature was missing
        return None
    if spec.type == "float":
        return value
    if spec.type == "category" and spec.categories and isinstance(spec.categories[0], str):
        return spec.categories[int(value)]
    return int(value)
