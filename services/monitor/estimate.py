"""Label-free performance estimates of a classifier, from its own confidence (CBPE).

In the spirit of NannyML's confidence-based performance estimation: if the scores are
calibrated, event i is correct with probability c_i (the predicted label's probability), so the
expected accuracy of a window is mean(c_i) and every cell of the confusion matrix has an
expectation. For a binary model with P(positive) = p_i and predicted label ŷ_i:

    E[TP] = Σ_{ŷ=1} p_i     E[FP] = Σ_{ŷ=1} (1 - p_i)
    E[FN] = Σ_{ŷ=0} p_i     E[TN] = Σ_{ŷ=0} (1 - p_i)

and the expected precision, recall and F1 are those of the expected matrix. The estimate moves
as soon as the *inputs* move the scores, long before labels arrive; it is blind to concept drift
that leaves the scores unchanged, and it is only as right as the calibration. Scores that are
not calibrated can be mapped through an ``IsotonicCalibrator`` fitted on labeled held-out data
(the model's holdout, or a recent labeled window) when there is any.

``expected_accuracy_std`` is the standard deviation of the realised accuracy given calibrated
probabilities (a Poisson-binomial): a drop larger than a few of these is not noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ring import RingBuffer

__all__ = ["ConfidenceEstimate", "IsotonicCalibrator"]


@dataclass(frozen=True, slots=True)
class IsotonicCalibrator:
    """A monotone map from raw P(positive) to calibrated P(positive), linear between knots.

    >>> cal = IsotonicCalibrator.fit(np.array([.1, .2, .6, .9]), np.array([0, 0, 1, 1]))
    >>> cal(np.array([.15, .95])).tolist()
    [0.0, 1.0]
    """

    knots: np.ndarray
    values: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, y_true: np.ndarray) -> IsotonicCalibrator:
        """Fit by isotonic regression (pool adjacent violators) of 0/1 outcomes on the scores."""
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(np.asarray(scores, dtype=np.float64), np.asarray(y_true, dtype=np.float64))
        return cls(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=np.float64), self.knots, self.values)


class ConfidenceEstimate:
    """Expected accuracy, precision, recall and F1 of the last ``capacity`` predictions.

    ``add(scores)`` takes P(positive) per event (binary) or the ``(n, K)`` probability matrix
    (multiclass, macro averages over classes predicted or expected to occur). The predicted label
    is the argmax of the *raw* scores (binary: p > 0.5, as the scorer decides) unless
    ``y_pred`` is given; the calibrator, binary only, changes the probabilities, not the labels.

    >>> est = ConfidenceEstimate(capacity=3)
    >>> est.add(np.array([0.9, 0.2, 0.6]))
    >>> round(est.estimate()["expected_accuracy"], 4)
    0.7667
    """

    def __init__(
        self,
        capacity: int,
        *,
        classes: int = 2,
        calibrator: IsotonicCalibrator | None = None,
    ) -> None:
        if classes < 2:
            raise ValueError("a classifier has at least 2 classes")
        if calibrator is not None and classes != 2:
            raise ValueError("the isotonic calibrator maps binary scores only")
        self.classes = classes
        self.calibrator = calibrator
        width = () if classes == 2 else (classes,)
        self._ring = RingBuffer(capacity, {"p": (np.float64, 0.0, *width), "pred": (np.int32, 0)})

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, scores: np.ndarray, y_pred: np.ndarray | None = None) -> None:
        """Append a batch of scores (and, optionally, the predicted label codes)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.shape[0] == 0:
            return
        if self.classes == 2:
            pred = (s > 0.5) if y_pred is None else np.asarray(y_pred)
            p = self.calibrator(s) if self.calibrator is not None else s
        else:
            pred = s.argmax(axis=1) if y_pred is None else np.asarray(y_pred)
            p = s / s.sum(axis=1, keepdims=True)
        self._ring.push(p=p, pred=pred.astype(np.int32))

    def estimate(self) -> dict[str, float | None]:
        """``n``, ``expected_accuracy`` (and its std), ``expected_precision``/``recall``/``f1``."""
        p = self._ring.view("p")
        pred = self._ring.view("pred")
        n = pred.size
        names = (
            "expected_accuracy",
            "expected_accuracy_std",
            "expected_precision",
            "expected_recall",
            "expected_f1",
        )
        if n == 0:
            return {"n": 0.0} | dict.fromkeys(names)
        if self.classes == 2:
            return {"n": float(n)} | _binary(p, pred == 1)
        return {"n": float(n)} | _multiclass(p, pred)

    def reset(self) -> None:
        self._ring.clear()

    def state(self) -> dict[str, Any]:
        """Plain data (numpy arrays inside) for a checkpoint."""
        return self._ring.state()

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned, for the same capacity, classes and calibrator."""
        self._ring.load(state)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _binary(p: np.ndarray, positive: np.ndarray) -> dict[str, float | None]:
    correct = np.where(positive, p, 1.0 - p)
    tp = float(p[positive].sum())
    fp = float(positive.sum()) - tp
    fn = float(p[~positive].sum())
    return {
        "expected_accuracy": float(correct.mean()),
        "expected_accuracy_std": float(np.sqrt((correct * (1.0 - correct)).sum()) / p.size),
        "expected_precision": _ratio(tp, tp + fp),
        "expected_recall": _ratio(tp, tp + fn),
        "expected_f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _multiclass(p: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    n, k = p.shape
    correct = p[np.arange(n), pred]
    # Expected confusion matrix: row = true class (in expectation), column = predicted class.
    onehot = np.zeros((n, k))
    onehot[np.arange(n), pred] = 1.0
    confusion = p.T @ onehot
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    present = (predicted > 0) | (actual > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros(k), where=present)
    return {
        "expected_accuracy": float(correct.mean()),
        "expected_accuracy_std": float(np.sqrt((correct * (1.0 - correct)).sum()) / n),
        "expected_precision": float(precision[present].mean()),
        "expected_recall": float(recall[present].mean()),
        "expected_f1": float(f1[present].mean()),
    }
