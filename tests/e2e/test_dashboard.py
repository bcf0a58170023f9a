"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) loads the page of
a running stack — ingest, predict, join, monitor and the dashboard as child processes, on the
session's broker and Valkey — after traffic, outcomes and a few registry transitions went
through it, and the test reads the charts' data back out of the rendered DOM. A screenshot is
saved next to the test's files (``dashboard.png``)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.cli.traffic import agrawal_events
from services.dashboard.server import CSP, STATIC
from services.models import ArtifactStore
from services.registry import register, rollback, transition
from services.runtime import kafka
from services.runtime.settings import Settings
from services.stack.stack import STACK_SERVICES, Stack

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATIC_DIR = Path(__file__).resolve().parents[2] / "services" / "dashboard" / "static"
SERVICE_ENV = {
    "MODELSTREAM_MONITOR_WINDOW": "500",
    "MODELSTREAM_MONITOR_EVAL_SECONDS": "1",
    "MODELSTREAM_DASHBOARD_SCRAPE_SECONDS": "1",
    # The registry story writes every model.events record the page shows: an alert on this
    # traffic would otherwise start a retraining job, whose candidate adds two (eight were
    # seen in one CI run).
    "MODELSTREAM_RETRAIN_ALERT_KINDS": "[]",
}
EVENTS = 4000


