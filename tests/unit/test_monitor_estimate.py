"""Label-free performance estimates (CBPE): right when calibrated, fixable by isotonic maps."""

from __future__ import annotations

import numpy as np
import pytest

from services.monitor.estimate import ConfidenceEstimate, IsotonicCalibrator


def _calibrated(n: int, seed: int, a: float = 0.6, b: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, n)
    return p, (rng.random(n) < p).astype(np.int64)


def _values(estimate: dict[str, float | None]) -> dict[str, float]:
    assert all(v is not None for v in estimate.values())
    return {k: float(v) for k, v in estimate.items() if v is not None}


def test_expected_accuracy_matches_the_realised_accuracy_when_calibrated() -> None:
    for seed in range(5):
        p, y = _calibrated(20_000, seed)
        est = ConfidenceEstimate(capacity=10_000)
        est.add(p[:10_000])
        est.add(p[10_000:])  # the window keeps the last 10,000
        e = _values(est.estimate())
        pred = p[10_000:] > 0.5
        truth = y[10_000:] == 1
        accuracy = float((pred == truth).mean())
        assert e["n"] == 10_000
        assert abs(e["expected_accuracy"] - accuracy) < 4 * e["expected_accuracy_std"]
        tp = (pred & truth).sum()
        assert e["expected_precision"] == pytest.approx(tp / pred.sum(), abs=0.02)
        assert e["expected_recall"] == pytest.approx(tp / truth.sum(), abs=0.02)
        assert e["expected_f1"] == pytest.approx(2 * tp / (pred.sum() + truth.sum()), abs=0.02)


def test_a_drop_shows_before_the_labels_when_inputs_move_the_scores() -> None:
    sharp, _ = _calibrated(5000, 1, a=0.2, b=0.2)  # confident: accurate
    vague, _ = _calibrated(5000, 2, a=5.0, b=5.0)  # scores near 0.5: a coin toss
    est = ConfidenceEstimate(capacity=5000)
    est.add(sharp)
    before = est.estimate()["expected_accuracy"]
    est.add(vague)
    after = est.estimate()["expected_accuracy"]
    assert before > 0.85 and after < 0.65  # type: ignore[operator]


def test_isotonic_calibration_repairs_overconfident_scores() -> None:
    p, y = _calibrated(40_000, 3)
    raw = np.where(p > 0.5, 1 - (1 - p) ** 3, p**3)  # same ranking and labels, overconfident
    calibrator = IsotonicCalibrator.fit(raw[:20_000], y[:20_000])  # the "holdout"
    live_raw, live_y = raw[20_000:], y[20_000:]
    accuracy = float(((live_raw > 0.5) == (live_y == 1)).mean())

    plain = ConfidenceEstimate(capacity=20_000)
    plain.add(live_raw)
    fixed = ConfidenceEstimate(capacity=20_000, calibrator=calibrator)
    fixed.add(live_raw)
    assert plain.estimate()["expected_accuracy"] - accuracy > 0.05  # type: ignore[operator]
    assert fixed.estimate()["expected_accuracy"] == pytest.approx(accuracy, abs=0.01)


def test_multiclass_expected_accuracy() -> None:
    rng = np.random.default_rng(4)
    proba = rng.dirichlet([0.5, 0.5, 0.5, 0.5], 20_000)
    u = rng.random(20_000)[:, None]
    y = (u > proba.cumsum(axis=1)).sum(axis=1)  # a draw from each row's distribution
    est = ConfidenceEstimate(capacity=20_000, classes=4)
    est.add(proba)
    e = _values(est.estimate())
    accuracy = float((proba.argmax(axis=1) == y).mean())
    assert abs(e["expected_accuracy"] - accuracy) < 4 * e["expected_accuracy_std"]
    assert 0 < e["expected_f1"] < 1


def test_an_empty_window_estimates_nothing() -> None:
    e = ConfidenceEstimate(capacity=10).estimate()
    assert e["n"] == 0 and e["expected_accuracy"] is None
    with pytest.raises(ValueError):
        ConfidenceEstimate(
            capacity=10,
            classes=3,
            calibrator=IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0])),
        )
