"""predict against the real broker: one prediction per valid event, deterministic ids,
at-least-once across a kill -9 mid-stream."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from services.cli.traffic import agrawal_events
from services.ingest.service import build as build_ingest
from services.predict.scorer import prediction_id
from services.predict.service import build as build_predict
from tests.conftest import settings_env
from tests.helpers import FULL, event, produce, read

pytestmark = pytest.mark.integration


def test_every_valid_event_gets_one_prediction_with_a_deterministic_id(settings, run_loop):
    produce(settings, "features", [
        (b"c-1", event("p-1", "c-1", FULL)),
        (b"c-2", event("p-2", "c-2", {**FULL, "age": 70, "salary": 30000.0})),
        (b"c-1", event("p-1", "c-1", FULL)),  # the same event again: same prediction id
    ])
    run_loop(build_ingest(settings))
    run_loop(build_predict(settings))
    preds = read(settings, "predictions", 3)
    assert len(preds) == 3
    version = preds[0]["model_version"]
    for p in preds:
        assert p["prediction_id"] == prediction_id(p["event_id"], "agrawal", version)
        assert p["role"] == "champion" and p["served"] is True
        assert p["label"] in {"0", "1"}
        assert 0.0 <= p["score"] <= 1.0
        assert abs(sum(p["scores"].values()) - 1.0) < 1e-5
        assert p["features"] == FULL if p["event_id"] == "p-1" else True
        assert p["latency_ms"] >= 0
    assert preds[0]["prediction_id"] == preds[2]["prediction_id"]
    assert preds[0]["prediction_id"] != preds[1]["prediction_id"]


def test_predictions_agree_with_the_model_offline(settings, run_loop, demo_store):
    from services.models import OnnxModel
    from services.predict.scorer import VersionScorer

    stream = [e for e in agrawal_events(500, bad_rate=0.0, partial_rate=0.0, seed=3)]
    produce(settings, "features", [(e.key, e.value) for e in stream])
    run_loop(build_ingest(settings))
    run_loop(build_predict(settings))
    preds = read(settings, "predictions", len(stream))
    assert len({p["prediction_id"] for p in preds}) == len(stream)
    scorer = VersionScorer(OnnxModel.load(demo_store, "agrawal"))
    offline = scorer.score([{**p, "ingested_at": None} for p in preds], 0)
    assert [o["label"] for o in offline] == [p["label"] for p in preds]
    # The demo model is accurate on the generator's labels.
    truth = {e.event_id: str(e.label) for e in stream}
    acc = sum(p["label"] == truth[p["event_id"]] for p in preds) / len(preds)
    assert acc > 0.85


def test_kill_predict_mid_stream_and_restart_loses_nothing(settings, run_loop):
    n = 20000
    stream = list(agrawal_events(n, bad_rate=0.0, seed=5))
    first, second = stream[: n // 2], stream[n // 2 :]
    run_loop(build_ingest(settings))
    produce(settings, "features", [(e.key, e.value) for e in first])

    env = {**settings_env(settings), "MODELSTREAM_BATCH_SIZE": "200"}
    argv = [sys.executable, "-m", "services.cli.main", "run", "predict"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    # kill -9 as soon as predictions flow: mid-batch, before its offsets are committed.
    read(settings, "predictions", 1, timeout=60, decode=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = len(read(settings, "predictions", 0, timeout=1, decode=False))
    assert 0 < before < n

    produce(settings, "features", [(e.key, e.value) for e in second])
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        preds = read(settings, "predictions", n, timeout=120)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0  # SIGTERM: the batch in hand finishes, then a clean exit
    ids: dict[str, str] = {}
    for p in preds:
        # A replayed event may appear twice, but only ever with the same prediction id.
        assert ids.setdefault(p["event_id"], p["prediction_id"]) == p["prediction_id"]
    assert set(ids) == {e.event_id for e in stream}
