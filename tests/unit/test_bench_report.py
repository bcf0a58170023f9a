"""The benchmark's pure logic: medians, percentiles, ratios, bars and the tables it prints."""

from __future__ import annotations

import math

import pytest

from bench.report import (
    Bar,
    Figure,
    format_ratio,
    format_value,
    markdown_report,
    median,
    percentile,
    ratio,
    results_json,
    table,
)


def _figures() -> list[Figure]:
    return [
        Figure("raw", "raw passthrough", "ev/s", runs=[100_000.0, 90_000.0, 110_000.0]),
        Figure("predict", "predict", "ev/s", runs=[30_000.0, 50_000.0, 45_000.0],
               baseline="raw", bars=(Bar("min_ratio", 0.40), Bar("min_value", 30_000))),
        Figure("base_p50", "e2e p50 raw", "ms", runs=[4.0]),
        Figure("p50", "e2e p50", "ms", runs=[12.0], baseline="base_p50",
               bars=(Bar("max_value", 10.0),), notes=["run 1: 100/100 arrived"]),
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 1.0, 2.0], 2.0),
        ([4.0, 1.0, 3.0, 2.0], 2.5),
        ([7.0], 7.0),
        ([1.0, math.nan, 3.0], 2.0),
    ],
)
def test_median(values, expected):
    assert median(values) == expected


def test_median_of_nothing_is_nan():
    assert math.isnan(median([]))
    assert math.isnan(median([math.nan]))


def test_percentile_interpolates_like_numpy():
    xs = [float(v) for v in range(1, 101)]
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 100.0
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_ratio_guards_against_missing_baselines():
    assert ratio(40.0, 100.0) == pytest.approx(0.4)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_bars():
    assert Bar("min_ratio", 0.40).passed(1.0, 0.40)
    assert not Bar("min_ratio", 0.40).passed(1.0, 0.39)
    assert not Bar("min_ratio", 0.40).passed(1.0, math.nan)
    assert Bar("min_value", 30_000).passed(30_000, math.nan)
    assert not Bar("min_value", 30_000).passed(math.nan, math.nan)
    assert Bar("max_value", 10.0).passed(9.9, 3.0)
    assert not Bar("max_value", 10.0).passed(10.1, 3.0)
    assert Bar("min_ratio", 0.25).describe("ev/s") == "≥ 25% of baseline"
    assert Bar("min_value", 30_000).describe("ev/s") == "≥ 30,000 ev/s"
    assert Bar("max_value", 50.0).describe("ms") == "≤ 50.0 ms"


def test_formatting():
    assert format_value(31_234.6, "ev/s") == "31,235 ev/s"
    assert format_value(7.26, "ms") == "7.3 ms"
    assert format_value(153.4, "ms") == "153 ms"
    assert format_value(math.nan, "ms") == "n/a"
    assert format_ratio(0.4567, "ev/s") == "46%"
    assert format_ratio(2.5, "ms") == "2.50×"
    assert format_ratio(math.nan, "ms") == "n/a"


def test_text_table_shows_medians_runs_ratios_and_verdicts():
    lines = table(_figures()).splitlines()
    assert lines[0].split() == ["measurement", "median", "runs", "vs", "baseline", "bars"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    raw, predict, _, p50 = lines[2:]
    assert "100,000 ev/s" in raw and "100.0k 90.0k 110.0k" in raw and "baseline" in raw
    assert "45,000 ev/s" in predict and "30.0k 50.0k 45.0k" in predict
    assert "45%" in predict
    assert "PASS ≥ 40% of baseline" in predict and "PASS ≥ 30,000 ev/s" in predict
    assert "12.0 ms" in p50 and "3.00×" in p50 and "FAIL ≤ 10.0 ms" in p50
    # every row is aligned to the same columns
    assert len({line.index("ev/s") for line in (raw, predict)}) == 1


def test_markdown_table_and_report():
    md = table(_figures(), markdown=True).splitlines()
    assert md[0] == "| measurement | median | runs | vs baseline | bars |"
    assert md[1] == "|---|---|---|---|---|"
    assert md[3].startswith("| predict | 45,000 ev/s | 30.0k 50.0k 45.0k | 45% | PASS")
    report = markdown_report(_figures(), {"nproc": 2, "python": "3.11.7"}, ["one", "two"])
    assert "- **nproc**: 2" in report and "- one" in report
    assert "- e2e p50: run 1: 100/100 arrived" in report


def test_results_json():
    out = results_json(_figures(), {"nproc": 2})
    assert out["machine"] == {"nproc": 2}
    predict = out["figures"]["predict"]
    assert predict["median"] == 45_000.0
    assert predict["ratio"] == 0.45
    assert predict["bars"] == [
        {"bar": "≥ 40% of baseline", "pass": True},
        {"bar": "≥ 30,000 ev/s", "pass": True},
    ]
    assert out["figures"]["raw"]["ratio"] is None
    assert out["figures"]["p50"]["bars"][0]["pass"] is False


def test_rates_sizes_and_figures_that_are_neither_baseline_nor_compared():
    figs = [
        Figure("raw", "raw passthrough", "ev/s", runs=[100_000.0]),
        Figure("join", "join", "outcomes/s", runs=[20_000.0, 30_000.0], baseline="raw",
               bars=(Bar("min_value", 50_000),)),
        Figure("memory", "Redis per pending prediction", "B", runs=[880.4, 899.6, 871.0]),
    ]
    raw, join, memory = table(figs).splitlines()[2:]
    assert "baseline" in raw
    assert "25,000 outcomes/s" in join and "20.0k 30.0k" in join and "25%" in join
    assert "FAIL ≥ 50,000 outcomes/s" in join
    assert "880 B" in memory and "880 900 871" in memory and "baseline" not in memory
    md = table(figs, markdown=True).splitlines()
    assert md[4] == "| Redis per pending prediction | 880 B | 880 900 871 |   |   |"
    assert format_ratio(0.25, "outcomes/s") == "25%"
    assert format_ratio(2.0, "B") == "2.00×"
    out = results_json(figs, {})["figures"]
    assert out["memory"]["median"] == 880.4 and out["memory"]["ratio"] is None
