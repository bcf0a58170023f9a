"""Debian's Prometheus scrapes a running service and answers for a modelstream series through
its query API, with the project's alert rules loaded."""

from __future__ import annotations

import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from services.runtime.settings import Settings
from services.stack.processes import free_port, spawn, terminate
from services.stack.stack import Stack
from tests.helpers import FULL, event, produce

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"


def query(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = orjson.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_reads_a_modelstream_series(settings: Settings, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (make system-deps installs Debian's)")
    stack = Stack(settings, services=("ingest",), say=lambda _: None)
    stack.start()
    try:
        assert stack.wait_ready(60)
        produce(settings, "features", [(f"c-{i}".encode(), event(f"e-{i}", f"c-{i}", FULL))
                                       for i in range(20)])
        target = urllib.parse.urlsplit(stack.state["services"]["ingest"]["metrics"]).netloc
        shutil.copy(RULES, tmp_path / "rules.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{
                "job_name": "modelstream-ingest",
                "static_configs": [{"targets": [target]}],
                "relabel_configs": [{"target_label": "service", "replacement": "ingest"}],
            }],
        }))
        port = free_port()
        prom = spawn([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}"],
                     log_path=tmp_path / "prometheus.log")
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 40
            result: list[Any] = []
            while not result:
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.5)
                try:
                    result = query(base, "/api/v1/query",
                                   query='modelstream_events_in_total{service="ingest"}')[
                                       "result"]
                except OSError:
                    continue  # not listening yet
                result = [r for r in result if float(r["value"][1]) >= 20]
            (series,) = result
            assert series["metric"]["job"] == "modelstream-ingest"
            groups = query(base, "/api/v1/rules")["groups"]
            alerts = {r["name"] for g in groups for r in g["rules"]}
            assert "ModelstreamServiceDown" in alerts and len(alerts) == 7
            up = query(base, "/api/v1/query", query='up{job="modelstream-ingest"}')["result"]
            assert up and up[0]["value"][1] == "1"
        finally:
            terminate(prom)
    finally:
        stack.stop()
