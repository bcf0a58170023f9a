"""Everything the monitor knows about one (model, version, role): drift of its inputs and
scores, quality from labels, the label-free estimate and concept drift of its errors."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

from ..models.card import ModelCard
from ..models.matrix import FeatureEncoder
from .concept import holdout_prior as card_prior
from .concept import monitor_detector
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
        holdout_prior: bool = False,
    ) -> None:
        self.card = card
        self.role = role
        self.classifier = card.is_classifier
        self.encoder = FeatureEncoder(card.features)
        string_codes = any(f.categories and isinstance(f.categories[0], str)
                           for f in card.features)
        self._row = None if string_codes else operator.itemgetter(*self.encoder.names)
        self.drift = DriftDetector(card.reference, window, specs=card.features, budget=budget,
                                   score_bounds=(0.0, 1.0) if self.classifier else None)
        self.quality = QualityWindow(card.task, card.labels, window, max_age_s=max_age_s)
        self.estimate = ConfidenceEstimate(window) if self.classifier else None
        # Optionally, the card's holdout errors seed the error rate the charts test against.
        prior = card_prior(card.metrics) if self.classifier and holdout_prior else None
        self.concept = monitor_detector(concept_arl0, prior=prior)
        self.predictions = 0
        self.labeled = 0
        self.concept_drifts = 0
        self.reported_drifts = 0  # concept-drift signals already turned into an evaluation
        self.first_ms: int | None = None
        self.last_ms = 0

    def add_predictions(self, preds: Sequence[dict[str, Any]]) -> None:
        n = len(preds)
        # One pass in Python to pick the fields; every column is then converted in C.
        feats, scores, labels, times = zip(
            *[(p["features"], p.get("score"), p["label"], p["event_time"]) for p in preds],
            strict=True)
        x = self._matrix(feats)
        s = _floats(scores)
        self.drift.add(x, s)
        if self.estimate is not None:
            y_pred = np.fromiter(map(operator.eq, labels, repeat(self.card.labels[-1])), bool, n)
            self.estimate.add(s, y_pred)
        self.predictions += n
        self._saw(times)

    def _saw(self, event_times: Sequence[int]) -> None:
        """The window of event times (alerts carry it) takes in a batch's."""
        first, last = min(event_times), max(event_times)
        self.first_ms = first if self.first_ms is None else min(self.first_ms, first)
        self.last_ms = max(self.last_ms, last)

    def _matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """The encoded feature matrix: rows gathered by ``itemgetter`` when every feature is a
        number or a numeric code, else (a feature missing, a value no number, string categories)
        by the general ``FeatureEncoder``, which gives the same matrix one value at a time."""
        if self._row is not None:
            try:
                x = np.asarray(list(map(self._row, rows)), dtype=np.float32)
                return x.reshape(len(rows), len(self.encoder.names))
            except (KeyError, TypeError, ValueError):
                pass
        return self.encoder.encode(rows)

    @property
    def truth_field(self) -> str:
        """The labeled record's field holding the outcome this model is scored against."""
        return "outcome_label" if self.classifier else "outcome_value"

    def add_labeled(self, labeled: Sequence[dict[str, Any]]) -> int:
        """Returns how many concept-drift signals the new errors raised."""
        if self.classifier:
            truth, pred, scores, ts, events = zip(*[
                (r["outcome_label"], r["label"], r.get("score"), r["labeled_at"], r["event_time"])
                for r in labeled
            ], strict=True)
            y_true = np.array(truth, dtype=object)
            y_pred = np.array(pred, dtype=object)
            errors = np.asarray(y_true != y_pred, dtype=bool)
            score = _floats(scores)
        else:
            truth, scores, ts, events = zip(*[
                (r["outcome_value"], r["score"], r["labeled_at"], r["event_time"])
                for r in labeled
            ], strict=True)
            y_true = np.array(truth, dtype=float)
            y_pred = score = np.array(scores, dtype=float)
            errors = np.abs(y_true - y_pred) > np.nanstd(y_true)
        self.quality.add(y_true, y_pred, score, np.array(ts, dtype=np.int64))
        self.labeled += len(labeled)
        # A version seen only through its labeled records (its predictions all replayed before
        # a restart, or consumed elsewhere) still has a window for its alerts.
        self._saw(events)
        signals = len(self.concept.update_many(errors))
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


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Scores as float64, a missing one (None) as 0.0."""
    out = np.array(values, dtype=np.float64)
    out[np.isnan(out)] = 0.0
    return out