def chromium(url: str, *args: str, profile: Path, budget_ms: int = 4000) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make system-deps installs Debian's chromium)")
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2100",
        f"--virtual-time-budget={budget_ms}", *args, url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Elements(HTMLParser):
    """Every element's attributes, by id, and every element, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.all: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.all.append((tag, a))
        if "id" in a:
            self.by_id[a["id"]] = a

    def having(self, attr: str) -> list[dict[str, str]]:
        return [a for _, a in self.all if attr in a]


@pytest.fixture
def stack(settings: Settings, demo_store: ArtifactStore,
          tmp_path: Path) -> Iterator[tuple[Stack, Settings]]:
    # A store of this test's own: the registry story below adds a version to it.
    artifacts = tmp_path / "artifacts"
    shutil.copytree(demo_store.root, artifacts)
    settings = settings.model_copy(update={"artifact_dir": artifacts})
    st = Stack(settings, services=STACK_SERVICES, say=lambda _: None, service_env=SERVICE_ENV)
    resolved = st.start()
    try:
        assert st.wait_ready(90), "services did not become ready"
        yield st, resolved
    finally:
        st.stop()


def send_traffic(settings: Settings) -> dict[str, int]:
    """Feature events (3% deliberately bad) and the outcome of every valid one."""
    producer = kafka.producer(settings)
    kinds: dict[str, int] = {}
    for ev in agrawal_events(EVENTS, seed=11, bad_rate=0.03):
        producer.produce(settings.topics.features, ev.value, ev.key)
        kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
        if ev.label is not None:
            outcome = {"event_id": ev.event_id, "label": str(ev.label)}
            producer.produce(settings.topics.outcomes, orjson.dumps(outcome),
                             ev.event_id.encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    return kinds


def registry_story(settings: Settings) -> None:
    """`up` made v1 champion; v2 registers, serves as canary, is promoted, and is rolled back:
    v1 serves again. Six model.events in all."""
    store = ArtifactStore(settings.artifacts)
    card = store.card("agrawal", "1")
    onnx = (settings.artifacts / "agrawal" / "1" / "model.onnx").read_bytes()
    event = register(settings, onnx, card, actor="test", reason="retrained", store=store)
    assert event.transition == "registered", event.reason
    v2 = event.version
    transition(settings, "agrawal", v2, "canary", fraction=0.2, actor="test", store=store)
    transition(settings, "agrawal", v2, "champion", actor="test", store=store)
    rollback(settings, "agrawal", actor="test", reason="accuracy below threshold")


def api_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/state", timeout=5) as resp:
        assert resp.headers["Content-Security-Policy"] == CSP
        return dict(orjson.loads(resp.read()))


def wait_for(url: str, ok: Any, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = api_state(url)
        if ok(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_static_files_load_nothing_from_elsewhere() -> None:
    for name, _ in STATIC.values():
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "cdn" not in text.lower(), name
    assert "default-src 'none'" in CSP and "connect-src 'self'" in CSP


def test_dashboard_in_chromium(stack: tuple[Stack, Settings], tmp_path: Path) -> None:
    st, settings = stack
    url = st.state["services"]["dashboard"]["metrics"].removesuffix("metrics")
    kinds = send_traffic(settings)
    registry_story(settings)

    def missing(state: dict[str, Any]) -> list[str]:
        series, versions = state["series"], state["versions"]
        checks = {
            "predict events/s": any(v and v > 0 for v in series["events_in"].get("predict", [])),
            "latency": any(v is not None for v in series["latency_p50_ms"]),
            "accuracy": bool(versions) and any(
                a is not None for a in versions[0]["quality"]["accuracy"]),
            "drift": bool(versions) and bool(versions[0]["drift"]["features"]),
            "model events": len(state["model_events"]) == 6,
        }
        return [name for name, ok in checks.items() if not ok]

    state = wait_for(url, lambda s: not missing(s))
    logs = {p.name: p.read_text()[-1500:] for p in sorted(st.log_dir.glob("*.log"))}
    assert not missing(state), (missing(state), state["model_events"], state["undecodable"], logs)

    dom = chromium(url, "--dump-dom", profile=tmp_path / "profile")
    page = Elements()
    page.feed(dom)
    body = next(a for tag, a in page.all if tag == "body")
    assert int(body["data-polls"]) >= 2, "the page did not poll again without a reload"
    assert abs(int(body["data-updated"]) - time.time() * 1000) < 60_000

    pills = {a["data-service"]: int(a["data-up"]) for a in page.having("data-service")}
    scraped = [name for name in st.service_names if name != "dashboard"]
    assert pills == dict.fromkeys(scraped, 1), pills  # every service the stack runs, up

    def chart(name: str) -> tuple[int, dict[str, float | None], dict[str, float | None]]:
        a = page.by_id[name]
        return int(a["data-points"]), orjson.loads(a["data-max"]), orjson.loads(a["data-last"])

    points, peak, _ = chart("events_in")
    assert points > 0 and peak["ingest"] and peak["predict"] and peak["join"], peak
    points, peak, _ = chart("latency")
    assert points > 0 and peak["p99"] and peak["p99"] >= (peak["p50"] or 0) > 0
    points, _, last = chart("memory_mb")
    assert all((last[s] or 0) > 20 for s in ("ingest", "predict", "join", "monitor")), last
    points, peak, _ = chart("cpu")
    assert points > 0 and (peak["predict"] or 0) > 0
    assert int(page.by_id["lag"]["data-points"]) > 0

    reasons = {a["data-reason"]: int(a["data-count"]) for a in page.having("data-reason")}
    assert reasons.get("not_json") == kinds.get("not_json"), (reasons, kinds)
    assert sum(reasons.values()) == sum(n for k, n in kinds.items()
                                        if k not in ("full", "partial"))

    points, _, last = chart("quality")
    accuracy = {k: v for k, v in last.items() if k.endswith(" accuracy")}
    estimate = {k: v for k, v in last.items() if k.endswith(" estimate")}
    assert points > 0 and accuracy and estimate
    assert all(v is not None and 0.5 < v <= 1.0 for v in accuracy.values()), accuracy
    assert int(page.by_id["drift"]["data-cells"]) >= 9  # nine features and the score

    assert int(page.by_id["timeline"]["data-events"]) == 6, api_state(url)["model_events"]
    champions = [a["data-version"] for tag, a in page.all
                 if tag == "rect" and a.get("class") == "champion"]
    assert champions == ["1", "2", "1"]  # the rollback restored v1
    assert any(a.get("data-transition") == "rolled_back" for a in page.having("data-transition"))

    shot = tmp_path / "dashboard.png"
    chromium(url, f"--screenshot={shot}", profile=tmp_path / "profile")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1400, 2100)
    assert shot.stat().st_size > 30_000  # charts, not a blank page
