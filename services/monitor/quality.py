"""Model quality from labeled predictions over a sliding window, by count and by time.

``QualityWindow`` keeps the last ``capacity`` labeled predictions of one model version in numpy
rings (true label, predicted label, score, timestamp); ``add`` is O(batch). ``metrics()``
computes everything over the events that are both among the last ``capacity`` and no older
than ``max_age_s`` before ``now_ms`` (default: the newest timestamp seen), so a time window is a
count window with old events masked out: set a large capacity for a pure time window, bounded
memory either way. Timestamps are epoch milliseconds (e.g. the outcome time).

Labels are codes, index-aligned with ``labels`` (the card's labels); strings are encoded.

Metrics, as ``{name: float | None}`` (None when undefined on the window, e.g. AUC of a window
holding a single class, or precision with no predicted positives):

- classification: ``accuracy``, ``precision``, ``recall``, ``f1`` (binary: of the positive class
  ``labels[1]``; multiclass: macro averages over the classes present in truth or prediction, as
  scikit-learn does), ``roc_auc`` (rank-based Mann-Whitney, ties averaged; multiclass:
  one-vs-rest macro, needs the probability matrix), ``log_loss`` (probabilities clipped to
  [1e-15, 1 - 1e-15]), ``ece`` (expected calibration error of the predicted label's
  confidence, 10 equal-width bins, Guo et al. 2017);
- regression: ``mae``, ``rmse``, ``r2``;
- always ``n``, the number of events the metrics were computed on.

Scores: binary, P(``labels[1]``) per event; multiclass, the ``(n, K)`` probability matrix (or
the top probability, which leaves ``roc_auc`` and ``log_loss`` undefined); regression: unused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..models.card import Task
from .ring import RingBuffer

__all__ = ["CLIP", "ECE_BINS", "QualityWindow", "encode_labels", "roc_auc"]

CLIP = 1e-15
ECE_BINS = 10


def encode_labels(values: np.ndarray | Sequence[object], labels: Sequence[str]) -> np.ndarray:
    """Label strings to their index in ``labels`` (-1 if none); integers are already codes.

    >>> encode_labels(np.array(["1", "0", "x"]), ["0", "1"]).tolist()
    [1, 0, -1]
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return np.where(np.isnan(arr), -1, arr).astype(np.int64)
    names = np.asarray(labels, dtype=str)
    order = np.argsort(names)
    text = arr.astype(str)
    idx = np.minimum(np.searchsorted(names[order], text), len(names) - 1)
    return np.where(names[order][idx] == text, order[idx], -1).astype(np.int64)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of binary ``y`` (1 = positive) by rank sums; None if one class.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(y).astype(bool)
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    # Average ranks over ties: each run of equal scores gets the mean of its positions.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.repeat(run_rank, ends - starts)
    rank_sum = ranks[y[order]].sum()
    return float((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg))


