"""End to end, as the README tells a user: `modelstream up`, then kcat, kafkajs, the CLI and
an HTTP scrape of /metrics from outside. Everything here runs as separate processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from services.models import ArtifactStore
from services.stack.processes import free_port
from tests.helpers import FULL

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "services.cli.main"]


class Up:
    def __init__(self, proc: subprocess.Popen[str], env: dict[str, str], data: Path) -> None:
        self.proc, self.env, self.data = proc, env, data

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        res = subprocess.run([*CLI, *args], env=self.env, input=stdin, capture_output=True,
                             text=True, timeout=timeout)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def state(self) -> dict:
        return orjson.loads((self.data / "stack.json").read_bytes())


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("up")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSTREAM_")}
    env.update({
        "MODELSTREAM_DATA_DIR": str(data),
        "MODELSTREAM_KAFKA_PORT": str(free_port()),
        "MODELSTREAM_REDIS_PORT": str(free_port()),
        "MODELSTREAM_FREE_PORTS": "true",
    })
    proc = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=data)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "modelstream is up" in line or proc.poll() is not None:
            break
    assert any("modelstream is up" in ln for ln in lines), "".join(lines)
    yield Up(proc, env, data)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_status_json_lists_every_endpoint(up: Up) -> None:
    report = orjson.loads(up.cli("status", "--json"))
    assert report["broker"].startswith("127.0.0.1:")
    assert report["redis"].startswith("redis://127.0.0.1:")
    assert report["topics"][ "features"]["partitions"] == 4
    assert report["topics"]["model.events"]["partitions"] == 1
    for name in ("ingest", "predict", "join", "monitor"):
        svc = report["services"][name]
        assert svc["status"] == "ready", svc
        assert svc["metrics"].endswith("/metrics") and svc["health"].endswith("/healthz")
    text = up.cli("status")
    assert "consumer groups" in text and "modelstream-predict" in text


def test_up_registers_the_demo_model_as_champion_on_model_events(up: Up) -> None:
    history = orjson.loads(up.cli("models", "history", "agrawal", "--json"))
    assert [(e["transition"], e["version"], e["actor"]) for e in history["events"]] == [
        ("registered", "1", "modelstream up"), ("champion", "1", "modelstream up")]
    assert [c["version"] for c in history["champions"]] == ["1"]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by `make test`")
def test_kcat_round_trip(up: Up) -> None:
    # One event gives its time as ISO-8601, as a hand-written one may.
    times = {0: {"event_time": "2026-12-01T11:00:00.250+01:00"}}
    lines = "".join(
        f"kc-{i}:" + orjson.dumps({"event_id": f"kcat-{i}", "entity_id": f"kc-{i}",
                                    "features": {**FULL, "age": 20 + i},
                                    **times.get(i, {})}).decode() + "\n"
        for i in range(10)
    )
    up.cli("kcat", "-P", "-t", "features", "-K:", stdin=lines)
    deadline = time.monotonic() + 60
    found: dict[str, dict] = {}
    while time.monotonic() < deadline and len(found) < 10:
        out = up.cli("kcat", "-C", "-t", "predictions", "-o", "beginning", "-e", "-q")
        for ln in out.splitlines():
            rec = orjson.loads(ln)
            if rec["event_id"].startswith("kcat-"):
                found[rec["event_id"]] = rec
        time.sleep(0.5)
    assert len(found) == 10
    young, old = found["kcat-0"], found["kcat-9"]  # ages 20 and 29
    assert young["model"] == "agrawal" and young["features"]["age"] == 20
    assert young["event_time"] == 1_796_119_200_250  # epoch milliseconds from there on
    assert old["label"] in {"0", "1"}


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_kafkajs_client_round_trip(up: Up) -> None:
    script = ROOT / "tests/interop/node/interop.js"
    if not (script.parent / "node_modules/kafkajs").exists():
        pytest.skip("kafkajs is installed by `make test`")
    res = subprocess.run(["node", str(script), up.state()["broker"], "", "15"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = orjson.loads(res.stdout)
    assert out["sent"] == 15 and len(out["predictions"]) == 15
    assert {p["role"] for p in out["predictions"]} == {"champion"}


def test_produce_tail_and_metrics_scrape(up: Up) -> None:
    good = orjson.dumps({"event_id": "cli-1", "entity_id": "cli-c1", "features": FULL}).decode()
    bad = orjson.dumps({"event_id": "cli-2", "entity_id": "cli-c2",
                        "features": {**FULL, "age": 500}}).decode()
    up.cli("produce", "features", stdin=f"{good}\n{bad}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dlq = [orjson.loads(ln) for ln in
               up.cli("tail", "features.dlq", "--from-beginning").splitlines()]
        preds = [orjson.loads(ln) for ln in
                 up.cli("tail", "predictions", "--from-beginning").splitlines()]
        if any(r.get("reason") == "out_of_range" for r in dlq) and any(
            p["event_id"] == "cli-1" for p in preds
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the produced events did not come out")
    metrics_url = up.state()["services"]["ingest"]["metrics"]
    body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    assert 'modelstream_events_rejected_total{reason="out_of_range",service="ingest"}' in body
    assert "modelstream_events_in_total" in body
    pbody = urllib.request.urlopen(up.state()["services"]["predict"]["metrics"]).read().decode()
    assert 'modelstream_predictions_total{model="agrawal",role="champion",version="1"}' in pbody


def test_outcomes_join_and_the_monitor_reports(up: Up) -> None:
    """An outcome produced from the CLI labels its prediction; `metrics` shows the version."""
    outcome = orjson.dumps({"event_id": "cli-1", "label": "0"}).decode()
    up.cli("produce", "outcomes", "--key-field", "event_id", stdin=outcome + "\n")
    deadline = time.monotonic() + 60
    labeled: list[dict] = []
    while time.monotonic() < deadline and not labeled:
        labeled = [r for r in (orjson.loads(ln) for ln in up.cli(
            "tail", "predictions.labeled", "--from-beginning").splitlines())
            if r["event_id"] == "cli-1"]
        time.sleep(0.5)
    assert labeled and labeled[0]["outcome_label"] == "0"
    assert labeled[0]["label_delay_ms"] >= 0
    report: dict = {}
    while time.monotonic() < deadline:
        report = orjson.loads(up.cli("metrics", "--json"))
        if report.get("agrawal|1|champion", {}).get("labeled", 0) >= 1:
            break
        time.sleep(1)
    snap = report["agrawal|1|champion"]
    assert snap["predictions"] >= 1 and snap["labeled"] >= 1
    assert "accuracy" in snap["metrics"]
    assert isinstance(orjson.loads(up.cli("alerts", "--json")), list)
    assert "alerts firing now" in up.cli("alerts")


def test_supervisor_restarts_a_crashed_service(up: Up) -> None:
    pid = up.state()["services"]["predict"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        report = orjson.loads(up.cli("status", "--json"))
        if report["services"]["predict"]["status"] == "ready":
            break
        time.sleep(0.5)
    assert report["services"]["predict"]["status"] == "ready"
    log = (up.data / "logs" / "predict.log").read_text()
    assert log  # the restarted service logs into the same file


def test_ctrl_c_stops_everything(up: Up) -> None:
    pids = [svc["pid"] for svc in up.state()["services"].values()]
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(60) == 0
    time.sleep(0.5)
    assert not [p for p in pids if _alive(p)]
    assert not (up.data / "stack.json").exists()


def test_demo_closes_the_loop_and_leaves_no_process(
    tmp_path: Path, demo_store: ArtifactStore
) -> None:
    """`modelstream demo`, shortened: drift → alert → retrain → shadow → promotion → accuracy
    back up, reported step by step; every child process gone when it exits.

    It runs where an earlier demo left its retrained version and where `up` keeps a store of
    its own: the story starts from the demo model it trains, v1, all the same (it used to
    crown the earlier demo's retrained model), and `up`'s store is left as it was."""
    for store in (tmp_path / "artifacts", tmp_path / "demo" / "artifacts"):
        shutil.copytree(demo_store.root, store)
        earlier = ArtifactStore(store)
        card = earlier.card("agrawal", "1").model_copy(update={"version": "2"})
        earlier.publish(earlier.load_bytes("agrawal", "1"), card)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSTREAM_")}
    env.update({
        "MODELSTREAM_DATA_DIR": str(tmp_path),
        "MODELSTREAM_KAFKA_PORT": str(free_port()),
        "MODELSTREAM_REDIS_PORT": str(free_port()),
        # Less label wait and a shorter training window than the demo's own: a shorter story.
        "MODELSTREAM_RETRAIN_ALERT_WAIT_SECONDS": "6",
        "MODELSTREAM_RETRAIN_WINDOW_SECONDS": "6",
        "COLUMNS": "200",
    })
    res = subprocess.run([*CLI, "demo", "--rate", "1000", "--normal-seconds", "8",
                          "--max-seconds", "60", "--tail-seconds", "2"], env=env,
                         capture_output=True, text=True, timeout=150, cwd=tmp_path)
    out = res.stdout
    assert res.returncode == 0, out[-6000:] + res.stderr[-3000:]
    assert "loop closed: agrawal v2 promoted" in out
    assert "reconciled:" in out and "none scored twice" in out
    steps = out[out.index("the loop, step by step"):].splitlines()
    for step in ("drift onset", "alert", "job started", "trained", "shadow staged", "promoted",
                 "accuracy recovered"):
        cells = next(c for c in (ln.strip("│┃ ").split("│") for ln in steps)
                     if c[0].strip() == step)
        assert cells[1].strip().endswith(" s"), cells  # every step has its time
    assert "agrawal v2 champion" in out  # the version timeline, from model.events
    assert "model   agrawal v1 trained and stored" in out
    assert f"state   {tmp_path / 'demo'} " in out  # beside `up`'s directory, not in it
    assert (tmp_path / "demo" / "logs" / "predict.log").exists()
    assert not (tmp_path / "logs").exists() and not (tmp_path / "demo" / "stack.json").exists()
    assert ArtifactStore(tmp_path / "artifacts").versions("agrawal") == ["1", "2"]
    pids = [int(ln.split("pid")[1].split()[0]) for ln in out.splitlines()
            if ln.startswith("service ") and " pid " in ln]
    assert len(pids) >= 6
    assert not [p for p in pids if _alive(p)]
