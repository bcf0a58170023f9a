"""Trainers: pluggable, found by name in the ``modelstream.trainers`` entry-point group.

A trainer turns an encoded training matrix into ONNX bytes that take the champion's input (one
float tensor named ``card.input_name``, columns in the card's feature order) and give its
outputs (``label`` and a ``probabilities`` matrix for classifiers — ``zipmap=False`` — or one
value per row for regression). Everything around it — the data, the card with its reference
profile and holdout metrics, validation — is the coordinator's, so a trainer stays small::

    class MyTrainer:
        name = "mine"
        def train(self, card, x, y, params): ...  # -> bytes (ONNX)

    # pyproject.toml of your package
    [project.entry-points."modelstream.trainers"]
    mine = "my_package.trainers:MyTrainer"

``MODELSTREAM_RETRAIN_TRAINER=mine`` selects it. The built-in ``sklearn`` trainer fits a
gradient-boosted ensemble (scikit-learn) and converts it with skl2onnx; ``params`` of a request
(``n_estimators``, ``max_depth``, ``learning_rate``, ``seed``) override its defaults.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..models.card import ArtifactRef, ModelCard
from ..models.convert import sklearn_to_onnx
from ..models.profile import build_reference_profile
from ..runtime.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "SklearnTrainer", "Trainer", "build_card", "load_trainer"]

ENTRY_POINT_GROUP = "modelstream.trainers"


@runtime_checkable
class Trainer(Protocol):
    name: str

    def train(
        self, card: ModelCard, x: np.ndarray, y: np.ndarray, params: Mapping[str, str]
    ) -> bytes: ...


class SklearnTrainer:
    """Gradient boosting from scikit-learn, exported with skl2onnx (the demo model's recipe)."""

    name = "sklearn"
    defaults: dict[str, Any] = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1,
                                "seed": 0}

    def train(
        self, card: ModelCard, x: np.ndarray, y: np.ndarray, params: Mapping[str, str]
    ) -> bytes:
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

        p = self.params(params)
        kwargs = {"n_estimators": p["n_estimators"], "max_depth": p["max_depth"],
                  "learning_rate": p["learning_rate"], "random_state": p["seed"]}
        if card.is_classifier:
            present = np.unique(y)
            if len(present) < 2:
                raise ValueError(f"the training data holds only one label ({present.tolist()})")
            estimator: Any = GradientBoostingClassifier(**kwargs)
            # Every label of the card must have a probability column, seen in training or not.
            estimator.fit(x, y)
            if len(estimator.classes_) != len(card.labels):
                raise ValueError(
                    f"the training data holds {len(estimator.classes_)} of the"
                    f" {len(card.labels)} labels; the model would not cover them all"
                )
        else:
            estimator = GradientBoostingRegressor(**kwargs).fit(x, y)
        return sklearn_to_onnx(estimator, x.shape[1], input_name=card.input_name,
                               name=card.name)

    def params(self, given: Mapping[str, str]) -> dict[str, Any]:
        out = dict(self.defaults)
        for key, value in given.items():
            if key not in out:
                raise ConfigError(f"sklearn trainer: unknown parameter {key!r}"
                                  f" (known: {', '.join(sorted(out))})")
            try:
                out[key] = type(self.defaults[key])(value)
            except ValueError:
                raise ConfigError(f"sklearn trainer: {key}={value!r} is not a"
                                  f" {type(self.defaults[key]).__name__}") from None
        return out


def load_trainer(name: str) -> Trainer:
    """The trainer registered as ``name`` (the built-in ``sklearn`` needs no installing)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            trainer = ep.load()()
            if not isinstance(trainer, Trainer):
                raise ConfigError(f"trainer {name!r} ({ep.value}) has no name and train()")
            return trainer
    if name == SklearnTrainer.name:
        return SklearnTrainer()
    known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | {"sklearn"})
    raise ConfigError(f"no trainer {name!r} in entry points {ENTRY_POINT_GROUP}; known: {known}")


def build_card(
    parent: ModelCard,
    x_train: np.ndarray,
    holdout_scores: np.ndarray,
    metrics: dict[str, float],
    lineage: dict[str, Any],
) -> ModelCard:
    """The candidate's card: the parent's contract (features, labels, tensor names), a new
    reference profile from its own training data and holdout scores, its holdout metrics and
    the holdout's size (``holdout_rows``: the monitor weighs the holdout accuracy by it)."""
    reference = build_reference_profile(
        x_train, parent.features, holdout_scores,
        labels=parent.labels if parent.is_classifier else None,
    )
    return parent.model_copy(update={
        "version": "", "metrics": {**metrics, "holdout_rows": float(len(holdout_scores))},
        "lineage": lineage, "reference": reference,
        "created_at": time.time_ns() // 1_000_000, "artifact": ArtifactRef(),
    })
