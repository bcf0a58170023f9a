"""The model card: everything a service needs to know about a model version besides its weights.

A card travels with ``model.onnx`` in the artifact store and, in part, on ``model.events``. Ingest
validates events against ``features``; predict maps probability columns to ``labels``; monitor
measures drift against ``reference``. The card is plain JSON (``model_dump_json`` /
``model_validate_json``) so that any language can read it; nothing in it is ever unpickled.

Binning convention, shared by every profile and every consumer (use ``NumericProfile.bin_counts``
rather than re-deriving it): ``edges`` are sorted and unique, and a value ``v`` falls in bin
``i = searchsorted(edges, v, side="right")``, so bin 0 is ``(-inf, edges[0])``, bin ``i`` is
``[edges[i-1], edges[i])`` and the last bin is ``[edges[-1], +inf)``: ``len(edges) + 1`` bins.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

__all__ = [
    "MODEL_NAME_PATTERN",
    "ArtifactRef",
    "CategoricalProfile",
    "FeatureProfile",
    "FeatureSpec",
    "ModelCard",
    "NumericProfile",
    "ReferenceProfile",
    "Task",
]

# Model names become directory names in the artifact store, so they must be a single safe path
# segment: no separators, no leading dot (which the store reserves for its temporary dirs).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# "" means "not published yet": the store assigns the next free number on publish.
_VERSION_PATTERN = r"^([1-9][0-9]{0,17})?$"
_PROPORTION_TOLERANCE = 1e-6

Task = Literal["binary", "multiclass", "regression"]

# Frozen so that a card handed to several services cannot be changed behind their backs;
# extra="forbid" so that a typo in a hand-written card.json fails loudly instead of vanishing.
_STRICT = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(BaseModel):
    """One input column of a model: what ingest accepts and how it becomes a float.

    The ONNX input is a float matrix, so every value is encoded as a number: ``float`` and
    ``int`` features as themselves, ``category`` features as their value when all categories are
    integers, otherwise as their position in ``categories`` (see ``category_codes``).
    """

    model_config = _STRICT

    name: Annotated[str, Field(min_length=1)]
    type: Literal["float", "int", "category"]
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[int | str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "category":
            if self.min is not None or self.max is not None:
                raise ValueError(f"{self.name}: a category feature takes categories, not min/max")
            if self.categories is not None:
                if not self.categories:
                    raise ValueError(f"{self.name}: categories must not be empty")
                if len(set(self.categories)) != len(self.categories):
                    raise ValueError(f"{self.name}: categories must be unique")
                kinds = {isinstance(c, str) for c in self.categories}
                if len(kinds) > 1:
                    raise ValueError(f"{self.name}: categories mix integers and strings")
        else:
            if self.categories is not None:
                raise ValueError(f"{self.name}: only category features take categories")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"{self.name}: min {self.min} is above max {self.max}")
        return self

    def category_codes(self) -> list[float]:
        """The number the model sees for each category, index-aligned with ``categories``."""
        if not self.categories:
            return []
        if all(isinstance(c, int) for c in self.categories):
            return [float(c) for c in self.categories]
        return [float(i) for i in range(len(self.categories))]


class NumericProfile(BaseModel):
    """The reference distribution of one numeric quantity (a feature or the model's score).

    Edges are the training deciles, deduplicated, so the bins hold roughly equal mass and PSI /
    Jensen-Shannon / chi-square can compare a live window's ``bin_counts`` to ``proportions``
    (times ``count`` for expected counts); the cumulative proportions at the edges give a binned
    Kolmogorov-Smirnov statistic. A proportion may be 0 (e.g. a point mass at the lowest edge):
    smooth before taking logarithms.
    """

    model_config = _STRICT

    kind: Literal["numeric"] = "numeric"
    count: Annotated[int, Field(ge=1)]
    missing: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    edges: list[float]
    proportions: list[float]
    mean: float
    std: float
    min: float
    max: float

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError("a numeric profile has len(edges) + 1 proportions")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly increasing")
        _check_distribution(self.proportions)
        return self

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` per bin under the shared convention; NaNs are left out."""
        finite = values[~np.isnan(values)]
        index = np.searchsorted(np.asarray(self.edges, dtype=np.float64), finite, side="right")
        return np.bincount(index, minlength=len(self.edges) + 1)

    def cdf_at_edges(self) -> list[float]:
        """Reference P(X < edge) per edge, for a binned Kolmogorov-Smirnov statistic."""
        return np.cumsum(self.proportions[:-1]).tolist()


class CategoricalProfile(BaseModel):
    """The reference frequencies of one category feature.

    ``proportions`` is index-aligned with ``categories``; ``unseen`` is the share of values that
    are none of them, so the proportions plus ``unseen`` sum to 1 and a chi-square test can keep
    unknown categories as a cell of their own.
    """

    model_config = _STRICT

    kind: Literal["categorical"] = "categorical"
    count: Annotated[int, Field(ge=1)]
    missing: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    categories: list[int | str]
    proportions: list[float]
    unseen: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.proportions) != len(self.categories):
            raise ValueError("a categorical profile has one proportion per category")
        _check_distribution([*self.proportions, self.unseen])
        return self

    @property
    def frequencies(self) -> dict[int | str, float]:
        """``{category: proportion}``, the shape most drift formulas start from."""
        return dict(zip(self.categories, self.proportions, strict=True))


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """What "normal" looked like when the model was trained: drift is measured against this.

    ``features`` holds one profile per feature (numeric for float/int, categorical for category);
    ``score`` is the model's own output on held-out data (binary: P(positive); multiclass: the top
    probability; regression: the prediction), so score drift is visible before any outcome
    arrives; ``predicted`` is the predicted-label mix of classifiers. ``sample`` is a few raw rows
    for smoke predictions when a version is loaded.
    """

    model_config = _STRICT

    rows: Annotated[int, Field(ge=1)]
    features: dict[str, FeatureProfile]
    score: NumericProfile
    predicted: CategoricalProfile | None = None
    sample: list[dict[str, float | int | str | None]] = Field(default_factory=list)


