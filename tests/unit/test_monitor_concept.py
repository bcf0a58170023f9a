"""Concept drift on the error stream: ADWIN (river) and the Bernoulli CUSUM."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from services.monitor.concept import (
    ADWINDetector,
    BernoulliCUSUM,
    ConceptDriftDetector,
    design_bernoulli_cusum,
    monitor_detector,
)


def _run(detector: ConceptDriftDetector, errors: np.ndarray, batch: int = 500) -> list[int]:
    signals: list[int] = []
    for i in range(0, errors.size, batch):
        signals += [i + j for j in detector.update_many(errors[i : i + batch])]
    return signals


DETECTORS: dict[str, Callable[[], ConceptDriftDetector]] = {
    "adwin": lambda: ADWINDetector(),
    "cusum": lambda: BernoulliCUSUM(arl0=1e7),
    "monitor": lambda: monitor_detector(1e7),
}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_a_sudden_error_rate_jump_is_detected(name: str) -> None:
    delays = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        errors = np.r_[rng.random(5000) < 0.05, rng.random(2000) < 0.3]
        signals = _run(DETECTORS[name](), errors)
        assert signals and signals[0] >= 5000, "a signal before the change"
        delays.append(signals[0] - 5000)
    assert np.median(delays) < 150
    assert max(delays) < 300


@pytest.mark.parametrize("name", list(DETECTORS))
def test_a_stationary_stream_raises_nothing(name: str) -> None:
    rng = np.random.default_rng(42)
    errors = rng.random(100_000) < 0.05
    assert _run(DETECTORS[name](), errors, batch=2000) == []


def test_the_cusum_design_meets_its_run_length_by_simulation() -> None:
    design = design_bernoulli_cusum(0.1, 0.2, arl0=500)
    assert design.arl(0.1) >= 500 > design_bernoulli_cusum(0.1, 0.2, arl0=400).arl(0.1) * 0.9
    assert design.arl(0.2) < 60  # the tuned change is caught fast
    det = BernoulliCUSUM(arl0=500, p0=0.1, odds_ratio=0.2 / 0.8 / (0.1 / 0.9), rewarm=False)
    rng = np.random.default_rng(0)
    n = 2_000_000
    signals = det.update_many(rng.random(n) < 0.1)
    # Run lengths are ~geometric: 4,000 of them estimate the mean within a few percent.
    assert np.mean(np.diff([-1, *signals])) == pytest.approx(design.arl(0.1), rel=0.06)


def test_the_cusum_does_not_depend_on_batch_boundaries() -> None:
    rng = np.random.default_rng(1)
    errors = np.r_[rng.random(30_000) < 0.1, rng.random(3_000) < 0.25, rng.random(30_000) < 0.1]
    whole = BernoulliCUSUM(arl0=1e5).update_many(errors)
    assert whole and _run(BernoulliCUSUM(arl0=1e5), errors, batch=77) == whole


def test_the_cusum_learns_its_in_control_rate_and_relearns_after_a_signal() -> None:
    det = BernoulliCUSUM(arl0=1e6, warmup=1000)
    rng = np.random.default_rng(2)
    assert det.update_many(rng.random(999) < 0.2) == [] and det.design is None
    det.update_many(rng.random(1) < 0.2)
    assert det.design is not None and 0.18 < det.design.p0 < 0.25
    det.update_many(rng.random(20_000) < 0.2)  # refined at 2k, 4k, 8k and 16k events
    assert det.design.p0 == pytest.approx(0.2, abs=0.01)
    signals = det.update_many(rng.random(300) < 0.6)
    assert len(signals) == 1 and det.design is None  # re-learning the new error rate
    assert det.update_many(rng.random(5000) < 0.6) == []
    assert det.design is not None and det.design.p0 == pytest.approx(0.6, abs=0.03)
    det.reset()
    assert det.statistic == 0 and det.design is None


def test_adwin_can_ignore_improvements() -> None:
    rng = np.random.default_rng(3)
    better = np.r_[rng.random(5000) < 0.3, rng.random(5000) < 0.05]
    assert _run(ADWINDetector(), better)
    assert _run(ADWINDetector(increases_only=True), better) == []


def test_each_chart_of_a_multi_chart_cusum_gets_its_share_of_the_run_length() -> None:
    det = BernoulliCUSUM(arl0=1e5, odds_ratio=(1.5, 3.0, 30.0), p0=0.1)
    assert len(det.designs) == 3
    for design, ratio in zip(det.designs, (1.5, 3.0, 30.0), strict=True):
        assert 0.1 * 0.998 <= design.p0 <= 0.1 * 1.005  # p0 rounded (up) to the design grid
        odds = design.p1 / (1 - design.p1) / (design.p0 / (1 - design.p0))
        assert odds == pytest.approx(ratio, rel=1e-4)
        assert design.arl(0.1) >= 3e5  # Bonferroni: 3 charts, about 1e5 for the whole
    split = BernoulliCUSUM(arl0=1e5, odds_ratio=(1.5, 30.0), shares=(0.9, 0.1), p0=0.1)
    small, jump = split.designs
    assert 1e5 / 0.9 <= small.arl(small.p0) < 1.1 * 1e5 / 0.9
    assert jump.arl(jump.p0) >= 1e6
    with pytest.raises(ValueError):
        BernoulliCUSUM(odds_ratio=(1.5, 30.0), shares=(1.0,))


@pytest.mark.parametrize(("p0", "ratio", "arl0"),
                         [(0.001, 1.6, 1e5), (0.05, 4.0, 3e7), (0.105, 1.6, 2e6),
                          (0.3, 100.0, 1e4), (0.6, 1.6, 1e7)])
def test_the_design_is_the_smallest_limit_reaching_arl0(p0: float, ratio: float,
                                                        arl0: float) -> None:
    from services.monitor.concept import _arl

    odds = ratio * p0 / (1 - p0)
    d = design_bernoulli_cusum(p0, odds / (1 + odds), arl0)
    assert d.arl(p0) >= arl0 > _arl(d.up, d.down, d.limit - 1, p0)


def test_a_cautious_estimate_while_learning_then_the_plain_one() -> None:
    rng = np.random.default_rng(7)
    errors = rng.random(20_000) < 0.1
    cautious = BernoulliCUSUM(arl0=1e6, p0_quantile=0.5, learning_quantile=0.99)
    plain = BernoulliCUSUM(arl0=1e6, p0_quantile=0.5)
    cautious.update_many(errors[:1_000])
    plain.update_many(errors[:1_000])
    assert cautious.design is not None and plain.design is not None
    assert cautious.design.p0 > plain.design.p0 * 1.1  # 1,000 events: a rough estimate
    cautious.update_many(errors[1_000:])
    plain.update_many(errors[1_000:])
    assert cautious.design.p0 == plain.design.p0  # after the last refit (16,000 events)


def test_the_monitors_charts_catch_a_jump_sooner_and_a_moderate_rise_nearly_as_soon() -> None:
    """Against one chart tuned to odds x2 (the rise here is x1.7: that chart's best case)."""
    single, multi = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        small = np.r_[rng.random(20_000) < 0.1, rng.random(20_000) < 0.16]
        large = np.r_[rng.random(20_000) < 0.01, rng.random(2_000) < 0.5]
        for errors, out in ((small, single), (large, single)):
            out.append(_run(BernoulliCUSUM(arl0=1e7), errors, batch=250)[0] - 20_000)
        for errors, out in ((small, multi), (large, multi)):
            out.append(_run(monitor_detector(1e7), errors, batch=250)[0] - 20_000)
    assert min(single + multi) >= 0
    assert np.median(multi[0::2]) < 1.3 * np.median(single[0::2])  # the Bonferroni price
    assert np.median(multi[1::2]) < 0.8 * np.median(single[1::2])  # the x100 chart


def test_a_multi_chart_cusum_survives_a_checkpoint() -> None:
    rng = np.random.default_rng(3)
    det = monitor_detector(1e6)
    det.update_many(rng.random(5_000) < 0.1)
    twin = monitor_detector(1e6)
    twin.load(det.state())
    assert twin.statistics == det.statistics and twin.design == det.design
    tail = rng.random(20_000) < np.r_[np.full(10_000, 0.1), np.full(10_000, 0.2)]
    assert twin.update_many(tail) == det.update_many(tail) != []


def _first_delays(make: Callable[[], ConceptDriftDetector], p0: float, p1: float,
                  change_at: int, seeds: range) -> list[int]:
    """Events from the change to the first signal at or after it (a miss: 10**9)."""
    delays = []
    for seed in seeds:
        rng = np.random.default_rng([seed, 31])
        errors = np.r_[rng.random(change_at) < p0, rng.random(20_000) < p1]
        after = [s for s in _run(make(), errors, batch=250) if s >= change_at]
        delays.append(after[0] - change_at if after else 10**9)
    return delays


def test_a_holdout_prior_shortens_the_delay_at_the_same_arl0() -> None:
    # The card's holdout: 5,000 rows at the true rate. The change comes 3,000 events in, while
    # the chart without a prior tests against a cautious estimate from 2,000 events, and its
    # refit at 4,000 counts 1,000 changed events as in control (some changes go unseen).
    prior = (500.0, 5000.0)
    plain = _first_delays(lambda: monitor_detector(1e6), 0.1, 0.16, 3_000, range(40))
    seeded = _first_delays(lambda: monitor_detector(1e6, prior=prior), 0.1, 0.16, 3_000,
                           range(40))
    assert max(seeded) < 10**9  # every change caught
    assert np.median(seeded) < 0.8 * np.median(plain)
    # Monitoring starts at once: a jump within the first 1,000 events is caught (the chart
    # without a prior is still warming up then).
    early = _first_delays(lambda: monitor_detector(1e6, prior=prior), 0.1, 0.5, 200, range(10))
    assert max(early) < 200
    assert min(_first_delays(lambda: monitor_detector(1e6), 0.1, 0.5, 200, range(10))) >= 800


def test_a_holdout_prior_keeps_a_stationary_stream_quiet() -> None:
    rng = np.random.default_rng(42)
    errors = rng.random(100_000) < 0.05
    assert _run(monitor_detector(1e7, prior=(250.0, 5000.0)), errors, batch=2000) == []


def test_the_prior_is_refined_by_live_events_and_dropped_after_a_signal() -> None:
    det = BernoulliCUSUM(arl0=1e6, warmup=1000, prior=(1000.0, 5000.0))  # holdout: 20%
    assert det.design is not None and 0.2 < det.design.p0 < 0.22  # an upper quantile
    rng = np.random.default_rng(8)
    det.update_many(rng.random(20_000) < 0.2)
    assert det.design.p0 == pytest.approx(0.2, abs=0.01)
    assert len(det.update_many(rng.random(300) < 0.6)) == 1
    assert det.design is None  # the new concept is learned from live events alone
    det.update_many(rng.random(1000) < 0.6)
    assert det.design is not None and det.design.p0 > 0.55  # no pull towards the holdout's 20%
    det.reset()
    assert det.design is not None and det.design.p0 == BernoulliCUSUM(
        arl0=1e6, prior=(1000.0, 5000.0)).design.p0


def test_without_a_prior_the_detector_learns_as_before() -> None:
    # No card metrics: no design until the warm-up ends, then the 99% quantile of 1,000 events.
    from scipy import stats

    from services.monitor.concept import _on_grid

    rng = np.random.default_rng(9)
    errors = rng.random(1000) < 0.1
    det = monitor_detector(1e6, prior=None)
    assert det.prior is None and det.update_many(errors[:999]) == [] and det.design is None
    det.update_many(errors[999:])
    e = int(errors.sum())
    expected = _on_grid(float(stats.beta.ppf(0.99, e + 0.5, 1000 - e + 0.5)))
    assert det.design is not None and det.design.p0 == pytest.approx(expected, abs=1e-6)


def test_holdout_priors_come_from_the_card_metrics() -> None:
    from services.monitor.concept import holdout_prior

    assert holdout_prior({"accuracy": 0.8947, "holdout_rows": 5000.0}) == (526.0, 5000.0)
    assert holdout_prior({"accuracy": 0.9}) is None  # a card from before holdout_rows
    assert holdout_prior({"holdout_rows": 100.0}) is None
    assert holdout_prior({"accuracy": 0.9, "holdout_rows": 0.0}) is None
    with pytest.raises(ValueError, match="a prior is"):
        BernoulliCUSUM(prior=(6.0, 5.0))


def test_a_cusum_with_a_prior_survives_a_checkpoint() -> None:
    from services.monitor import checkpoint

    rng = np.random.default_rng(4)
    prior = (500.0, 5000.0)
    det = monitor_detector(1e6, prior=prior)
    det.update_many(rng.random(3_000) < 0.1)  # mid-way: the prior is still part of p0
    twin = monitor_detector(1e6, prior=prior)
    twin.load(checkpoint.decode(checkpoint.encode(det.state())))  # as the monitor stores it
    assert twin.statistics == det.statistics and twin.design == det.design
    tail = rng.random(40_000) < np.r_[np.full(10_000, 0.1), np.full(30_000, 0.2)]
    assert twin.update_many(tail) == det.update_many(tail) != []
    # After the signal the prior is out of use, in the checkpoint too.
    assert det.state()["prior"] is False
    again = monitor_detector(1e6, prior=prior)
    again.load(det.state())
    more = rng.random(20_000) < 0.2
    assert again.update_many(more) == det.update_many(more)
    assert again.design == det.design
    # A checkpoint from before priors existed learns from live events, as it did.
    old = {k: v for k, v in monitor_detector(1e6).state().items() if k != "prior"}
    restored = monitor_detector(1e6, prior=prior)
    restored.load(old)
    assert restored.design is None
