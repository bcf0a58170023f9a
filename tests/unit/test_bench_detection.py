"""The pure logic of bench.detection: delays, quantiles with misses, calibration, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.detection import _faster, _summary
from bench.detection_detectors import (
    DetectorSpec,
    always_signals,
    calibrate_period,
    detection_delay,
    first_detection,
    hddm_a_signals,
    periodic_signals,
    quantile,
    run_detector,
)
from bench.detection_streams import concept_labels


@pytest.mark.parametrize(
    ("index", "batch", "label_delay", "expected"),
    [
        (20_000, 250, 0, 250),  # the first event after the change: its batch ends 250 later
        (20_249, 250, 0, 250),  # the same batch
        (20_250, 250, 0, 500),  # the next one
        (20_010, 250, 500, 750),  # labels 500 events late
        (20_000, 1, 0, 1),
    ],
)
def test_detection_delay_is_counted_at_batch_end_plus_label_delay(
    index: int, batch: int, label_delay: int, expected: int
) -> None:
    assert detection_delay(index, 20_000, batch, label_delay) == expected


def test_first_detection_skips_and_counts_pre_change_alarms() -> None:
    delay, exact, pre = first_detection([5, 19_999, 20_300, 21_000], 20_000, batch=250,
                                        label_delay=500)
    assert (delay, exact, pre) == (1_000, 801, 2)


def test_first_detection_misses_when_none_or_past_the_horizon() -> None:
    assert first_detection([], 100, batch=10) == (None, None, 0)
    assert first_detection([50], 100, batch=10) == (None, None, 1)
    assert first_detection([1_195], 100, batch=10, horizon=1_000) == (None, None, 0)
    assert first_detection([1_085], 100, batch=10, horizon=1_000)[0] == 990


def test_quantile_treats_misses_as_infinite() -> None:
    assert quantile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, math.inf], 0.5) == 2.0
    assert quantile([1.0, math.inf, math.inf], 0.5) == math.inf
    assert quantile([10.0] * 9 + [math.inf], 0.9) == math.inf
    assert quantile([10.0] * 10, 0.9) == 10.0
    assert math.isnan(quantile([], 0.5))


def _alarms(lengths: list[int], phases: list[float], period: int) -> int:
    return sum(len(periodic_signals(n, period, u)) for n, u in zip(lengths, phases, strict=True))


@pytest.mark.parametrize("allowed", [0, 1, 3, 10, 57])
def test_calibrate_period_is_the_shortest_period_within_budget(allowed: int) -> None:
    rng = np.random.default_rng(allowed)
    lengths = [int(v) for v in rng.integers(500, 5_000, size=6)]
    phases = [float(v) for v in rng.random(6)]
    period = calibrate_period(lengths, phases, allowed)
    assert _alarms(lengths, phases, period) <= allowed
    assert period == 1 or _alarms(lengths, phases, period - 1) > allowed


def test_calibrate_period_never_fires_on_a_zero_budget() -> None:
    period = calibrate_period([1_000, 1_000], [0.25, 0.9], 0)
    assert _alarms([1_000, 1_000], [0.25, 0.9], period) == 0


def test_periodic_and_always_fire_signals() -> None:
    assert periodic_signals(20, 5, 0.0).tolist() == [0, 5, 10, 15]
    assert always_signals(1_000, 250).tolist() == [249, 499, 749, 999]
    assert run_detector(DetectorSpec("always"), np.zeros(600, bool), 250).tolist() == [
        249, 499, 599]


@pytest.mark.parametrize("confidence", [0.001, 0.05, 0.4])
def test_vectorised_hddm_a_signals_as_river_does(confidence: float) -> None:
    rng = np.random.default_rng(3)
    e = np.r_[rng.random(3_000) < 0.1, rng.random(3_000) < 0.25]
    river = run_detector(DetectorSpec("hddm", confidence), e, 250).tolist()
    assert hddm_a_signals(e, confidence) == river
    assert hddm_a_signals(e, confidence, chunk=97) == river  # state carried across chunks


def test_concept_labels_ramp_from_old_to_new() -> None:
    old, new = np.zeros(10_000, int), np.ones(10_000, int)
    y = concept_labels(old, new, 2_000, 1_000, seed=0)
    assert y[:2_000].sum() == 0 and y[3_000:].all()
    assert 350 < y[2_000:3_000].sum() < 650  # about half, on average, over the ramp
    assert concept_labels(old, new, 2_000, 0, seed=0).tolist() == [0] * 2_000 + [1] * 8_000


def test_delays_are_compared_at_event_resolution() -> None:
    def s(delays: list[int | None], exact: list[int | None]) -> dict[str, object]:
        return _summary(delays, exact, 0, 5_000.0)

    a, b = s([750, 750, 1_000], [560, 600, 900]), s([750, 750, 1_000], [600, 620, 950])
    assert (a["median"], a["median_batch"], a["median_s"]) == (600, 750, 0.12)
    assert _faster(a, b) == (True, "shorter")
    assert _faster(b, a) == (False, "longer")
    assert _faster(a, s([1_000] * 3, [600, 600, 600])) == (False, "tied")
    assert _faster(s([None] * 3, [None] * 3), a) == (False, "missed")
    assert a["miss_rate"] == 0
    assert s([None, 1, 2], [None, 1, 2])["miss_rate"] == pytest.approx(1 / 3)


def test_the_bench_runs_the_monitors_own_concept_detector() -> None:
    from services.monitor.concept import monitor_detector

    rng = np.random.default_rng(5)
    e = np.r_[rng.random(30_000) < 0.1, rng.random(5_000) < 0.3]
    expected, det = [], monitor_detector(1e6)
    for start in range(0, e.size, 250):
        expected += [start + i for i in det.update_many(e[start:start + 250])]
    got = run_detector(DetectorSpec("cusum", 1e6), e, 250).tolist()
    assert got == expected and got and got[0] >= 30_000


def test_the_plot_is_a_png_with_misses_drawn_at_the_horizon(tmp_path) -> None:
    from bench import detection as d

    keys = (d.SERVICE_CAL, d.ADWIN_CAL, d.HDDM_CAL, d.CUSUM, d.ADWIN, d.HDDM)
    scenarios = {name: {"detectors": {k: _summary([None] * 3 if k == d.HDDM else [900] * 3,
                                                  [None] * 3 if k == d.HDDM else [800] * 3,
                                                  0, 5_000.0) for k in keys}}
                 for name in (*d.CONCEPT, d.LABEL_SHIFT)}
    results = {"scenarios": scenarios, "plan": {"horizon": 20_000, "seeds": 3},
               "calibration": {"null_error_events": 1_000}}
    out = d.plot(results, tmp_path / "delays.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_null_streams_are_bernoulli_at_their_rate_and_reproducible() -> None:
    from bench.detection_budget import null_stream

    e = null_stream(0.1, 200_000, 3)
    assert e.dtype == bool and abs(e.mean() - 0.1) < 0.003
    assert (null_stream(0.1, 1_000, 3) == e[:1_000]).all()
    assert not (null_stream(0.1, 1_000, 4) == e[:1_000]).all()


def test_bisection_finds_the_most_sensitive_value_within_budget() -> None:
    from bench.detection_budget import Tuning, bisect_parameter

    def count(value: float, cap: int) -> int:  # alarms fall as the value falls (like δ)
        return min(cap, int(value * 1_000))

    value, alarms, tried = bisect_parameter(Tuning("x", 1.0, 1e-9, steps=30), 10, count)
    assert alarms <= 10 and count(value, 10**6) <= 10
    assert count(value * 1.01, 10**6) >= 10  # a hair more sensitive would be at the edge
    assert tried[0] == (pytest.approx(1e-9), 0)
    # A budget not even the safest value meets: reported, not hidden.
    value, alarms, _ = bisect_parameter(Tuning("x", 1.0, 0.5), 10, lambda v, cap: 99)
    assert value == pytest.approx(0.5) and alarms == 99


def test_alarm_counts_stop_past_the_cap() -> None:
    from bench.detection_budget import count_alarms

    spec = DetectorSpec("hddm_vec", 0.5)  # very sensitive: many alarms
    full = count_alarms(spec, [0.1, 0.1], 20_000, [1, 2], 250, cap=10**6)
    assert full > 5
    assert count_alarms(spec, [0.1, 0.1], 20_000, [1, 2], 250, cap=5) == 5
    assert count_alarms(DetectorSpec("hddm_vec", 0.5), [0.0], 20_000, [1], 250, cap=9) == 0


def test_budget_streams_follow_each_familys_baseline_rate() -> None:
    from bench import detection as d

    scen = [{"error_rates": {d.AGRAWAL_SUDDEN: (0.0, 0.5), d.SEA_SUDDEN: (0.1 + s / 100, 0.2),
                             d.HYPERPLANE: (0.05, 0.1)},
             "priors": {d.AGRAWAL_SUDDEN: (0.0, 5000.0), d.SEA_SUDDEN: (500.0, 5000.0),
                        d.HYPERPLANE: None}} for s in range(3)]
    nulls = d.budget_streams(scen, d.Plan(budget_streams=7))
    assert len(nulls["agrawal"]) == 1  # no errors at all: a constant stream, one as a check
    assert [p for p, _, _ in nulls["sea"]] == pytest.approx([0.1, 0.11, 0.12] * 2 + [0.1])
    seeds = [s for ss in nulls.values() for _, s, _ in ss]
    assert len(set(seeds)) == len(seeds)
    # Each stream carries its model's holdout size (0: a model without one, no prior).
    assert {r for _, _, r in nulls["sea"]} == {5000} and {r for *_, r in nulls["hyperplane"]} == {0}


def test_the_service_detector_gets_a_simulated_holdout_on_the_budget_streams() -> None:
    from bench.detection_budget import count_alarms, holdout_errors

    # The holdout is Binomial(rows, p0): its own sampling error reaches the count.
    draws = [holdout_errors(0.1, 5000, s) for s in range(400)]
    assert abs(np.mean(draws) - 500) < 5 and 15 < np.std(draws) < 27
    assert holdout_errors(0.1, 5000, 3) == holdout_errors(0.1, 5000, 3)
    # A chart on a tight budget: with the prior it runs (and may alarm) from the first event.
    spec = DetectorSpec("cusum", 1e3)
    with_prior = count_alarms(spec, [0.1] * 4, 900, [1, 2, 3, 4], 250, 10**6,
                              holdout_rows=[5000] * 4)
    assert count_alarms(spec, [0.1] * 4, 900, [1, 2, 3, 4], 250, 10**6) == 0  # warming up
    assert with_prior > 0


def test_null_alarm_positions_match_the_runs_counts() -> None:
    """``--null-alarms`` lists, per seed and family, exactly the alarms the run counts."""
    from bench import detection

    detection._init_worker()
    plan = detection.Plan(seeds=1, null_events=60_000, workers=1)
    where = detection.null_alarms_task(0, plan)
    counted = detection.null_task(0, plan)["signals"]
    for family, found in where.items():
        assert len(found[detection.CUSUM]) == counted[family][detection.CUSUM]
        assert len(found[detection.ADWIN]) == counted[family][detection.ADWIN]
        assert all(0 <= i < plan.null_events for i in found[detection.CUSUM])
    table = detection.null_alarms_table([where], plan)
    assert table.splitlines()[-1].startswith("| all | 1 seeds × 3 families × 60,000 events |")
