"""The retrain service (a faust app, run as `modelstream run retrain`) on the embedded broker:
a manual request through to promotion with predict and join serving the candidate as a shadow;
a candidate that does not beat the champion rejected; alert triggers with cooldown; a restart
mid-job; two coordinators in one group (only one acts)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.join.service import build as build_join
from services.models import ArtifactStore
from services.models.agrawal import AGRAWAL_FEATURES, generate
from services.predict.service import build as build_predict
from services.registry import adopt_store, read_state
from services.retrain.jobs import job_id_for, manual_request, send_request
from services.runtime import kafka
from services.runtime.settings import Settings
from services.stack.embedded import EmbeddedServer
from tests.conftest import settings_env
from tests.helpers import produce, read

pytestmark = pytest.mark.integration

NAMES = [f.name for f in AGRAWAL_FEATURES]
RETRAIN_ENV = {
    "MODELSTREAM_RETRAIN_MIN_EXAMPLES": "300",
    "MODELSTREAM_RETRAIN_SHADOW_MIN_LABELED": "200",
    "MODELSTREAM_RETRAIN_POLL_SECONDS": "0.5",
    "MODELSTREAM_RETRAIN_MARGIN": "0.01",
    "MODELSTREAM_RETRAIN_COOLDOWN_SECONDS": "600",
    "MODELSTREAM_LOG_LEVEL": "INFO",
    "MODELSTREAM_RETRAIN_LEASE_SECONDS": "4",  # a killed coordinator's jobs are adopted soon
}


# One model per test: jobs are per model.
MODELS = ("agrawal", "agrawal-r", "agrawal-a", "agrawal-k", "agrawal-2")


class RetrainProcess:
    """`modelstream run retrain` as a child process that a test can kill -9 and start again."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**settings_env(self.settings), **RETRAIN_ENV}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "run", "retrain"],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


@pytest.fixture(scope="module")
def service(
    servers: tuple[EmbeddedServer, EmbeddedServer], demo_store: ArtifactStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RetrainProcess]:
    """One retrain service for the module, on topics of its own, over a store of its own
    (new versions must not leak into other tests) holding the demo model under one name per
    test."""
    broker, valkey = servers
    root = tmp_path_factory.mktemp("retrain")
    store = ArtifactStore(root / "artifacts")
    demo = demo_store.card("agrawal", "1")
    data = demo_store.load_bytes("agrawal", "1")
    for name in MODELS:
        store.publish(data, demo.model_copy(update={"name": name, "version": "1"}))
    s = Settings(kafka_bootstrap=broker.url, redis_url=valkey.url,
                 topic_prefix=f"rt-{uuid.uuid4().hex[:6]}.", partitions=2, data_dir=root,
                 artifact_dir=store.root, metrics_port=0)
    kafka.create_topics(s)
    adopt_store(s, store)
    retrain = RetrainProcess(s, root / "retrain.log")
    retrain.start()
    yield retrain
    code = retrain.stop()
    assert code == 0, retrain.log_path.read_text()[-4000:]


@pytest.fixture
def stack(service: RetrainProcess) -> Settings:
    return service.settings


def _valid_events(
    n: int, seed: int, function: int, prefix: str, model: str = "agrawal"
) -> list[dict[str, Any]]:
    x, y = generate(n, seed, classification_function=function)
    now = int(time.time() * 1000)
    out = []
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        features = {name: (int(v) if spec.type != "float" else v)
                    for name, spec, v in zip(NAMES, AGRAWAL_FEATURES, row, strict=True)}
        out.append({"event_id": f"{prefix}-{i}", "entity_id": f"c-{i % 97}", "model": model,
                    "event_time": now + i, "features": features, "label": str(label)})
    return out


def _send_traffic(s: Settings, events: list[dict[str, Any]]) -> None:
    """Feature vectors on features.valid, and each event's outcome on outcomes."""
    produce(s, "features.valid", [
        (e["entity_id"].encode(), orjson.dumps({k: v for k, v in e.items() if k != "label"}))
        for e in events])
    produce(s, "outcomes", [(e["event_id"].encode(), orjson.dumps(
        {"event_id": e["event_id"], "label": e["label"]})) for e in events])


