"""The pure parts of the comparisons in ``make bench``: /proc parsing, saturation, drift verdicts,
memory growth, the curve table, the suite's figures and bars. Nothing here starts a process."""

from __future__ import annotations

import math
import os

import pytest

from bench import procstat
from bench.chains import BurstResult, LoadResult, saturated
from bench.curve import CurvePoint, curve_table
from bench.drift_batch import DriftRun, _judge, drifted_columns
from bench.limits import timed
from bench.memory import MemoryRun, memory_table
from bench.report import Bar, Figure, _rows, format_ratio
from bench.run import _figures


def test_proc_readers_see_this_process():
    assert procstat.rss_bytes(os.getpid()) > 10 * 2**20
    before = procstat.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert procstat.cpu_seconds(os.getpid()) > before


def test_stat_fields_count_from_the_last_parenthesis():
    # A command name holding ") " must not shift the fields.
    stat = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 31 7 0 0 20 0 1 0 5 1 1"
    assert procstat.parse_cpu_ticks(stat) == (31, 7)
    with pytest.raises(ValueError):
        procstat.parse_rss_kib("Name:\tzombie\nState:\tZ\n")


def test_a_chain_is_saturated_when_events_are_missing_or_queued():
    assert not saturated(100, 100, 999.0)
    assert saturated(100, 99, 10.0)
    assert saturated(100, 100, 1500.0)
    assert saturated(100, 100, math.nan)  # nothing measured is not "kept up"
    r = LoadResult(1000.0, 4, 4, [10.0, 20.0, 30.0, 40.0])
    assert (r.p50, r.saturated) == (25.0, False)


def test_burst_rate_and_cpu_per_event():
    r = BurstResult(1000, 1000, 0.5, {"ingest": 0.02, "predict": 0.01}, 0.3, 0.1)
    assert r.rate == 2000.0
    assert r.cpu_per_event_us == pytest.approx(30.0)
    assert r.cores_busy == pytest.approx((0.03 + 0.3 + 0.1) / 0.5)
    assert "1,000/1,000 out in 0.50 s" in r.note()


def test_drift_delay_and_false_alarms_are_judged_against_the_change():
    run = DriftRun("x", 1000)
    _judge(run, 1000, 2000, set())
    _judge(run, 2000, 2000, {"car"})  # before the change: a false alarm
    _judge(run, 3000, 2000, {"car"})  # after it, but not the shifted feature
    _judge(run, 4000, 2000, {"age", "car"})
    _judge(run, 5000, 2000, {"age"})  # the first flag counts
    assert (run.checks_before, run.false_alarms, run.delay) == (2, 1, 2000)


def test_drift_cost_is_quoted_per_the_same_number_of_events():
    run = DriftRun("x", 1000, seconds=[0.001, 0.002, 0.003])
    assert run.ms_per(5000) == pytest.approx(10.0)
    assert math.isnan(DriftRun("y", 5000).ms_per(5000))


def test_evidently_value_drift_reaching_its_threshold_is_drifted():
    metric = {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "age",
                         "threshold": 0.1}, "value": 0.1}
    assert drifted_columns({"metrics": [metric]}) == {"age"}


def test_memory_growth_runs_from_the_steady_sample_to_the_last():
    run = MemoryRun(60, 1000, 20, [(0.0, {"a": 10, "b": 100}), (20.0, {"a": 100, "b": 100}),
                                   (40.0, {"a": 104, "b": 150}), (60.0, {"a": 105, "b": 120})])
    assert run.growth() == {"a": pytest.approx(0.05), "b": pytest.approx(0.20)}
    table = memory_table(run)
    assert "| a |" in table and "+5.0% | PASS" in table and "+20.0% | FAIL" in table


def test_curve_table_pairs_the_chains_per_load_and_marks_saturation():
    ok = LoadResult(1000.0, 10, 10, [50.0] * 10)
    slow = LoadResult(8000.0, 10, 7, [2000.0] * 7)
    points = [CurvePoint("passthrough", 1000, ok), CurvePoint("modelstream", 1000, ok),
              CurvePoint("modelstream", 8000, slow)]
    table = curve_table(points).splitlines()
    assert table[2].startswith("| 1,000 | 50 / 50 / 50 | 50 / 50 / 50 | 1.00× |")
    assert "saturated (7/10 out)" in table[3] and "not run" in table[3]


def test_timed_calls_until_the_time_is_up():
    rate = timed(lambda: 5, 0.02)
    assert rate.items % 5 == 0 and rate.seconds >= 0.02 and rate.per_second > 0


def test_the_bars_of_the_issue_are_on_the_right_figures():
    figs = _figures()
    assert figs["path"].baseline == "rest"
    assert [b.describe("ev/s") for b in figs["path"].bars] == ["≥ 10× baseline"]
    assert figs["path_p99"].baseline == "rest_p99"
    assert [b.describe("ms") for b in figs["path_p99"].bars] == ["≤ 1.00× baseline"]
    assert all(figs[f"rss_growth_{s}"].bars == (Bar("max_value", 10.0),)
               for s in ("ingest", "predict", "join", "monitor"))
    for key in ("predict_json", "ingest_full", "join_pf", "monitor"):
        assert figs[f"cpu_{key}"].baseline == "cpu_raw" and figs[f"cpu_{key}"].unit == "µs/ev"


def test_ratio_bars_judge_both_ways():
    rest = Figure("rest", "rest", "ev/s", runs=[400.0])
    path = Figure("path", "path", "ev/s", runs=[3000.0], baseline="rest",
                  bars=(Bar("min_ratio", 10.0),))
    rest_p99 = Figure("rest_p99", "rest p99", "ms", runs=[100.0])
    path_p99 = Figure("path_p99", "path p99", "ms", runs=[120.0], baseline="rest_p99",
                      bars=(Bar("max_ratio", 1.0),))
    rows = {r[0]: r for r in _rows([rest, path, rest_p99, path_p99])}
    assert rows["path"][3] == "7.5×" and rows["path"][4] == "FAIL ≥ 10× baseline"
    assert rows["path p99"][3] == "1.20×" and rows["path p99"][4] == "FAIL ≤ 1.00× baseline"
    assert format_ratio(0.41, "ev/s") == "41%"
    assert format_ratio(7.0 / 3438.0, "ms") == "1/491"


def test_machine_ticks_leave_idle_and_iowait_out():
    assert procstat.parse_machine_ticks("cpu  100 5 50 800 20 0 5 0 3 0\ncpu0 1") == (160, 980)
    assert procstat.machine_busy_seconds() > 0
