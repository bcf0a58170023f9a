"""Quality from labels over sliding windows, checked against scikit-learn and river."""

from __future__ import annotations

import numpy as np
import pytest
from river import metrics as rm
from sklearn import metrics as sk

from services.monitor.quality import QualityWindow, encode_labels, roc_auc


def _binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    # Rounded scores: plenty of ties for the rank-based AUC to average.
    score = np.round(np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1), 2)
    return y, (score > 0.5).astype(np.int64), score


def _ece(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> float:
    conf = np.where(pred == 1, score, 1 - score)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = (conf >= lo) & ((conf < hi) if b < 9 else (conf <= hi))
        if inside.any():
            total += inside.sum() * abs(conf[inside].mean() - (y == pred)[inside].mean())
    return total / len(y)


def test_binary_metrics_match_sklearn_over_the_last_capacity_events() -> None:
    y, pred, score = _binary(5000, seed=1)
    w = QualityWindow("binary", ["0", "1"], capacity=2000)
    for i in range(0, 5000, 700):
        end = min(i + 700, 5000)
        w.add(y[i:end], pred[i:end], score[i:end], np.arange(i, end))
    m = w.metrics()
    y, pred, score = y[-2000:], pred[-2000:], score[-2000:]
    assert m["n"] == 2000
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(sk.precision_score(y, pred))
    assert m["recall"] == pytest.approx(sk.recall_score(y, pred))
    assert m["f1"] == pytest.approx(sk.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, score), abs=1e-12)
    assert m["log_loss"] == pytest.approx(sk.log_loss(y, score, labels=[0, 1]))
    assert m["ece"] == pytest.approx(_ece(y, pred, score))


def test_labels_may_be_strings_and_the_positive_class_is_the_second() -> None:
    w = QualityWindow("binary", ["no", "yes"], capacity=10)
    w.add(np.array(["yes", "no", "yes"]), np.array(["yes", "yes", "no"]), np.array([0.9, 0.6, 0.2]))
    m = w.metrics()
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    assert encode_labels(np.array([1.0, np.nan]), ["a", "b"]).tolist() == [1, -1]


def test_a_single_class_window_has_no_auc_and_no_precision_without_positives() -> None:
    w = QualityWindow("binary", ["0", "1"], capacity=10)
    w.add(np.zeros(5, dtype=int), np.zeros(5, dtype=int), np.full(5, 0.1))
    m = w.metrics()
    assert m["roc_auc"] is None and m["precision"] is None and m["recall"] is None
    assert m["accuracy"] == 1.0
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    empty = QualityWindow("binary", ["0", "1"], capacity=10).metrics()
    assert empty["n"] == 0 and empty["accuracy"] is None


def test_the_time_window_drops_events_older_than_max_age() -> None:
    w = QualityWindow("binary", ["0", "1"], capacity=100, max_age_s=10)
    w.add(np.array([1, 1]), np.array([0, 0]), np.array([0.2, 0.3]), np.array([0, 1_000]))
    w.add(np.array([1, 0]), np.array([1, 0]), np.array([0.8, 0.1]), np.array([12_000, 12_500]))
    m = w.metrics()
    assert m["n"] == 2 and m["accuracy"] == 1.0  # the two at 0 s and 1 s are > 10 s old
    assert w.span() == (12_000, 12_500)
    assert w.metrics(now_ms=10_500)["n"] == 3
    with pytest.raises(ValueError):
        w.add(np.array([1]), np.array([1]), np.array([0.5]))


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([1.0, 1.0, 1.0], 3000)
    y = np.array([rng.choice(3, p=p) for p in proba])
    pred = proba.argmax(axis=1)
    w = QualityWindow("multiclass", ["a", "b", "c"], capacity=3000)
    w.add(y, pred, proba, np.zeros(3000))
    m = w.metrics()
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    for name, fn in [
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1", sk.f1_score),
    ]:
        assert m[name] == pytest.approx(fn(y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(sk.log_loss(y, proba))
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, proba, multi_class="ovr"))


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(10, 3, 4000)
    pred = y + rng.normal(0, 1, 4000)
    w = QualityWindow("regression", [], capacity=2500)
    w.add(y, pred, ts=np.arange(4000))
    m = w.metrics()
    y, pred = y[-2500:], pred[-2500:]
    assert m["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, pred)))
    assert m["r2"] == pytest.approx(sk.r2_score(y, pred))


def test_metrics_agree_with_river_on_a_whole_stream() -> None:
    y, pred, score = _binary(3000, seed=4)
    w = QualityWindow("binary", ["0", "1"], capacity=3000)
    w.add(y, pred, score)
    reference = {"accuracy": rm.Accuracy(), "f1": rm.F1(), "log_loss": rm.LogLoss()}
    for yt, yp, s in zip(y.tolist(), pred.tolist(), score.tolist(), strict=True):
        reference["accuracy"].update(yt, yp)
        reference["f1"].update(bool(yt), bool(yp))
        reference["log_loss"].update(bool(yt), {True: s, False: 1 - s})
    m = w.metrics()
    for name, metric in reference.items():
        assert m[name] == pytest.approx(metric.get(), rel=1e-6), name

    rng = np.random.default_rng(5)
    truth = rng.normal(size=2000)
    guess = truth + rng.normal(scale=0.5, size=2000)
    reg = QualityWindow("regression", [], capacity=2000)
    reg.add(truth, guess)
    river_reg: dict[str, rm.base.RegressionMetric] = {
        "mae": rm.MAE(),
        "rmse": rm.RMSE(),
        "r2": rm.R2(),
    }
    for t, g in zip(truth.tolist(), guess.tolist(), strict=True):
        for regression in river_reg.values():
            regression.update(t, g)
    mr = reg.metrics()
    for name, regression in river_reg.items():
        assert mr[name] == pytest.approx(regression.get(), rel=1e-9), name