class QualityWindow:
    """Labeled predictions of one model version, and their quality metrics.

    >>> w = QualityWindow("binary", ["0", "1"], capacity=4)
    >>> w.add(np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 1]),
    ...       np.array([.2, .9, .4, .3, .8]), np.arange(5) * 1000)
    >>> m = w.metrics()
    >>> m["n"], m["accuracy"], m["recall"], m["roc_auc"]
    (4.0, 0.75, 0.6666666666666666, 1.0)
    """

    def __init__(
        self,
        task: Task,
        labels: Sequence[str],
        capacity: int,
        max_age_s: float | None = None,
    ) -> None:
        self.task = task
        self.labels = list(labels)
        self.capacity = capacity
        self.max_age_ms = None if max_age_s is None else int(max_age_s * 1000)
        label_dtype = np.float64 if task == "regression" else np.int32
        columns: dict[str, tuple[object, ...]] = {
            "y_true": (label_dtype, 0),
            "y_pred": (label_dtype, 0),
            "ts": (np.int64, 0),
        }
        if task == "binary":
            columns["score"] = (np.float64, np.nan)
        elif task == "multiclass":
            columns["score"] = (np.float64, np.nan, len(self.labels))
        self._ring = RingBuffer(capacity, columns)
        self._newest_ms: int | None = None

    def __len__(self) -> int:
        return len(self._ring)

    def add(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        score: np.ndarray | None = None,
        ts: np.ndarray | None = None,
    ) -> None:
        """Append a batch: labels (codes or strings; values for regression), scores, times (ms)."""
        n = len(y_true)
        if n == 0:
            return
        if ts is None:
            if self.max_age_ms is not None:
                raise ValueError("a time-bounded window needs the timestamps")
            ts = np.zeros(n, dtype=np.int64)
        cols: dict[str, np.ndarray] = {"ts": np.asarray(ts, dtype=np.int64)}
        if self.task == "regression":
            cols["y_true"] = np.asarray(y_true, dtype=np.float64)
            cols["y_pred"] = np.asarray(y_pred, dtype=np.float64)
        else:
            cols["y_true"] = encode_labels(y_true, self.labels)
            cols["y_pred"] = encode_labels(y_pred, self.labels)
            k = len(self.labels)
            if self.task == "binary":
                s = np.full(n, np.nan) if score is None else np.asarray(score, dtype=np.float64)
            else:
                s = np.full((n, k), np.nan)
                if score is not None:
                    raw = np.asarray(score, dtype=np.float64)
                    if raw.ndim == 2:
                        s = raw
                    else:  # top probability only: keep it as the predicted label's column
                        s[np.arange(n), np.clip(cols["y_pred"], 0, k - 1)] = raw
            cols["score"] = s
        self._ring.push(**cols)
        newest = int(cols["ts"].max())
        self._newest_ms = newest if self._newest_ms is None else max(self._newest_ms, newest)

    def _mask(self, now_ms: int | None) -> np.ndarray:
        ts = self._ring.view("ts")
        if self.max_age_ms is None or (now_ms is None and self._newest_ms is None):
            return np.ones(ts.size, dtype=bool)
        now = now_ms if now_ms is not None else self._newest_ms
        assert now is not None  # checked above
        return ts >= now - self.max_age_ms

    def span(self, now_ms: int | None = None) -> tuple[int, int] | None:
        """``(oldest, newest)`` timestamp of the events in the window, or None if empty."""
        ts = self._ring.view("ts")[self._mask(now_ms)]
        return (int(ts.min()), int(ts.max())) if ts.size else None

    def metrics(self, now_ms: int | None = None) -> dict[str, float | None]:
        """Every metric of the task over the window (see the module docstring)."""
        mask = self._mask(now_ms)
        y = self._ring.view("y_true")[mask]
        p = self._ring.view("y_pred")[mask]
        out: dict[str, float | None] = {"n": float(y.size)}
        if self.task == "regression":
            return out | _regression(y, p)
        s = self._ring.view("score")[mask]
        out |= _labels(y, p, len(self.labels), binary=self.task == "binary")
        if self.task == "binary":
            return out | _binary_scores(y, p, s)
        return out | _multiclass_scores(y, p, s)

    def reset(self) -> None:
        self._ring.clear()
        self._newest_ms = None

    def state(self) -> dict[str, Any]:
        """Plain data (numpy arrays inside) for a checkpoint."""
        return {"ring": self._ring.state(), "newest_ms": self._newest_ms}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned, for the same task, labels and capacity."""
        self._ring.load(state["ring"])
        self._newest_ms = state["newest_ms"]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _labels(y: np.ndarray, p: np.ndarray, k: int, binary: bool) -> dict[str, float | None]:
    if y.size == 0:
        return dict.fromkeys(("accuracy", "precision", "recall", "f1"))
    out: dict[str, float | None] = {"accuracy": float(((y == p) & (y >= 0)).mean())}
    valid = (y >= 0) & (p >= 0)  # unknown labels count as errors but have no confusion cell
    confusion = np.bincount(y[valid] * k + p[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    if binary:
        out["precision"] = _ratio(tp[1], predicted[1])
        out["recall"] = _ratio(tp[1], actual[1])
        out["f1"] = _ratio(2 * tp[1], predicted[1] + actual[1])
        return out
    present = (predicted + actual) > 0
    # Macro averages as scikit-learn computes them: an undefined per-class ratio counts as 0.
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros(k), where=present)
    out["precision"] = float(precision[present].mean())
    out["recall"] = float(recall[present].mean())
    out["f1"] = float(f1[present].mean())
    return out


def _ece(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    if confidence.size == 0:
        return None
    bins = np.minimum((confidence * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    conf = np.bincount(bins, weights=confidence, minlength=ECE_BINS)
    hits = np.bincount(bins, weights=correct.astype(np.float64), minlength=ECE_BINS)
    return float(np.abs(conf - hits).sum() / confidence.size)


def _binary_scores(y: np.ndarray, p: np.ndarray, s: np.ndarray) -> dict[str, float | None]:
    ok = ~np.isnan(s) & (y >= 0)
    y, p, s = y[ok], p[ok], s[ok]
    if y.size == 0:
        return dict.fromkeys(("roc_auc", "log_loss", "ece"))
    positive = y == 1
    clipped = np.clip(s, CLIP, 1.0 - CLIP)
    log_loss = -float(np.where(positive, np.log(clipped), np.log1p(-clipped)).mean())
    confidence = np.where(p == 1, s, 1.0 - s)
    return {
        "roc_auc": roc_auc(positive, s),
        "log_loss": log_loss,
        "ece": _ece(confidence, y == p),
    }


def _multiclass_scores(y: np.ndarray, p: np.ndarray, s: np.ndarray) -> dict[str, float | None]:
    k = s.shape[1]
    rows = np.arange(y.size)
    confidence = s[rows, np.clip(p, 0, k - 1)]
    has = ~np.isnan(confidence)
    out: dict[str, float | None] = {"ece": _ece(confidence[has], (y == p)[has])}
    full = ~np.isnan(s).any(axis=1) & (y >= 0)
    if not full.any():
        return out | {"roc_auc": None, "log_loss": None}
    yf, sf = y[full], s[full]
    sf = sf / sf.sum(axis=1, keepdims=True)  # as scikit-learn's log_loss renormalises
    truth = np.clip(sf[np.arange(yf.size), yf], CLIP, 1.0 - CLIP)
    out["log_loss"] = -float(np.log(truth).mean())
    aucs = [roc_auc(yf == c, sf[:, c]) for c in range(k)]
    defined = [a for a in aucs if a is not None]
    out["roc_auc"] = float(np.mean(defined)) if len(defined) == k else None
    return out


def _regression(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    if y.size == 0:
        return dict.fromkeys(("mae", "rmse", "r2"))
    err = y - p
    sse = float(err @ err)
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt(sse / y.size)),
        "r2": 1.0 - sse / sst if sst > 0 else None,
    }
