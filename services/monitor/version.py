"""Everything the monitor knows about one (model, version, role): drift of its inputs and
scores, quality from labels, the label-free estimate and concept drift of its errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models.card import ModelCard
from ..models.matrix import FeatureEncoder
from .concept import BernoulliCUSUM
from .drift import DriftDetector, FalseAlarmBudget
from .estimate import ConfidenceEstimate
from .quality import QualityWindow

__all__ = ["VersionMonitor"]


class VersionMonitor:
    def __init__(
        self,
        card: ModelCard,
        role: str,
        *,
        window: int,
        max_age_s: float | None,
        budget: FalseAlarmBudget,
        concept_arl0: float,
    ) -> None:
        self.card = card
        self.role = role
        self.classifier = card.is_classifier
        self.encoder = FeatureEncoder(card.features)
        self.drift = DriftDetector(card.reference, window, specs=card.features, budget=budget,
                                   score_bounds=(0.0, 1.0) if self.classifier else None)
        self.quality = QualityWindow(card.task, card.labels, window, max_age_s=max_age_s)
        self.estimate = ConfidenceEstimate(window) if self.classifier else None
        self.concept = BernoulliCUSUM(arl0=concept_arl0)
        self.predictions = 0
        self.labeled = 0
        self.concept_drifts = 0
        self.reported_drifts = 0  # concept-drift signals already turned into an evaluation
        self.first_ms: int | None = None
        self.last_ms = 0

    def add_predictions(self, preds: Sequence[dict[str, Any]]) -> None:
        x = self.encoder.encode([p["features"] for p in preds])
        scores = np.fromiter((p.get("score") or 0.0 for p in preds), float, len(preds))
        self.drift.add(x, scores)
        if self.estimate is not None:
            y_pred = np.fromiter((p["label"] == self.card.labels[-1] for p in preds), bool,
                                 len(preds))
            self.estimate.add(scores, y_pred)
        self.predictions += len(preds)
        times = [p["event_time"] for p in preds]
        self.first_ms = min(times) if self.first_ms is None else min(self.first_ms, *times)
        self.last_ms = max(self.last_ms, *times)

    def add_labeled(self, labeled: Sequence[dict[str, Any]]) -> int:
        """Returns how many concept-drift signals the new errors raised."""
        if self.classifier:
            y_true = np.array([r["outcome_label"] for r in labeled], dtype=object)
            y_pred = np.array([r["label"] for r in labeled], dtype=object)
            errors = y_true != y_pred
        else:
            y_true = np.array([r["outcome_value"] for r in labeled], dtype=float)
            y_pred = np.array([r["score"] for r in labeled], dtype=float)
            errors = np.abs(y_true - y_pred) > np.nanstd(y_true)
        score = np.array([r.get("score") or 0.0 for r in labeled], dtype=float)
        ts = np.array([r["labeled_at"] for r in labeled], dtype=np.int64)
        self.quality.add(y_true, y_pred, score, ts)
        self.labeled += len(labeled)
        signals = len(self.concept.update_many(errors.astype(bool)))
        self.concept_drifts += signals
        return signals

    def metrics(self, now_ms: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in self.quality.metrics(now_ms).items():
            if value is not None:
                out[name] = float(value)
        if self.estimate is not None:
            for name, value in self.estimate.estimate().items():
                if value is not None:
                    out[name] = float(value)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "drift": {name: w.state() for name, w in self.drift.windows.items()},
            "score": self.drift.score_window.state(),
            "quality": self.quality.state(),
            "estimate": self.estimate.state() if self.estimate else None,
            "concept": self.concept.state(),
            "counts": [self.predictions, self.labeled, self.concept_drifts,
                       self.first_ms or 0, self.last_ms],
        }

    def load(self, state: dict[str, Any]) -> None:
        for name, w in self.drift.windows.items():
            w.load(state["drift"][name])
        self.drift.score_window.load(state["score"])
        self.quality.load(state["quality"])
        if self.estimate is not None and state["estimate"] is not None:
            self.estimate.load(state["estimate"])
        self.concept.load(state["concept"])
        p, n, c, first, last = state["counts"]
        self.predictions, self.labeled, self.concept_drifts = int(p), int(n), int(c)
        self.first_ms, self.last_ms = (int(first) or None), int(last)
