"""End-to-end latency through separate processes, under a steady offered load.

A paced producer offers ``rate`` events/s to ``features`` and notes when it hands each event to
the client (``event_time`` is stamped then too); a consumer thread in the same process reads the
last topic of the chain and notes when each event's record becomes readable. Both clocks are
this process's ``perf_counter``, so the difference is the latency, to the microsecond.

The chain is either modelstream (ingest → predict, each ``modelstream run <service>``) or the
baseline: two raw passthrough processes, features → hop → hop2, the same three topics deep.
Before measuring, warm-up events flow until the first one comes out the far end, so group
joins and first-batch costs stay out of the figures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.runtime import kafka
from services.runtime.settings import Settings
from services.stack.processes import spawn, terminate

from .report import percentile
from .stack import BenchStack, settings_env

__all__ = ["Chain", "ChainRun", "LatencyResult", "load_events", "measure_chains"]

Chain = Literal["modelstream", "passthrough"]
WARMUP_RATE = 200.0
WARMUP_AFTER_FIRST = 1.0  # seconds of full-rate load, after the first output, not measured
STARTUP_TIMEOUT = 60.0
DRAIN_TIMEOUT = 10.0


@dataclass
class LatencyResult:
    p50_ms: float
    p99_ms: float
    sent: int
    received: int
    offered_rate: float  # events/s actually offered during the measured window


class _Arrivals(threading.Thread):
    """Reads the chain's output topic and notes when each event id first becomes readable."""

    def __init__(self, s: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.arrived: dict[str, float] = {}
        self.warm = threading.Event()
        self.done = False
        self._consumer = kafka.consumer(s, f"{s.topic_prefix}bench-latency")
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def run(self) -> None:
        arrived, loads = self.arrived, orjson.loads
        try:
            while not self.done:
                batch = self._consumer.consume(1000, timeout=0.05)
                now = time.perf_counter()
                for msg in batch:
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    event_id = loads(value)["event_id"]
                    if event_id.startswith("w-"):
                        self.warm.set()
                    elif event_id not in arrived:
                        arrived[event_id] = now
        finally:
            self._consumer.close()


class _Offer:
    """Paces events onto a topic at a steady rate, stamping each as it is handed over."""

    def __init__(self, s: Settings, topic: str) -> None:
        self.topic = topic
        # Configured like modelstream's own producers (linger.ms=2), as a real one would batch.
        self.producer = kafka.producer(s)
        self.sent_at: dict[str, float] = {}
        self._closed = False

    def send(self, key: bytes, event: dict[str, Any], event_id: str) -> None:
        event["event_id"] = event_id
        event["event_time"] = int(time.time() * 1000)
        value = orjson.dumps(event)
        self.sent_at[event_id] = time.perf_counter()
        self.producer.produce(self.topic, value, key)

    def close(self) -> None:
        """Flush and let go of the broker now (once), not when the collector gets to it: a
        producer left open keeps reconnecting after the broker stops."""
        if not self._closed:
            self._closed = True
            self.producer.flush(10)
            self.producer.close()

    def paced(
        self, events: list[tuple[bytes, dict[str, Any]]], rate: float, seconds: float,
        ids: str, until: threading.Event | None = None,
    ) -> tuple[int, float]:
        """Offer events for ``seconds`` (or until ``until`` is set); returns (count, elapsed)."""
        start = time.perf_counter()
        sent = 0
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or (until is not None and until.is_set()):
                break
            due = min(int(elapsed * rate) + 1, int(seconds * rate))
            while sent < due:
                key, event = events[sent % len(events)]
                self.send(key, dict(event), f"{ids}{sent}")
                sent += 1
            self.producer.poll(0)
            time.sleep(0.001)
        self.producer.flush(30)
        return sent, time.perf_counter() - start


def _spawn_chain(
    chain: Chain, s: Settings, logs: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    py = sys.executable
    if chain == "modelstream":
        env = settings_env(s)
        return [
            (spawn([py, "-m", "services.cli.main", "run", svc], log_path=log, env=env), log)
            for svc in ("ingest", "predict")
            for log in [logs / f"{svc}.log"]
        ]
    hops = [s.topics.features, s.topics.name("hop"), s.topics.name("hop2")]
    return [
        (spawn([py, "-m", "bench.passthrough", "--bootstrap", s.kafka_bootstrap or "",
                "--source", src, "--dest", dst, "--group", f"{s.topic_prefix}relay{i}"],
               log_path=log), log)
        for i, (src, dst) in enumerate(zip(hops, hops[1:], strict=False))
        for log in [logs / f"relay{i}.log"]
    ]


class ChainRun:
    """One chain's processes, topics, paced producer and output reader, from start to stop."""

    def __init__(self, stack: BenchStack, chain: Chain) -> None:
        self.stack = stack
        self.chain = chain
        extra = ("hop", "hop2") if chain == "passthrough" else ()
        self.settings = s = stack.settings(f"e2e-{chain[:3]}", extra_topics=extra)
        out_topic = s.topics.predictions if chain == "modelstream" else s.topics.name("hop2")
        self.logs = stack.root / "logs" / s.topic_prefix.rstrip(".")
        self.children = _spawn_chain(chain, s, self.logs)
        self.procs = [proc for proc, _ in self.children]
        self.arrivals = _Arrivals(s, out_topic)
        self.arrivals.start()
        self.offer = _Offer(s, s.topics.features)

    def measure(
        self,
        events: list[tuple[bytes, dict[str, Any]]],
        warmup: list[tuple[bytes, dict[str, Any]]],
        *,
        rate: float,
        seconds: float,
        warm_seconds: float = WARMUP_AFTER_FIRST,
    ) -> LatencyResult:
        offer, arrivals = self.offer, self.arrivals
        offer.paced(warmup, WARMUP_RATE, STARTUP_TIMEOUT, "w-", until=arrivals.warm)
        if not arrivals.warm.is_set():
            raise RuntimeError(f"{self.chain} chain produced nothing within "
                               f"{STARTUP_TIMEOUT:.0f}s; {self._keep_logs()}")
        offer.paced(warmup, rate, warm_seconds, "w-x")
        offer.sent_at.clear()
        sent, elapsed = offer.paced(events, rate, seconds, "m-")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(arrivals.arrived) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        got = arrivals.arrived
        lat = [(got[e] - t) * 1000.0 for e, t in offer.sent_at.items() if e in got]
        return LatencyResult(
            p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
            sent=sent, received=len(lat), offered_rate=sent / elapsed,
        )

    def _keep_logs(self) -> str:
        """Copies the chain's logs out of the temporary directory; returns where, and tails."""
        kept = Path(tempfile.gettempdir()) / f"modelstream-bench-failed-{self.logs.name}"
        shutil.copytree(self.logs, kept, dirs_exist_ok=True)
        tails = []
        for proc, log in self.children:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            lines = log.read_text(errors="replace").splitlines()[-3:]
            tails.append(f"{log.name} ({state}): " + " | ".join(lines))
        return f"logs kept in {kept}: " + "; ".join(tails)

    def stop(self) -> None:
        for proc in self.procs:  # all at once: each takes a moment to leave its group
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            terminate(proc)
        self.arrivals.done = True
        self.arrivals.join(10)
        self.offer.close()
        self.stack.drop_topics(self.settings)


def measure_chains(
    stack: BenchStack,
    chains: list[Chain],
    events: list[tuple[bytes, dict[str, Any]]],
    warmup: list[tuple[bytes, dict[str, Any]]],
    *,
    rate: float,
    seconds: float,
    warm_seconds: float = WARMUP_AFTER_FIRST,
    on_result: Callable[[Chain, LatencyResult | Exception], None] | None = None,
) -> dict[Chain, LatencyResult | Exception]:
    """Measure chains one after the other. All start together, so that their group joins
    overlap; each is stopped as soon as it has been measured. A chain waiting its turn only
    idles (its consumers poll empty topics)."""
    runs: dict[Chain, ChainRun] = {}
    results: dict[Chain, LatencyResult | Exception] = {}
    try:
        for chain in chains:
            runs[chain] = ChainRun(stack, chain)
        for chain, run in runs.items():
            try:
                results[chain] = run.measure(
                    events, warmup, rate=rate, seconds=seconds, warm_seconds=warm_seconds
                )
            except Exception as exc:  # the other chain is still worth measuring
                results[chain] = exc
            finally:
                run.stop()
            if on_result is not None:
                on_result(chain, results[chain])
    finally:
        for run in runs.values():
            if run.procs and any(p.poll() is None for p in run.procs):
                run.stop()
    return results


def load_events(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, dict[str, Any]]]:
    return [(key, orjson.loads(value)) for key, value in records]
