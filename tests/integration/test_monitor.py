"""monitor against the real broker and Valkey: metrics per version, drift alerts that fire
once and resolve once, silence on an unchanged stream, exact counts across restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from services.cli.traffic import agrawal_events
from services.models import OnnxModel
from services.monitor.service import build
from services.predict.scorer import VersionScorer
from services.runtime import metrics
from tests.conftest import settings_env
from tests.helpers import produce, read

pytestmark = pytest.mark.integration
T0 = 1_763_900_000_000


def scored(store, n: int, seed: int, *, function: int = 0, shift_age: int = 0,
           prefix: str = "m") -> tuple[list[dict], list[dict]]:
    """Predictions of the demo model on generated events, and their labeled records."""
    scorer = VersionScorer(OnnxModel.load(store, "agrawal"))
    events = []
    truth = []
    for e in agrawal_events(n, seed=seed, bad_rate=0.0, partial_rate=0.0,
                            classification_function=function, id_prefix=prefix):
        ev = orjson.loads(e.value)
        if shift_age:
            ev["features"]["age"] = min(80, ev["features"]["age"] + shift_age)
        ev["ingested_at"] = ev["event_time"]
        events.append(ev)
        truth.append(str(e.label))
    preds = scorer.score(events, T0)
    now = int(time.time() * 1000)
    labeled = [{**p, "outcome_label": t, "outcome_value": None, "outcome_time": T0 + 1000,
                "label_delay_ms": 995, "correct": p["label"] == t, "labeled_at": now}
               for p, t in zip(preds, truth, strict=True)]
    return preds, labeled


def fast(settings, **extra):
    return settings.model_copy(update={"monitor_window": 1000, "monitor_eval_seconds": 0.3,
                                       "monitor_checkpoint_seconds": 0.5, **extra})


def snapshots(s, n: int, timeout: float = 30) -> list[dict]:
    return read(s, "monitor.metrics", n, timeout=timeout)


def test_quality_and_drift_per_version_and_no_alert_on_an_unchanged_stream(
        settings, run_loop, demo_store):
    s = fast(settings)
    preds, labeled = scored(demo_store, 3000, seed=21)
    produce(s, "predictions", [(p["entity_id"], orjson.dumps(p)) for p in preds])
    produce(s, "predictions.labeled", [(r["entity_id"], orjson.dumps(r)) for r in labeled])
    run_loop(build(s))
    deadline = time.monotonic() + 60
    last: dict = {}
    while time.monotonic() < deadline:
        snaps = [x for x in snapshots(s, 1, timeout=2) if x["labeled"] == 3000]
        if snaps and snaps[-1]["feature_drift"]:
            last = snaps[-1]
            break
    assert last, "no complete snapshot"
    acc = np.mean([r["correct"] for r in labeled[-1000:]])
    assert last["predictions"] == 3000
    assert last["metrics"]["accuracy"] == pytest.approx(acc)
    assert 0.9 < last["metrics"]["expected_accuracy"] <= 1.0
    assert "age.psi" in last["feature_drift"] and "__score__.ks" in last["feature_drift"]
    g = metrics.MODEL_QUALITY.labels("agrawal", "1", "champion", "accuracy")._value.get()
    assert g == pytest.approx(acc)
    time.sleep(1.0)
    assert read(s, "monitor.alerts", 0, timeout=1) == []


def test_a_drift_alert_fires_once_and_resolves_once(settings, run_loop, demo_store):
    s = fast(settings)
    loop = build(s)
    run_loop(loop)
    base, _ = scored(demo_store, 2000, seed=31, prefix="a")
    shifted, _ = scored(demo_store, 2000, seed=32, shift_age=25, prefix="b")
    back, _ = scored(demo_store, 3000, seed=33, prefix="c")
    for chunk in (base, shifted, back):
        produce(s, "predictions", [(p["entity_id"], orjson.dumps(p)) for p in chunk])
        time.sleep(2.5)  # several evaluations per phase
    alerts = read(s, "monitor.alerts", 2, timeout=30)
    age = [a for a in alerts if a["feature"] == "age" and a["kind"] == "drift"]
    by_metric: dict[str, list[str]] = {}
    for a in age:
        by_metric.setdefault(a["metric"], []).append(a["state"])
    assert by_metric, alerts
    for states in by_metric.values():
        assert states == ["firing", "resolved"], by_metric
    assert all(a["role"] == "champion" and a["model_version"] == "1" for a in alerts)


def test_monitor_killed_and_restarted_counts_every_prediction_once(settings, demo_store):
    s = fast(settings)
    preds, labeled = scored(demo_store, 6000, seed=41)
    env = {**settings_env(s), "MODELSTREAM_MONITOR_WINDOW": "1000",
           "MODELSTREAM_MONITOR_EVAL_SECONDS": "0.3",
           "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "0.5", "MODELSTREAM_BATCH_SIZE": "200"}
    argv = [sys.executable, "-m", "services.cli.main", "run", "monitor"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    produce(s, "predictions", [(p["entity_id"], orjson.dumps(p)) for p in preds[:3000]])
    produce(s, "predictions.labeled", [(r["entity_id"], orjson.dumps(r)) for r in labeled[:3000]])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(x["predictions"] >= 1000 for x in snapshots(s, 1, timeout=1)):
            break
    time.sleep(1.0)  # past a checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # The rest arrives, with replays of records already counted.
    produce(s, "predictions", [(p["entity_id"], orjson.dumps(p)) for p in preds[2500:]])
    produce(s, "predictions.labeled", [(r["entity_id"], orjson.dumps(r)) for r in labeled[2500:]])
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        final = None
        while time.monotonic() < deadline:
            snaps = snapshots(s, 1, timeout=1)
            done = [x for x in snaps if x["predictions"] >= 6000 and x["labeled"] >= 6000]
            if done:
                time.sleep(1.5)
                final = snapshots(s, 1, timeout=1)[-1]
                break
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert final is not None
    assert final["predictions"] == 6000 and final["labeled"] == 6000


def test_concept_drift_is_alerted_from_the_batch_not_at_the_next_evaluation(
        settings, run_loop, demo_store):
    # No evaluation falls in this test: an alert can only come from the handler.
    s = fast(settings, monitor_eval_seconds=600.0, monitor_checkpoint_seconds=600.0)
    _, before = scored(demo_store, 2000, seed=51, prefix="x")
    _, after = scored(demo_store, 600, seed=52, function=2, prefix="y")
    assert np.mean([r["correct"] for r in after]) < 0.8  # the concept switched
    run_loop(build(s))
    produce(s, "predictions.labeled", [(r["entity_id"], orjson.dumps(r)) for r in before])
    produce(s, "predictions.labeled", [(r["entity_id"], orjson.dumps(r)) for r in after])
    alerts = read(s, "monitor.alerts", 1, timeout=30)
    assert [(a["metric"], a["state"], a["kind"]) for a in alerts] == [
        ("concept_drift", "firing", "performance")]
    assert read(s, "monitor.metrics", 0, timeout=1) == []  # indeed no evaluation


def test_a_labeled_record_without_the_outcome_its_task_needs_is_skipped_and_counted(
    settings, demo_store
):
    from confluent_kafka import Message
    from prometheus_client import REGISTRY

    from services.models import ArtifactStore
    from services.monitor.service import ModelMonitor
    from services.runtime.service import redis_client

    monitor = ModelMonitor(settings, ArtifactStore(settings.artifacts), redis_client(settings))
    labeled = settings.topics.name("predictions.labeled")
    base = {"prediction_id": "p-1", "event_id": "e-1", "entity_id": "c-1", "model": "agrawal",
            "model_version": "1", "role": "champion", "served": True, "label": "1",
            "score": 0.5, "scores": {}, "features": {}, "event_time": 1763900000000,
            "predicted_at": 1763900000005, "latency_ms": 1.0, "outcome_value": None,
            "outcome_time": 1763900060000, "label_delay_ms": 5, "correct": True,
            "labeled_at": 1763900060001}
    good = dict(base, prediction_id="p-2", outcome_label="1")

    def count(result: str) -> float:
        return REGISTRY.get_sample_value(
            "modelstream_monitor_events_total", {"stream": "labeled", "result": result}) or 0.0

    before = count("counted"), count("undecodable")
    msgs = [Message(topic=labeled, partition=0, offset=i, value=orjson.dumps(r))
            for i, r in enumerate([base, good])]
    assert monitor(msgs) == []  # no KeyError out of the handler
    assert (count("counted") - before[0], count("undecodable") - before[1]) == (1, 1)
    assert monitor.versions[("agrawal", "1", "champion")].labeled == 1
