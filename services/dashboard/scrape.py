"""The services' ``/metrics``, scraped every few seconds into per-service time series: events
in and out per second, consumer lag, CPU and memory, prediction latency p50/p99, dead letters
by reason, and the monitor's calibrated drift thresholds (the heatmap's unit).

Targets are the endpoints ``modelstream up`` wrote to ``stack.json``, or
``MODELSTREAM_DASHBOARD_TARGETS`` (``{"predict": "predict:9302"}``): a name that resolves to
several addresses is one service with several replicas, each scraped, their rates summed.
"""

from __future__ import annotations

import math
import socket
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..runtime.settings import Settings
from .promtext import Samples, histogram_quantile, parse_samples

__all__ = ["ScrapeHistory", "Target", "discover_targets", "scrape", "scrape_all"]

FAMILIES = (
    "modelstream_events_in",
    "modelstream_events_out",
    "modelstream_events_rejected",
    "modelstream_consumer_lag",
    "modelstream_prediction_latency_seconds",
    "modelstream_drift_threshold",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
)
SELF = "dashboard"
RATES = ("events_in", "events_out", "cpu")


@dataclass(frozen=True)
class Target:
    service: str
    url: str


def _resolve(service: str, hostport: str) -> list[Target]:
    if hostport.startswith(("http://", "https://")):
        return [Target(service, hostport)]
    host, _, port = hostport.rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return [Target(service, f"http://{hostport}/metrics")]  # scraped, and shown down
    addresses = sorted({str(info[4][0]) for info in infos})
    return [
        Target(service, f"http://[{a}]:{port}/metrics" if ":" in a else f"http://{a}:{port}/metrics")
        for a in addresses
    ]


def discover_targets(settings: Settings) -> list[Target]:
    if settings.dashboard_targets:
        return [t for name, hp in sorted(settings.dashboard_targets.items())
                for t in _resolve(name, hp)]
    path = settings.data_dir / "stack.json"
    try:
        services = orjson.loads(path.read_bytes()).get("services", {})
    except (OSError, orjson.JSONDecodeError):
        return []  # `up` has not written it yet
    return [Target(name, ep["metrics"]) for name, ep in sorted(services.items())
            if name != SELF and "metrics" in ep]


def scrape(target: Target, timeout: float = 2.0) -> Samples | None:
    """The target's samples, or None when it does not answer (down)."""
    try:
        with urllib.request.urlopen(target.url, timeout=timeout) as resp:
            return parse_samples(resp.read().decode("utf-8", "replace"), FAMILIES)
    except (OSError, ValueError):
        return None


def _sum(samples: Samples, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all((k, m) in labels for k, m in match.items()))


def _increase(now: float, before: float | None) -> float:
    """Counter increase between scrapes; a restarted process starts again from zero."""
    if before is None:
        return 0.0
    return now - before if now >= before else now


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


class ScrapeHistory:
    """Per-target deltas between consecutive scrapes, summed per service, kept as series."""

    def __init__(self, points: int) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self._last: dict[Target, tuple[float, Samples]] = {}
        self.up: dict[str, list[int]] = {}  # service -> [replicas answering, replicas]
        self.dead_letters: dict[tuple[str, str], float] = {}
        self.thresholds: dict[tuple[str, str, str, str, str], float] = {}

    def add(self, ts: float, results: dict[Target, Samples | None]) -> None:
        per_service: dict[str, dict[str, float]] = {}
        latency: dict[float, float] = {}
        up: dict[str, list[int]] = {}
        dead: dict[tuple[str, str], float] = {}
        for target, samples in results.items():
            counts = up.setdefault(target.service, [0, 0])
            counts[1] += 1
            if samples is None:
                self._last.pop(target, None)
                continue
            counts[0] += 1
            before = self._last.get(target)
            self._last[target] = (ts, samples)
            row = per_service.setdefault(target.service, {
                "events_in": 0.0, "events_out": 0.0, "cpu": 0.0, "memory_mb": 0.0, "lag": 0.0,
            })
            row["memory_mb"] += _sum(samples, "process_resident_memory_bytes") / 2**20
            row["lag"] += _sum(samples, "modelstream_consumer_lag")
            for (name, labels), v in samples.items():
                if name == "modelstream_events_rejected_total":
                    key = (dict(labels).get("service", target.service), dict(labels)["reason"])
                    dead[key] = dead.get(key, 0.0) + v
                elif name == "modelstream_drift_threshold":
                    d = dict(labels)
                    self.thresholds[(d["model"], d["version"], d["role"], d["feature"],
                                     d["statistic"])] = v
            if before is None:
                continue
            row["rated"] = 1.0
            t0, prev = before
            dt = max(ts - t0, 1e-3)
            for field, name in (("events_in", "modelstream_events_in_total"),
                                ("events_out", "modelstream_events_out_total"),
                                ("cpu", "process_cpu_seconds_total")):
                row[field] += _increase(_sum(samples, name), _sum(prev, name)) / dt
            for (name, labels), v in samples.items():
                if name == "modelstream_prediction_latency_seconds_bucket":
                    le = float(dict(labels)["le"])
                    # A series the target did not have last time started from zero since.
                    latency[le] = latency.get(le, 0.0) + _increase(v, prev.get((name, labels), 0.0))
        self.up = up
        self.dead_letters = dead
        point: dict[str, Any] = {"t": int(ts * 1000), "services": {}}
        for service, row in per_service.items():
            row["cpu"] *= 100.0  # percent of one core
            rated = row.pop("rated", 0.0)
            point["services"][service] = {
                # A rate needs two scrapes of one replica: none yet is no rate, not zero.
                k: None if k in RATES and not rated else _round(v, 2) for k, v in row.items()}
        p50, p99 = histogram_quantile(0.5, latency), histogram_quantile(0.99, latency)
        point["latency_p50_ms"] = _round(p50 * 1000 if p50 is not None else None, 2)
        point["latency_p99_ms"] = _round(p99 * 1000 if p99 is not None else None, 2)
        self.points.append(point)

    def series(self) -> dict[str, Any]:
        """Columns over a common time axis; a service missing at a point has None there."""
        services = sorted({s for p in self.points for s in p["services"]})
        out: dict[str, Any] = {"t": [p["t"] for p in self.points]}
        for field in ("events_in", "events_out", "lag", "cpu", "memory_mb"):
            out[field] = {s: [p["services"].get(s, {}).get(field) for p in self.points]
                          for s in services}
        for field in ("latency_p50_ms", "latency_p99_ms"):
            out[field] = [p[field] for p in self.points]
        return out


def scrape_all(targets: Iterable[Target], timeout: float = 2.0) -> dict[Target, Samples | None]:
    return {t: scrape(t, timeout) for t in targets}
