"""Data and prediction drift: the statistics against scipy, calibration, and detection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import spatial, special, stats

from services.models.agrawal import AGRAWAL_FEATURES
from services.models.card import CategoricalProfile, FeatureSpec, NumericProfile, ReferenceProfile
from services.models.profile import build_reference_profile, categorical_profile, numeric_profile
from services.monitor.drift import (
    DriftDetector,
    FalseAlarmBudget,
    FeatureDriftWindow,
    calibrated_threshold,
)


def _agrawal_x(n: int, rng: np.random.Generator) -> np.ndarray:
    """The feature distribution of river's Agrawal generator, vectorised (see its __iter__)."""
    salary = 20_000 + 130_000 * rng.random(n)
    commission = np.where(salary >= 75_000, 0.0, 10_000 + 75_000 * rng.random(n))
    zipcode = rng.integers(0, 9, n)
    return np.column_stack(
        [
            salary,
            commission,
            rng.integers(20, 81, n),
            rng.integers(0, 5, n),
            rng.integers(1, 21, n),
            zipcode,
            (8 - zipcode) * 100_000 * (0.5 + rng.random(n)),
            rng.integers(1, 31, n),
            500_000 * rng.random(n),
        ]
    ).astype(np.float64)


def _score(x: np.ndarray) -> np.ndarray:
    """A stand-in classifier score: sharp, like the demo model's, with mass near 0 and 1."""
    z = (x[:, 0] - 80_000) / 5_000 - (x[:, 2] - 50) / 3
    return special.expit(z)


def _profile(x: np.ndarray) -> ReferenceProfile:
    return build_reference_profile(x, AGRAWAL_FEATURES, _score(x), labels=["0", "1"])


# --- the statistics, against scipy -------------------------------------------------------------


def test_numeric_statistics_match_scipy() -> None:
    # Values sit on integers and the edges between them, so the binned KS is the exact one.
    reference = np.repeat([0.0, 1.0, 2.0, 3.0], [100, 300, 400, 200])
    profile = NumericProfile(
        count=1000,
        edges=[0.5, 1.5, 2.5],
        proportions=[0.1, 0.3, 0.4, 0.2],
        mean=1.7,
        std=0.9,
        min=0.0,
        max=3.0,
    )
    live = np.repeat([0.0, 1.0, 2.0, 3.0], [10, 20, 50, 20])
    w = FeatureDriftWindow(profile, capacity=100, eps=1e-4)
    w.add(live)
    s = w.stats()

    k = 4
    p = (np.array([0.1, 0.3, 0.4, 0.2]) + 1e-4) / (1 + k * 1e-4)
    q = (np.array([0.1, 0.2, 0.5, 0.2]) + 1e-4) / (1 + k * 1e-4)
    psi = special.rel_entr(q, p).sum() + special.rel_entr(p, q).sum()
    assert s["psi"] == pytest.approx(psi, rel=1e-12)
    assert s["js"] == pytest.approx(spatial.distance.jensenshannon(p, q, base=2), rel=1e-9)
    ks = stats.ks_2samp(live, reference)
    assert s["ks"] == pytest.approx(ks.statistic, abs=1e-12)
    # Binned KS on 4 support points: both p-values are asymptotic; they agree loosely.
    assert s["ks_pvalue"] == pytest.approx(
        stats.ks_2samp(live, reference, method="asymp").pvalue, rel=0.25
    )
    assert s["missing_rate"] == 0.0 and s["out_of_range_rate"] == 0.0 and s["n"] == 100


def test_categorical_statistics_match_scipy() -> None:
    profile = categorical_profile(
        np.repeat([1.0, 2.0, 3.0], [500, 300, 200]), [1, 2, 3], [1.0, 2.0, 3.0]
    )
    live = np.repeat([1.0, 2.0, 3.0, 9.0, np.nan], [40, 35, 15, 5, 5])
    w = FeatureDriftWindow(profile, capacity=100)
    w.add(live)
    s = w.stats()
    eps = 1e-4
    p = (np.array([0.5, 0.3, 0.2, 0.0]) + eps) / (1 + 4 * eps)
    observed = np.array([40, 35, 15, 5])
    chi2 = stats.chisquare(observed, p * observed.sum())
    assert s["chi2"] == pytest.approx(chi2.statistic, rel=1e-12)
    assert s["chi2_pvalue"] == pytest.approx(chi2.pvalue, rel=1e-9)
    q = (observed / observed.sum() + eps) / (1 + 4 * eps)
    assert s["js"] == pytest.approx(spatial.distance.jensenshannon(p, q, base=2), rel=1e-9)
    assert s["psi"] == pytest.approx((special.rel_entr(q, p) + special.rel_entr(p, q)).sum())
    assert s["new_category_rate"] == pytest.approx(0.05)
    assert s["missing_rate"] == pytest.approx(0.05)


