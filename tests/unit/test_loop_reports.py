"""The closed loop's reports as pure functions: the demo's milestones from the topics' records,
the swaps bench's verdict from the predictions read back, the trigger gate learning from other
coordinators' records."""

from __future__ import annotations

from bench.swaps import _verdict
from services.cli.demo import LoopMilestones
from services.cli.watch import WatchCounts
from services.retrain.decision import TriggerGate


def _counts() -> WatchCounts:
    c = WatchCounts()
    c.model_events = [{"model": "agrawal", "version": "1", "transition": "champion", "time": 0}]
    c.accuracy = {("agrawal", "1", "champion"): [(900, 0.99, 1000), (1500, 0.55, 1000)]}
    c.alerts = [{"model": "agrawal", "role": "champion", "state": "firing", "raised_at": 1200,
                 "alert_id": "a"}]
    c.job_steps = [
        {"model": "agrawal", "job_id": "j-1", "step": "started", "updated_at": 1300},
        {"model": "agrawal", "job_id": "j-2", "step": "ignored", "updated_at": 1350},
        {"model": "agrawal", "job_id": "j-1", "step": "trained", "updated_at": 2000,
         "new_version": "2"},
        {"model": "agrawal", "job_id": "j-1", "step": "staged", "updated_at": 2100},
        {"model": "agrawal", "job_id": "j-1", "step": "promoted", "updated_at": 3000,
         "reason": "better"},
    ]
    return c


def test_milestones_follow_the_loop_and_need_enough_labels_to_call_it_recovered() -> None:
    c = _counts()
    loop = LoopMilestones(onset=1000)
    c.accuracy[("agrawal", "2", "champion")] = [(3500, 1.0, 100)]  # too few labels yet
    loop.update(c)
    assert loop.accuracy_before == 0.99 and loop.accuracy_low == 0.55
    assert loop.job_id == "j-1" and loop.new_version == "2" and loop.outcome == "promoted"
    assert loop.recovered is None and not loop.settled
    c.accuracy[("agrawal", "2", "champion")].append((3900, 0.97, 400))
    loop.update(c)
    assert loop.recovered == 3900 and loop.accuracy_after == 0.97 and loop.settled
    assert [at for _, at in loop.timeline()] == [1000, 1200, 1300, None, 2000, 2100, 3000,
                                                 3900]


def test_a_rejected_job_settles_the_loop_without_recovery() -> None:
    c = _counts()
    c.job_steps[-1] = {**c.job_steps[-1], "step": "rejected", "reason": "worse live"}
    loop = LoopMilestones(onset=1000)
    loop.update(c)
    assert loop.settled and loop.recovered is None and loop.outcome_reason == "worse live"


def test_swaps_verdict_counts_drops_and_double_scoring() -> None:
    rows = [  # event id, version, served, event time, predicted at, read at, prediction id
        ("s-0", "1", True, 0, 5, 10.0, "p-s0-1"),
        ("x-1", "1", True, 100, 105, 120.0, "p-x1-1"),
        ("x-2", "2", True, 200, 210, 230.0, "p-x2-2"),
        ("x-2", "2", True, 200, 260, 280.0, "p-x2-2"),  # replayed: the same version twice
        ("x-3", "1", True, 300, 310, 330.0, "p-x3-1"),
        ("x-3", "2", True, 300, 320, 340.0, "p-x3-2"),  # served by two versions
    ]
    values, note = _verdict(rows, ["w-0", "s-0", "x-1", "x-2", "x-3", "x-4"],
                            [(150, "2"), (290, "1")], 50, 1000.0)
    assert values["swap_dropped"] == 1  # x-4; the warm-up event is not counted
    assert values["swap_twice"] == 2
    assert values["swap_first"] == (60 + 20) / 2  # 150 → 210, 290 → 310
    assert values["swap_p99_steady"] == 10.0
    assert "dropped 1" in note


def test_the_gate_learns_what_other_coordinators_did_but_keeps_its_own_jobs() -> None:
    gate = TriggerGate(cooldown_ms=1000)
    gate.started("m", "r-mine", "j-mine", "manual", 0)
    gate.learn([
        {"model": "m", "job_id": "j-x", "request_id": "alert:a", "step": "started",
         "trigger": "alert:a", "started_at": 500, "updated_at": 500, "status": "running"},
        {"model": "m", "job_id": "j-x", "request_id": "alert:a", "step": "promoted",
         "trigger": "alert:a", "updated_at": 900, "status": "succeeded"},
    ])
    assert gate.active == {"m": "j-mine"}  # another's finished job does not end ours
    assert gate.admit("m", "alert:a", "alert:a", 1000) == "duplicate"
    gate.finished("m", "j-mine")
    assert gate.admit("m", "alert:b", "alert:b", 1200) == "cooldown"
    assert gate.admit("m", "alert:b", "alert:b", 1600) is None
