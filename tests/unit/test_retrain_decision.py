"""The retrain coordinator's decisions: validation, live comparison, rollback, the trigger gate."""

from __future__ import annotations

import numpy as np

from services.retrain.decision import (
    ACCURACY,
    RMSE,
    TriggerGate,
    compare_live,
    metric_for,
    should_roll_back,
    validate_candidate,
)


def pairs(correct: int, wrong: int, start: int = 0) -> dict[str, tuple[str, str]]:
    out = {f"e-{start + i}": ("1", "1") for i in range(correct)}
    out.update({f"e-{start + correct + i}": ("0", "1") for i in range(wrong)})
    return out


def test_metric_follows_the_task() -> None:
    assert metric_for("binary") is ACCURACY and metric_for("multiclass") is ACCURACY
    assert metric_for("regression") is RMSE
    assert ACCURACY(np.array(["1", "0", "1"]), np.array(["1", "1", "1"])) == 2 / 3
    assert RMSE(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == np.sqrt(2.0)
    assert RMSE.better(0.5, 0.7, 0.1) and not RMSE.better(0.65, 0.7, 0.1)
    assert RMSE.worse(0.9, 0.7, 0.1) and not RMSE.worse(0.75, 0.7, 0.1)


def test_candidate_must_beat_the_champion_by_the_margin() -> None:
    passed = validate_candidate(ACCURACY, 0.90, 0.80, 0.05, 500)
    assert passed.decision == "pass"
    assert passed.metrics == {"candidate_holdout_accuracy": 0.90, "holdout_rows": 500.0,
                              "champion_holdout_accuracy": 0.80}
    close = validate_candidate(ACCURACY, 0.84, 0.80, 0.05, 500)
    assert close.decision == "reject"
    assert "0.8400 vs champion 0.8000" in close.reason and "margin 0.05" in close.reason
    assert validate_candidate(ACCURACY, float("nan"), 0.8, 0.0, 10).decision == "reject"
    assert validate_candidate(ACCURACY, 0.5, None, 0.05, 10).decision == "pass"
    # Lower is better for RMSE: the margin keeps its sense.
    assert validate_candidate(RMSE, 1.0, 1.2, 0.1, 50).decision == "pass"
    assert validate_candidate(RMSE, 1.15, 1.2, 0.1, 50).decision == "reject"


def test_shadow_is_judged_on_the_events_both_scored() -> None:
    champion = pairs(60, 40)  # 0.60 on e-0..e-99
    shadow = pairs(90, 10)  # 0.90 on e-0..e-99
    shadow.update(pairs(0, 500, start=1000))  # events the champion never scored: not counted
    verdict = compare_live(ACCURACY, shadow, champion, min_events=100, margin=0.0)
    assert verdict.decision == "promote"
    assert verdict.metrics["candidate_live_accuracy"] == 0.9
    assert verdict.metrics["champion_live_accuracy"] == 0.6
    assert verdict.metrics["live_events"] == 100
    assert "on the same 100 events" in verdict.reason


def test_shadow_waits_for_enough_events_then_rejects_when_worse() -> None:
    wait = compare_live(ACCURACY, pairs(10, 0), pairs(10, 0), min_events=50, margin=0.0)
    assert wait.decision == "wait" and wait.reason == "10 of 50 labeled shadow events so far"
    worse = compare_live(ACCURACY, pairs(70, 30), pairs(80, 20), min_events=50, margin=0.0)
    assert worse.decision == "reject" and "worse than the champion live" in worse.reason


def test_canary_is_judged_on_its_own_events() -> None:
    canary = pairs(95, 5, start=0)
    champion = pairs(300, 200, start=500)  # other entities, same period
    verdict = compare_live(ACCURACY, canary, champion, min_events=100, margin=0.0, role="canary")
    assert verdict.decision == "promote"
    assert verdict.metrics["live_events"] == 100


def test_rollback_when_the_new_champion_falls_below_its_predecessor() -> None:
    assert should_roll_back(ACCURACY, 0.70, 0.80, 0.02, 500, 200).decision == "roll_back"
    assert should_roll_back(ACCURACY, 0.79, 0.80, 0.02, 500, 200).decision == "keep"
    assert should_roll_back(ACCURACY, 0.10, 0.80, 0.02, 50, 200).decision == "wait"
    assert should_roll_back(ACCURACY, 0.10, None, 0.02, 500, 200).decision == "keep"


def test_gate_acts_once_per_request_and_once_per_cooldown() -> None:
    gate = TriggerGate(cooldown_ms=60_000)
    assert gate.admit("m", "alert:a", "alert:a", 1_000) is None
    gate.started("m", "alert:a", "j-1", "alert:a", 1_000)
    assert gate.admit("m", "alert:a", "alert:a", 2_000) == "duplicate"
    assert gate.admit("m", "alert:b", "alert:b", 2_000) == "busy"
    assert gate.admit("other", "alert:c", "alert:c", 2_000) is None  # per model
    gate.finished("m", "j-1")
    assert gate.admit("m", "alert:b", "alert:b", 30_000) == "cooldown"
    assert gate.admit("m", "manual:1", "manual", 30_000) is None  # a person is not throttled
    assert gate.admit("m", "alert:d", "alert:d", 61_001) is None


def test_gate_is_rebuilt_from_the_job_records() -> None:
    gate = TriggerGate(cooldown_ms=60_000)
    gate.replay([
        {"job_id": "j-1", "model": "m", "request_id": "alert:a", "trigger": "alert:a",
         "step": "started", "status": "running", "updated_at": 1_000, "started_at": 1_000},
        {"job_id": "j-1", "model": "m", "request_id": "alert:a", "trigger": "alert:a",
         "step": "rejected", "status": "rejected", "updated_at": 5_000, "started_at": 1_000},
        {"job_id": "j-2", "model": "n", "request_id": "manual:x", "trigger": "manual",
         "step": "started", "status": "running", "updated_at": 8_000, "started_at": 8_000},
        {"job_id": "j-2", "model": "n", "request_id": "manual:x", "trigger": "manual",
         "step": "staged", "status": "running", "updated_at": 9_000, "started_at": 8_000},
    ])
    assert gate.admit("m", "alert:a", "alert:a", 9_000) == "duplicate"
    assert gate.admit("m", "alert:z", "alert:z", 9_000) == "cooldown"
    assert gate.admit("m", "alert:z", "alert:z", 61_001) is None
    assert gate.admit("n", "manual:y", "manual", 9_000) == "busy"  # j-2 is still staged
    assert gate.active == {"n": "j-2"}