def test_string_categories_are_matched_by_their_code() -> None:
    spec = FeatureSpec(name="colour", type="category", categories=["red", "green"])
    profile = CategoricalProfile(count=10, categories=["red", "green"], proportions=[0.5, 0.5])
    w = FeatureDriftWindow(profile, capacity=10, spec=spec)
    w.add(np.array([0.0, 1.0, 1.0, 2.0]))  # codes: red, green, green, unseen
    cells, missing, unseen = w.counts()
    assert cells.tolist() == [1, 2, 1] and missing == 0 and unseen == 1


def test_window_counts_equal_the_bin_counts_of_its_last_values() -> None:
    rng = np.random.default_rng(3)
    profile = numeric_profile(rng.normal(size=5000))
    spec = FeatureSpec(name="x", type="float", min=-2.0, max=2.0)
    w = FeatureDriftWindow(profile, capacity=700, spec=spec)
    seen: list[np.ndarray] = []
    for size in [1, 50, 699, 700, 1500, 3, 0, 250]:
        batch = rng.normal(size=size)
        batch[rng.random(size) < 0.1] = np.nan
        w.add(batch)
        seen.append(batch)
        last = np.concatenate(seen)[-700:]
        cells, missing, out = w.counts()
        assert cells.tolist() == profile.bin_counts(last).tolist()
        assert missing == int(np.isnan(last).sum())
        assert out == int((np.abs(last) > 2.0).sum())
        assert w.n == len(last)


# --- calibration --------------------------------------------------------------------------------


def test_extrapolated_threshold_agrees_with_the_chi2_quantile() -> None:
    # A huge reference makes the null one-sample, where chi2 is chi-square(K - 1) asymptotically.
    profile = CategoricalProfile(count=10**9, categories=[0, 1, 2, 3, 4], proportions=[0.2] * 5)
    n = 20_000
    unseen_cell = n * 1e-4 / (1 + 6 * 1e-4)  # the empty unseen cell's constant contribution
    for alpha in (1e-2, 1e-3, 1e-5):  # the last is beyond 20,000 replicates: extrapolated
        exact = stats.chi2.isf(alpha, 4) + unseen_cell
        assert calibrated_threshold(profile, n, "chi2", alpha) == pytest.approx(exact, rel=0.06)


def test_rate_thresholds_are_binomial_quantiles() -> None:
    profile = numeric_profile(np.r_[np.arange(950.0), [np.nan] * 50])
    t = calibrated_threshold(profile, 1000, "missing_rate", 1e-3)
    assert t * 1000 == stats.binom.isf(1e-3, 1000, 0.05)
    assert calibrated_threshold(profile, 1000, "out_of_range_rate", 1e-3) == 0.0
    with pytest.raises(ValueError):
        calibrated_threshold(profile, 1000, "chi2", 1e-3)


