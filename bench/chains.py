"""Chains of separate processes between two topics, driven and timed from this process.

A :class:`ProcessChain` spawns its processes (modelstream services, the raw passthrough hops,
or an alternative such as the REST consumer and its model server), reads the chain's last topic
in a thread (``latency``'s arrival clock) and offers events to its first topic. It measures:

- ``burst(n)``: n events handed over as fast as the client takes them; events/s = n / (first
  hand-over → last output readable), and the CPU time each process of the chain spent meanwhile
  (from ``/proc``), per event;
- ``load(rate, seconds)``: a steady offered load; p50/p99/p999 of hand-over → output readable,
  and whether the chain kept up (:func:`saturated`).

Warm-up events flow first until one comes out the far end, plus a second at the load's rate, so
group joins, model loads and first-batch costs stay out of every figure.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import process_time
from types import TracebackType
from typing import Any

from services.runtime.settings import Settings
from services.stack.processes import free_port, spawn, terminate

from . import procstat
from .latency import STARTUP_TIMEOUT, WARMUP_RATE, _Arrivals, _Offer, _spawn_chain
from .report import percentile
from .stack import BenchStack, settings_env

__all__ = [
    "BurstResult",
    "Child",
    "LoadResult",
    "ProcessChain",
    "faust_agent",
    "modelstream_path",
    "service_process",
    "passthrough_hops",
    "predict_replicas",
    "rest_serving",
    "saturated",
]

Events = Sequence[tuple[bytes, dict[str, Any]]]
DRAIN_SECONDS = 10.0
SATURATED_P50_MS = 1000.0  # a queue is building: the chain no longer keeps up


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


Launcher = Callable[[Settings, Path], list[Child]]


@dataclass
class BurstResult:
    events: int
    received: int
    seconds: float  # first hand-over → last output readable
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process meanwhile
    broker_cpu: float = float("nan")  # the embedded broker's CPU seconds meanwhile
    driver_cpu: float = float("nan")  # this process's (producing and reading the records)
    machine_cpu: float = float("nan")  # every process on the machine, other users' included

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_per_event_us(self) -> float:
        """CPU of every process of the chain, per event (the broker's and Valkey's left out)."""
        return sum(self.cpu.values()) / self.received * 1e6 if self.received else float("nan")

    def note(self) -> str:
        cpu = ", ".join(f"{name} {s:.2f} s" for name, s in self.cpu.items())
        return (f"{self.received:,}/{self.events:,} out in {self.seconds:.2f} s; CPU {cpu} "
                f"({self.cpu_per_event_us:.0f} µs/event), broker {self.broker_cpu:.2f} s, "
                f"bench driver {self.driver_cpu:.2f} s; machine {self.machine_cores:.2f} of "
                f"{os.cpu_count()} cores busy")

    @property
    def machine_cores(self) -> float:
        """Cores busy on the whole machine over the burst, whoever used them."""
        return self.machine_cpu / self.seconds
    @property
    def cores_busy(self) -> float:
        """CPU seconds of the chain, the broker and the driver over the wall seconds."""
        return (sum(self.cpu.values()) + self.broker_cpu + self.driver_cpu) / self.seconds


@dataclass
class LoadResult:
    offered: float  # events/s actually offered
    sent: int
    received: int
    latencies_ms: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def p999(self) -> float:
        return percentile(self.latencies_ms, 99.9)

    @property
    def saturated(self) -> bool:
        return saturated(self.sent, self.received, self.p50)

    def note(self) -> str:
        return (f"offered {self.offered:,.0f} ev/s, {self.received:,}/{self.sent:,} arrived, "
                f"p50 {self.p50:.1f} p99 {self.p99:.1f} p999 {self.p999:.1f} ms")


def saturated(sent: int, received: int, p50_ms: float) -> bool:
    """The chain did not keep up: events still missing after the drain, or a queue (p50 > 1 s).

    >>> saturated(1000, 1000, 80.0), saturated(1000, 990, 80.0), saturated(1000, 1000, 2500.0)
    (False, True, True)
    """
    return received < sent or not p50_ms <= SATURATED_P50_MS


class ProcessChain:
    """Processes from ``source(settings)`` to ``sink(settings)`` on fresh topics of their own."""

    _ids = itertools.count(1)

    def __init__(
        self,
        stack: BenchStack,
        name: str,
        launch: Launcher,
        source: Callable[[Settings], str],
        sink: Callable[[Settings], str],
        extra_topics: Sequence[str] = (),
        **overrides: Any,
    ) -> None:
        self.stack = stack
        self.name = name
        self.settings = s = stack.settings(name, extra_topics=extra_topics, **overrides)
        self.logs = stack.root / "logs" / s.topic_prefix.rstrip(".")
        self.children: list[Child] = []
        self.arrivals: _Arrivals | None = None
        self.offer = _Offer(s, source(s))
        try:
            self.children = launch(s, self.logs)
            self.arrivals = _Arrivals(s, sink(s))
            self.arrivals.start()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> ProcessChain:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def warm(self, events: Events, rate: float, seconds: float = 1.0) -> None:
        assert self.arrivals is not None
        self.offer.paced(list(events), WARMUP_RATE, STARTUP_TIMEOUT, "w-",
                         until=self.arrivals.warm)
        if not self.arrivals.warm.is_set():
            raise RuntimeError(f"{self.name}: nothing came out within {STARTUP_TIMEOUT:.0f} s; "
                               + self.tails())
        self.offer.paced(list(events), rate, seconds, f"w{next(self._ids)}-")

    def burst(self, events: Events, n: int, timeout: float = 120.0) -> BurstResult:
        """Hand n events over at once; wait until each has come out (or ``timeout``)."""
        assert self.arrivals is not None
        arrived, offer = self.arrivals.arrived, self.offer
        ids = [f"b{next(self._ids)}-{i}" for i in range(n)]
        offer.sent_at.clear()
        cpu_before, broker_before, driver_before = self.cpu(), self._broker_cpu(), process_time()
        machine_before = procstat.machine_busy_seconds()
        for i, event_id in enumerate(ids):
            key, event = events[i % len(events)]
            offer.send(key, dict(event), event_id)
            if i % 1000 == 999:
                offer.producer.poll(0)
        offer.producer.flush(30)
        deadline = time.monotonic() + timeout
        missing = set(ids)
        while missing and time.monotonic() < deadline and self.alive():
            time.sleep(0.02)
            missing = {e for e in missing if e not in arrived}
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in self.cpu().items()}
        broker, driver = self._broker_cpu() - broker_before, process_time() - driver_before
        machine = procstat.machine_busy_seconds() - machine_before
        got = [arrived[e] for e in ids if e in arrived]
        if not got:
            raise RuntimeError(f"{self.name}: none of {n:,} events came out; {self.tails()}")
        start = min(offer.sent_at[e] for e in ids)
        return BurstResult(n, len(got), max(got) - start, cpu, broker, driver, machine)

    def _broker_cpu(self) -> float:
        broker = self.stack.broker
        try:
            return procstat.cpu_seconds(broker.proc.pid) if broker else float("nan")
        except OSError:
            return float("nan")

    def load(self, events: Events, rate: float, seconds: float) -> LoadResult:
        """A steady offered load; latencies of every event that came out within the drain."""
        assert self.arrivals is not None
        arrived, offer = self.arrivals.arrived, self.offer
        prefix = f"m{next(self._ids)}-"
        offer.sent_at.clear()
        sent, elapsed = offer.paced(list(events), rate, seconds, prefix)
        sent_at = dict(offer.sent_at)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and self.alive():
            if sum(1 for e in sent_at if e in arrived) >= sent:
                break
            time.sleep(0.1)
        lat = [(arrived[e] - t) * 1000.0 for e, t in sent_at.items() if e in arrived]
        return LoadResult(sent / elapsed, sent, len(lat), lat)

    def alive(self) -> bool:
        return all(c.proc.poll() is None for c in self.children)

    def cpu(self) -> dict[str, float]:
        out = {}
        for c in self.children:
            try:
                out[c.name] = procstat.cpu_seconds(c.proc.pid)
            except (OSError, ValueError):
                out[c.name] = float("nan")
        return out

    def rss(self) -> dict[str, int]:
        return {c.name: procstat.rss_bytes(c.proc.pid) for c in self.children}

    def tails(self) -> str:
        parts = []
        for c in self.children:
            state = "running" if c.proc.poll() is None else f"exited {c.proc.returncode}"
            lines = c.log.read_text(errors="replace").splitlines()[-3:] if c.log.exists() else []
            parts.append(f"{c.name} ({state}): " + " | ".join(lines))
        return f"logs in {self.logs}: " + "; ".join(parts)

    def stop(self) -> None:
        for c in self.children:  # all at once: each takes a moment to leave its group
            if c.proc.poll() is None:
                c.proc.terminate()
        for c in self.children:
            terminate(c.proc)
        if self.arrivals is not None:
            self.arrivals.done = True
            self.arrivals.join(10)
            self.arrivals = None
        self.offer.close()
        self.stack.drop_topics(self.settings)
        self.stack.drop_keys(self.settings)


def service_process(name: str, s: Settings, logs: Path, service: str | None = None) -> Child:
    log = logs / f"{name}.log"
    argv = [sys.executable, "-m", "services.cli.main", "run", service or name]
    return Child(name, spawn(argv, log_path=log, env=settings_env(s)), log)


def modelstream_path(s: Settings, logs: Path) -> list[Child]:
    """features → ingest → features.valid → predict → predictions, as `modelstream up` runs it."""
    return [service_process("ingest", s, logs), service_process("predict", s, logs)]


def predict_replicas(replicas: int) -> Launcher:
    def launch(s: Settings, logs: Path) -> list[Child]:
        return [service_process(f"predict-{i + 1}", s, logs, "predict") for i in range(replicas)]

    return launch


def passthrough_hops(s: Settings, logs: Path) -> list[Child]:
    """features → hop → hop2 through two raw passthrough processes (topics ``hop``, ``hop2``)."""
    return [Child(log.stem, proc, log) for proc, log in _spawn_chain("passthrough", s, logs)]


def rest_serving(s: Settings, logs: Path) -> list[Child]:
    """The REST consumer (features → predictions) and its FastAPI model server."""
    port = free_port()
    py = sys.executable
    server = Child("rest-server", spawn(
        [py, "-m", "bench.rest_server", "--port", str(port), "--artifacts", str(s.artifacts)],
        log_path=logs / "rest-server.log"), logs / "rest-server.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", server)
    except BaseException:
        terminate(server.proc)
        raise
    consumer = Child("rest-consumer", spawn(
        [py, "-m", "bench.rest_consumer", "--bootstrap", s.kafka_bootstrap or "",
         "--source", s.topics.features, "--dest", s.topics.predictions,
         "--group", f"{s.topic_prefix}rest", "--url", f"http://127.0.0.1:{port}/predict"],
        log_path=logs / "rest-consumer.log"), logs / "rest-consumer.log")
    return [server, consumer]


def faust_agent(s: Settings, logs: Path) -> list[Child]:
    """The faust-streaming agent, features.valid → predictions."""
    log = logs / "faust.log"
    argv = [sys.executable, "-m", "bench.faust_agent", "--bootstrap", s.kafka_bootstrap or "",
            "--source", s.topics.features_valid, "--dest", s.topics.predictions,
            "--group", f"{s.topic_prefix}faust", "--artifacts", str(s.artifacts),
            "--partitions", str(s.partitions), "--datadir", str(logs / "faust-data")]
    return [Child("faust", spawn(argv, log_path=log), log)]


def _wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}: "
                               + child.log.read_text(errors="replace")[-1000:])
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:.0f} s")