def _labeled_records(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """predictions.labeled records as join writes them (the champion's label is irrelevant
    for training: the outcome is what counts)."""
    now = int(time.time() * 1000)
    return [(e["entity_id"].encode(), orjson.dumps({
        "prediction_id": f"p-{e['event_id']}", "event_id": e["event_id"],
        "entity_id": e["entity_id"], "model": e["model"], "model_version": "1",
        "role": "champion", "served": True, "label": "0", "score": 0.5,
        "scores": {"0": 0.5, "1": 0.5}, "features": e["features"],
        "event_time": e["event_time"], "predicted_at": now, "latency_ms": 1.0,
        "outcome_label": e["label"], "outcome_value": None, "outcome_time": now,
        "label_delay_ms": 5, "correct": e["label"] == "0", "labeled_at": now,
    })) for e in events]


def _job_steps(s: Settings, job_id: str, until: set[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    steps: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        steps = [r for r in read(s, "retrain.jobs", 0, timeout=0.5) if r["job_id"] == job_id]
        if any(r["step"] in until for r in steps):
            return steps
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {until}: {[r['step'] for r in steps]}")


def test_manual_request_trains_stages_as_shadow_and_promotes(stack, run_loop):
    s = stack
    run_loop(build_predict(s))
    run_loop(build_join(s))
    # The world changed: labels now follow Agrawal's function 2; the champion learned function 0.
    _send_traffic(s, _valid_events(1000, seed=11, function=2, prefix="a"))
    labeled = read(s, "predictions.labeled", 1000, timeout=60)
    assert len([r for r in labeled if r["model"] == "agrawal"]) >= 1000

    request = manual_request("agrawal", requested_by="alice", reason="new season")
    send_request(s, request)
    job = job_id_for(request.request_id)
    staged = _job_steps(s, job, {"staged", "rejected", "failed"}, timeout=60)
    assert [r["step"] for r in staged] == [
        "started", "data_gathered", "trained", "validated", "staged"], staged[-1]

    # Live traffic: predict now scores every event with the champion and the shadow.
    _send_traffic(s, _valid_events(400, seed=12, function=2, prefix="b"))
    steps = _job_steps(s, job, {"promoted", "rejected", "failed"}, timeout=60)
    last = steps[-1]
    assert last["step"] == "promoted", last
    assert last["status"] == "succeeded"
    assert last["new_version"] == "2" and last["base_version"] == "1"
    assert last["metrics"]["candidate_live_accuracy"] > last["metrics"]["champion_live_accuracy"]
    assert last["metrics"]["live_events"] >= 200
    assert all(r["trigger"] == "manual" and r["request_id"] == request.request_id for r in steps)
    data = next(r for r in steps if r["step"] == "data_gathered")
    assert data["metrics"]["train_rows"] + data["metrics"]["holdout_rows"] >= 1000

    state = read_state(s)
    record = state.models["agrawal"]
    assert record.champion == "2"
    assert record.versions["1"].status == "archived"
    kinds = [(h.event.version, h.event.transition) for h in record.history if h.applied]
    assert kinds[-3:] == [("2", "registered"), ("2", "shadow"), ("2", "champion")]
    lineage = record.versions["2"].lineage
    assert lineage.parent_version == "1" and lineage.trigger == "manual"
    assert lineage.model_extra and lineage.model_extra["job_id"] == job


def test_a_candidate_that_does_not_beat_the_champion_is_rejected(stack):
    s = stack
    # Labeled data from the champion's own world: a new model cannot beat it by the margin.
    produce(s, "predictions.labeled", _labeled_records(
        _valid_events(800, seed=21, function=0, prefix="r", model="agrawal-r")))
    request = manual_request("agrawal-r", requested_by="bob", reason=None)
    send_request(s, request)
    steps = _job_steps(s, job_id_for(request.request_id), {"rejected", "failed"}, timeout=60)
    assert [r["step"] for r in steps] == ["started", "data_gathered", "trained", "rejected"]
    assert "does not beat the champion" in steps[-1]["reason"]
    assert steps[-1]["status"] == "rejected"
    record = read_state(s).models["agrawal-r"]
    assert record.champion == "1"
    assert record.versions["2"].status == "rejected"


def test_alerts_trigger_once_per_cooldown(stack):
    s = stack
    alert = {"model": "agrawal-a", "model_version": "1", "role": "champion", "kind": "drift",
             "metric": "psi", "feature": "age", "value": 0.4, "threshold": 0.2,
             "severity": "critical", "state": "firing", "message": "age drifted",
             "window_start": 0, "window_end": 1, "raised_at": int(time.time() * 1000)}
    first = {**alert, "alert_id": "a-1"}
    produce(s, "monitor.alerts", [(b"agrawal-a", orjson.dumps(first)),
                                  (b"agrawal-a", orjson.dumps(first)),  # replayed: one job
                                  (b"agrawal-a", orjson.dumps({**alert, "alert_id": "a-0",
                                                               "state": "resolved"}))])
    # No labeled data: the job fails fast, with the count, and the cooldown still holds.
    steps = _job_steps(s, job_id_for("alert:a-1"), {"failed"}, timeout=60)
    assert [r["step"] for r in steps] == ["started", "failed"]
    assert steps[0]["trigger"] == "alert:a-1"
    assert "0 usable labeled examples" in steps[-1]["error"]

    produce(s, "monitor.alerts", [(b"agrawal-a", orjson.dumps({**alert, "alert_id": "a-2"}))])
    ignored = _job_steps(s, job_id_for("alert:a-2"), {"ignored"}, timeout=30)
    assert ignored[-1]["status"] == "cancelled"
    assert ignored[-1]["reason"].startswith("cooldown")
    jobs = [r for r in read(s, "retrain.jobs", 3, timeout=2) if r["model"] == "agrawal-a"]
    assert sum(r["step"] == "started" for r in jobs) == 1
    requests = [r["request_id"] for r in read(s, "retrain.requests", 3, timeout=2)
                if r["model"] == "agrawal-a"]
    assert sorted(requests) == ["alert:a-1", "alert:a-1", "alert:a-2"]


def _shadow_evidence(model: str, n: int, shadow_right: float, champion_right: float,
                     start: int = 0) -> list[tuple[bytes, bytes]]:
    """Labeled predictions of the same events by the champion v1 and the shadow v2."""
    now = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        for version, role, right in (("1", "champion", champion_right),
                                     ("2", "shadow", shadow_right)):
            label = "1" if (i % 100) < right * 100 else "0"
            out.append((f"c-{i}".encode(), orjson.dumps({
                "prediction_id": f"p-{version}-{i}", "event_id": f"s-{i}",
                "entity_id": f"c-{i}", "model": model, "model_version": version, "role": role,
                "served": role == "champion", "label": label, "score": 0.5, "scores": {},
                "features": {}, "event_time": now, "predicted_at": now, "latency_ms": 1.0,
                "outcome_label": "1", "outcome_value": None, "outcome_time": now,
                "label_delay_ms": 5, "correct": label == "1", "labeled_at": now})))
    return out


def test_a_restart_while_staged_resumes_the_comparison(service: RetrainProcess) -> None:
    s = service.settings
    produce(s, "predictions.labeled", _labeled_records(
        _valid_events(800, seed=31, function=2, prefix="k", model="agrawal-k")))
    request = manual_request("agrawal-k", requested_by="carol", reason="restart test")
    send_request(s, request)
    job = job_id_for(request.request_id)
    _job_steps(s, job, {"staged", "rejected", "failed"}, timeout=60)

    service.kill()  # kill -9 in the middle of the shadow comparison
    produce(s, "predictions.labeled", _shadow_evidence("agrawal-k", 120, 0.9, 0.6))
    service.start()
    produce(s, "predictions.labeled", _shadow_evidence("agrawal-k", 120, 0.9, 0.6, start=120))
    steps = _job_steps(s, job, {"promoted", "rejected", "failed"}, timeout=60)
    assert [r["step"] for r in steps] == [
        "started", "data_gathered", "trained", "validated", "staged", "promoted"]
    assert steps[-1]["metrics"]["live_events"] == 240
    record = read_state(s).models["agrawal-k"]
    assert record.champion == "2"
    assert [h.event.transition for h in record.history if h.event.version == "2"] == [
        "registered", "shadow", "champion"]


def test_two_coordinators_only_one_acts(service: RetrainProcess, tmp_path: Path) -> None:
    """A second coordinator joins the group while the first's job is staged: it finds the job
    running on retrain.jobs but must neither fail nor resume it (its owner is alive), and
    neither of them acts on a replayed request or starts a second job of the model."""
    s = service.settings
    produce(s, "predictions.labeled", _labeled_records(
        _valid_events(800, seed=41, function=2, prefix="w", model="agrawal-2")))
    request = manual_request("agrawal-2", requested_by="dave", reason="two coordinators")
    send_request(s, request)
    job = job_id_for(request.request_id)
    _job_steps(s, job, {"staged", "rejected", "failed"}, timeout=60)

    second = RetrainProcess(s, tmp_path / "second.log")
    second.start()
    try:
        time.sleep(8)  # the second one recovers, joins the group and takes partitions
        send_request(s, request)  # delivered again: acted on once
        other = manual_request("agrawal-2", requested_by="erin", reason="while staged")
        send_request(s, other)
        ignored = _job_steps(s, job_id_for(other.request_id), {"ignored", "started"}, 30)
        assert ignored[-1]["step"] == "ignored" and ignored[-1]["reason"].startswith("busy")
        produce(s, "predictions.labeled", _shadow_evidence("agrawal-2", 240, 0.9, 0.6))
        steps = _job_steps(s, job, {"promoted", "rejected", "failed"}, timeout=60)
        time.sleep(3)  # anything a second actor would add comes now
    finally:
        code = second.stop()
    assert code == 0, second.log_path.read_text()[-4000:]
    steps = [r for r in read(s, "retrain.jobs", 3, timeout=2) if r["job_id"] == job]
    assert [r["step"] for r in steps] == [
        "started", "data_gathered", "trained", "validated", "staged", "promoted"]
    jobs = [r for r in read(s, "retrain.jobs", 3, timeout=2) if r["model"] == "agrawal-2"]
    assert sum(r["step"] == "started" for r in jobs) == 1
    events = [r for r in read(s, "model.events", 3, timeout=2) if r["model"] == "agrawal-2"]
    assert [(e["version"], e["transition"]) for e in events if e["version"] == "2"] == [
        ("2", "registered"), ("2", "shadow"), ("2", "champion")]
    assert read_state(s).models["agrawal-2"].champion == "2"