class ArtifactRef(BaseModel):
    """Where the weights are, relative to the card, and the checksum that proves they are intact.

    Empty ``sha256`` and zero ``bytes`` mean "not published yet"; the store fills both.
    """

    model_config = _STRICT

    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.onnx$")] = "model.onnx"
    sha256: Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")] = ""
    bytes: Annotated[int, Field(ge=0)] = 0


class ModelCard(BaseModel):
    """A model version's contract with the services: inputs, outputs, quality and provenance.

    ``features`` are in ONNX input column order; ``labels`` are index-aligned with the columns of
    the probability output (empty for regression). ``version`` is ``""`` until the artifact store
    publishes the card and assigns one.
    """

    model_config = _STRICT

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    version: Annotated[str, Field(pattern=_VERSION_PATTERN)] = ""
    task: Task
    features: Annotated[list[FeatureSpec], Field(min_length=1)]
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: dict[str, JsonValue] = Field(default_factory=dict)
    reference: ReferenceProfile
    created_at: int = Field(default_factory=lambda: time.time_ns() // 1_000_000)
    artifact: ArtifactRef = Field(default_factory=ArtifactRef)
    input_name: Annotated[str, Field(min_length=1)] = "features"
    label_output: str | None = "label"
    score_output: Annotated[str, Field(min_length=1)] = "probabilities"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        expected = {"binary": "exactly 2", "multiclass": "at least 3", "regression": "no"}
        count = len(self.labels)
        ok = {"binary": count == 2, "multiclass": count >= 3, "regression": count == 0}
        if not ok[self.task]:
            raise ValueError(f"a {self.task} model has {expected[self.task]} labels, not {count}")
        if self.task != "regression" and self.label_output is None:
            raise ValueError("a classifier card names its label output")
        if set(self.reference.features) != set(names):
            raise ValueError("the reference profile must cover exactly the card's features")
        return self

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def feature_names(self) -> list[str]:
        """Feature names in ONNX column order. Recomputed per call: hoist it out of hot loops."""
        return [f.name for f in self.features]

    @property
    def spec_by_name(self) -> dict[str, FeatureSpec]:
        """``{name: spec}``. Recomputed per call: hoist it out of hot loops."""
        return {f.name: f for f in self.features}


def _check_distribution(proportions: list[float]) -> None:
    if any(p < 0.0 or not math.isfinite(p) for p in proportions):
        raise ValueError("proportions must be finite and non-negative")
    if abs(sum(proportions) - 1.0) > _PROPORTION_TOLERANCE:
        raise ValueError(f"proportions sum to {sum(proportions)}, not 1")