def test_false_alarm_rate_of_one_test_is_near_alpha() -> None:
    """Tumbling windows of unchanged data, each reference itself a sample: rate ≈ alpha."""
    alpha, n, windows = 0.02, 1000, 150
    alarms = {
        "numeric.psi": 0,
        "numeric.js": 0,
        "numeric.ks": 0,
        "categorical.psi": 0,
        "categorical.chi2": 0,
    }
    for seed in range(12):
        rng = np.random.default_rng(seed)
        numeric = numeric_profile(rng.normal(size=15_000))
        codes = np.arange(8.0)
        mix = rng.dirichlet(np.full(8, 5.0))
        categorical = categorical_profile(
            rng.choice(codes, 15_000, p=mix), list(range(8)), codes.tolist()
        )
        for profile, data in (
            (numeric, rng.normal(size=(windows, n))),
            (categorical, rng.choice(codes, (windows, n), p=mix)),
        ):
            w = FeatureDriftWindow(profile, capacity=n)
            names = ("psi", "js", "ks") if isinstance(profile, NumericProfile) else ("psi", "chi2")
            limits = {s: calibrated_threshold(profile, n, s, alpha) for s in names}
            for row in data:
                w.add(row)
                s = w.stats()
                for name in names:
                    alarms[f"{profile.kind}.{name}"] += s[name] > limits[name]  # type: ignore[operator]
    total = 12 * windows
    for name, count in alarms.items():
        assert 0.5 * alpha < count / total < 1.6 * alpha, (name, count / total)


def test_an_unchanged_stream_raises_no_drift() -> None:
    rng = np.random.default_rng(11)
    reference = _profile(_agrawal_x(15_000, rng))
    det = DriftDetector(
        reference,
        2000,
        specs=AGRAWAL_FEATURES,
        score_bounds=(0.0, 1.0),
        budget=FalseAlarmBudget(arl0_windows=1000),
    )
    assert len(det.tests) == 9 * 5 + 3
    drifted = []
    for _ in range(150):  # 150,000 events, evaluated every 1,000 (75 independent windows)
        x = _agrawal_x(1000, rng)
        det.add(x, _score(x))
        drifted += [f for f in det.evaluate() if f.drifted]
    assert drifted == []


# --- detection ----------------------------------------------------------------------------------


def _synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack([rng.normal(size=n), rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])])


_SPECS = [
    FeatureSpec(name="g", type="float"),
    FeatureSpec(name="c", type="category", categories=[0, 1, 2, 3]),
]


def _delay(change: object, capacity: int = 2000, seed: int = 0) -> tuple[int | None, set[str]]:
    """Events after the change until a drift finding, with a full unchanged window before it."""
    rng = np.random.default_rng(seed)
    reference = build_reference_profile(_synthetic(rng, 20_000), _SPECS, rng.random(20_000))
    det = DriftDetector(reference, capacity, specs=_SPECS)
    det.add(_synthetic(rng, capacity))
    assert not [f for f in det.evaluate() if f.drifted]
    for i in range(0, 2 * capacity, 100):
        det.add(change(_synthetic(rng, 100)))  # type: ignore[operator]
        found = [f for f in det.evaluate() if f.drifted]
        if found:
            return i + 100, {f"{f.feature}.{f.statistic}" for f in found}
    return None, set()


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_a_mean_shift_is_detected(sigma: float) -> None:
    def shift(x: np.ndarray) -> np.ndarray:
        x[:, 0] += sigma
        return x

    delay, found = _delay(shift)
    assert delay is not None and delay <= 1000
    assert found and all(f.startswith("g.") for f in found)


def test_a_new_category_at_5_percent_is_detected() -> None:
    def new_category(x: np.ndarray) -> np.ndarray:
        x[np.random.default_rng(len(x)).random(len(x)) < 0.05, 1] = 7.0
        return x

    delay, found = _delay(new_category)
    assert delay is not None and delay <= 2000
    assert "c.new_category_rate" in found or "c.chi2" in found


def test_ten_percent_missing_values_are_detected() -> None:
    def missing(x: np.ndarray) -> np.ndarray:
        x[np.random.default_rng(len(x) + 1).random(len(x)) < 0.10, 0] = np.nan
        return x

    delay, found = _delay(missing)
    assert delay is not None and delay <= 2000
    assert "g.missing_rate" in found


def test_prediction_drift_is_measured_on_the_score() -> None:
    rng = np.random.default_rng(5)
    x = _agrawal_x(15_000, rng)
    det = DriftDetector(_profile(x), 2000, specs=AGRAWAL_FEATURES, score_bounds=(0.0, 1.0))
    live = _agrawal_x(2000, rng)
    det.add(live, np.clip(_score(live) + 0.2, 0, 1))  # the same inputs, a shifted score
    found = {(f.feature, f.statistic) for f in det.evaluate() if f.drifted}
    assert (None, "psi") in found
    assert all(feature is None for feature, _ in found)
