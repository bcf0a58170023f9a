"""The benchmark's command line and the figures it reports, without running anything."""

from __future__ import annotations

import pytest

from bench.run import MONITOR_WARM, Plan, _figures, _parse


def _plan(only: set[str]) -> Plan:
    return Plan(runs=1, events=100, join_events=50, monitor_events=70, e2e_seconds=1.0,
                rate=10.0, warm_seconds=0.1, only=only)


def test_only_takes_comma_separated_groups_and_repeats():
    assert _parse(["--only", "join,monitor"]).only == {"join", "monitor"}
    assert _parse(["--only", "join", "--only", "predict, e2e"]).only == {"join", "predict", "e2e"}
    assert _parse([]).only == set()


@pytest.mark.parametrize("bad", ["joins", "join,nope", ","])
def test_only_rejects_unknown_groups(bad, capsys):
    with pytest.raises(SystemExit):
        _parse(["--only", bad])
    assert "choose from predict, ingest, e2e, join, monitor" in capsys.readouterr().err


def test_plan_runs_the_passthrough_baseline_for_any_throughput_group():
    assert _plan(set()).wants("join") and _plan(set()).wants_throughput()
    assert _plan({"monitor"}).wants_throughput() and not _plan({"monitor"}).wants("join")
    assert not _plan({"e2e"}).wants_throughput()


def test_join_and_monitor_predictions_are_made_for_the_larger_need():
    assert _plan({"join"}).labeled_events() == 50
    assert _plan({"monitor"}).labeled_events() == MONITOR_WARM + 70  # its warm-up comes first
    assert _plan(set()).labeled_events() == MONITOR_WARM + 70
    assert _plan({"predict"}).labeled_events() == 0


def test_join_and_monitor_figures_and_their_bars():
    figs = _figures()
    for key in ("join_pf", "join_of"):
        assert figs[key].unit == "outcomes/s" and figs[key].baseline == "raw"
        assert [b.describe(figs[key].unit) for b in figs[key].bars] == ["≥ 50,000 outcomes/s"]
    assert [b.describe("ev/s") for b in figs["monitor"].bars] == ["≥ 50,000 ev/s"]
    assert figs["monitor"].baseline == "raw"
    memory = figs["join_memory"]
    assert memory.unit == "B" and memory.baseline is None and not memory.bars
