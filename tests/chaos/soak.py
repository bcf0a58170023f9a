"""Load and soak: the pipeline's maximum throughput, then a long run at a share of it, then a
stalled consumer.

1. **Maximum**: a burst of feature events (with their outcomes) as fast as the producer goes;
   the maximum is the events per second until the monitor has counted every prediction and
   every labeled one — the whole pipeline's capacity, every service sharing the machine.
2. **Soak**: ``--fraction`` (0.8) of that rate for ``--minutes``: every two seconds the RSS of
   each service and the backlog (feature events sent but not yet predicted, outcomes sent but
   not yet labeled). Pass: no service exits, the backlog stays bounded (it ends near zero and
   does not grow), RSS is flat (its slope per service, by least squares over the run after a
   warm-up fifth, is reported).
3. **Backpressure**: predict is stopped (SIGSTOP) while the load goes on: ingest keeps writing
   to ``features.valid`` and must stay within its memory; predict is then resumed and must
   catch up without its memory following the backlog (librdkafka's fetch queue is bounded by
   ``queued.max.messages.kbytes``).

Finally every topic is reconciled (see :mod:`.reconcile`).

    python -m tests.chaos.soak [--minutes 10] [--fraction 0.8] [--stall 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from services.models import ArtifactStore
from services.models.agrawal import ensure_demo_model
from services.runtime import kafka
from services.runtime.settings import Settings
from services.stack.embedded import start_broker
from services.stack.processes import free_port

from .cluster import Cluster, RestartableValkey
from .load import Load, Sent
from .reconcile import Report, reconcile, reconcile_counts
from .run import wait_drained

__all__ = ["SoakResult", "measure_max", "run_soak", "slope"]

FULL_RECONCILE_MAX = 300_000
REPLICAS = {"ingest": 1, "predict": 1, "join": 1, "monitor": 1}
SOAK_ENV = {"MODELSTREAM_MONITOR_EVAL_SECONDS": "1", "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "5"}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, y) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 60 * sum((t - mt) * (y - my) for t, y in points) / var


class Counting:
    """Counts the records arriving on some topics, from a thread (the backlog's other side)."""

    def __init__(self, settings: Settings, bases: list[str]) -> None:
        self.counts = dict.fromkeys(bases, 0)
        self._names = {settings.topics.name(b): b for b in bases}
        self._consumer = Consumer(settings.kafka_config(**{
            "group.id": f"{settings.topic_prefix}soak-counter", "enable.auto.commit": False}))
        # Assigned, not subscribed: no group join (~23 s with librdkafka defaults on tansu).
        md = self._consumer.list_topics(timeout=10)
        self._consumer.assign([TopicPartition(name, p, 0) for name in self._names
                               for p in md.topics[name].partitions])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._consumer.consume(5000, 0.2):
                if not m.error():
                    self.counts[self._names[m.topic() or ""]] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass
class SoakResult:
    max_rate: float
    rate: float
    seconds: float
    sent: Sent | None = None
    report: Report | None = None
    backlog: list[tuple[float, int, int]] = field(default_factory=list)  # t, features, outcomes
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    stall: dict[str, float] = field(default_factory=dict)
    self_exits: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    drained_after: float | None = None

    def rss_slopes(self, start: float, end: float) -> dict[str, float]:
        """MB per minute, per replica, over samples in [start, end] (seconds of the run)."""
        return {name: slope([(t, mb) for t, mb in pts if start <= t <= end])
                for name, pts in self.rss.items()}

    @property
    def problems(self) -> list[str]:
        out = list(self.self_exits)
        out += [f"{n} exited with {c} on SIGTERM" for n, c in self.exit_codes.items() if c != 0]
        if self.drained_after is None:
            out.append("the pipeline did not drain after the load")
        if self.report is not None:
            out += self.report.problems
        return out

    def summary(self, warm: float, soak_end: float) -> str:
        lines = [f"maximum throughput (whole pipeline, burst): {self.max_rate:,.0f} events/s",
                 f"soak: {self.rate:,.0f} events/s for {self.seconds:.0f} s"]
        soak = [b for b in self.backlog if b[0] <= soak_end]
        if soak:
            lines.append(f"backlog during the soak: max {max(b[1] for b in soak):,} features "
                         f"/ {max(b[2] for b in soak):,} outcomes; at its end "
                         f"{soak[-1][1]:,} / {soak[-1][2]:,}")
        for name, s in self.rss_slopes(warm, soak_end).items():
            pts = [mb for t, mb in self.rss[name] if warm <= t <= soak_end]
            if pts:
                lines.append(f"RSS {name:<10} {min(pts):6.0f} – {max(pts):6.0f} MB, slope "
                             f"{s:+.2f} MB/min")
        for k, v in self.stall.items():
            lines.append(f"backpressure: {k}: {v:,.1f}")
        if self.report is not None:
            lines += ["", self.report.text()]
        lines += ["", "RESULT: " + ("OK" if not self.problems else
                                    f"{len(self.problems)} problems")]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _burst(settings: Settings, events: int, seed: int, before: Sent) -> tuple[float, Sent]:
    load = Load(settings, rate=1e9, total=events, bad_rate=0.0, outcome_delay=0.0, seed=seed)
    started = time.monotonic()
    load.start()
    while not load.done():
        time.sleep(0.05)
    sent = load.stop().merge(before)
    if wait_drained(settings, sent, timeout=300) is None:
        raise RuntimeError(f"a burst of {events:,} events did not drain in 300 s")
    return events / (time.monotonic() - started), sent


def measure_max(settings: Settings, events: int) -> tuple[float, Sent]:
    """Events/s the whole pipeline drains a burst at (features and their outcomes), once every
    service has joined its group and handled a first small burst."""
    _, warm = _burst(settings, 200, 98, Sent())
    return _burst(settings, events, 99, warm)


def run_soak(base: Settings, valkey: RestartableValkey, log_dir: Path, *, seconds: float,
             fraction: float, stall_seconds: float, burst: int,
             log: Callable[[str], None] = print) -> SoakResult:
    settings = base.model_copy(update={"redis_url": valkey.url, "partitions": 4})
    kafka.create_topics(settings)
    cluster = Cluster(settings, log_dir, REPLICAS, SOAK_ENV)
    cluster.start()
    max_rate, burst_sent = measure_max(settings, burst)
    rate = fraction * max_rate
    log(f"maximum {max_rate:,.0f} events/s; soaking at {rate:,.0f} events/s for {seconds:.0f} s")
    result = SoakResult(max_rate=max_rate, rate=rate, seconds=seconds)
    # The burst's records are on the topics too: counted from here on, they are the offset.
    counter = Counting(settings, ["predictions", "predictions.labeled"])
    load = Load(settings, rate=rate, total=int(rate * (seconds + stall_seconds * 2)) + 1,
                seed=17)
    t0 = time.monotonic()
    cluster.t0 = t0
    predict = cluster.of("predict")[0]
    phase = "soak"
    stall_rss: dict[str, list[float]] = {"ingest": [], "predict": []}
    stalled_at = resumed_at = None
    load.start()
    try:
        while not load.done():
            now = time.monotonic() - t0
            cluster.sample_rss()
            sent = load.sent
            done_p = counter.counts["predictions"] - len(burst_sent.valid)
            done_l = counter.counts["predictions.labeled"] - len(burst_sent.outcomes)
            result.backlog.append((now, len(sent.valid) - done_p, len(sent.outcomes) - done_l))
            for r in cluster.replicas:
                if not r.alive():
                    result.self_exits.append(f"{r.name} exited by itself: "
                                             + cluster.log_tail(r, 300).replace("\n", " | "))
                    r.start()
            if phase == "soak" and now >= seconds:
                phase, stalled_at = "stall", now
                predict.pause()
                log(f"{now:6.0f}s  predict stopped (SIGSTOP); the load goes on")
            elif phase == "stall":
                stall_rss["ingest"].append(cluster.of("ingest")[0].rss[-1][1])
                if now - (stalled_at or now) >= stall_seconds:
                    phase, resumed_at = "catch-up", now
                    predict.resume()
                    log(f"{now:6.0f}s  predict resumed with a backlog of "
                        f"{result.backlog[-1][1]:,} events")
            elif phase == "catch-up" and predict.rss:
                stall_rss["predict"].append(predict.rss[-1][1])
            time.sleep(2.0)
        sent = load.stop().merge(burst_sent)
        drained = wait_drained(settings, sent, timeout=300)
        log(f"load done; drained {drained}s after")
        cluster.settle()
    finally:
        counter.close()
        result.exit_codes = cluster.stop()
    result.sent = sent
    result.drained_after = drained
    result.rss = {r.name: r.rss for r in cluster.replicas}
    before = [mb for t, mb in cluster.of("ingest")[0].rss if seconds * 0.5 <= t <= seconds]
    if before and stall_rss["ingest"]:
        result.stall["ingest RSS before the stall, max MB"] = max(before)
        result.stall["ingest RSS while predict is stopped, max MB"] = max(stall_rss["ingest"])
    if stalled_at is not None:
        backlog_peak = max(b[1] for b in result.backlog if b[0] >= stalled_at)
        result.stall["backlog at resume, events"] = backlog_peak
    pre = [mb for t, mb in predict.rss if seconds * 0.5 <= t <= seconds]
    if pre and stall_rss["predict"]:
        result.stall["predict RSS before the stall, max MB"] = max(pre)
        result.stall["predict RSS catching up, max MB"] = max(stall_rss["predict"])
    if resumed_at is not None:
        caught = next((t for t, b, _ in result.backlog if t > resumed_at and b <= rate * 2),
                      None)
        if caught is not None:
            result.stall["catch-up seconds"] = caught - resumed_at
    # Every record in memory costs ~1 KB a topic: a long soak is reconciled by its counts.
    full = sent.features <= FULL_RECONCILE_MAX
    result.report = (reconcile if full else reconcile_counts)(settings, sent)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.8)
    p.add_argument("--stall", type=float, default=60.0, help="seconds predict is stopped")
    p.add_argument("--burst", type=int, default=30_000, help="events of the maximum's burst")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="modelstream-soak-"))
    print(f"soak run; logs in {tmp}", flush=True)
    broker = start_broker(free_port(), tmp)
    valkey = RestartableValkey(free_port(), tmp / "valkey")
    try:
        valkey.start()
        store = ArtifactStore(tmp / "artifacts")
        ensure_demo_model(store)
        settings = Settings(kafka_bootstrap=broker.url, redis_url=valkey.url,
                            topic_prefix="soak.", data_dir=tmp, artifact_dir=store.root)
        seconds = args.minutes * 60
        result = run_soak(settings, valkey, tmp / "logs", seconds=seconds,
                          fraction=args.fraction, stall_seconds=args.stall, burst=args.burst,
                          log=lambda line: print(line, flush=True))
    finally:
        valkey.stop()
        broker.stop()
    print()
    print(result.summary(warm=seconds / 5, soak_end=seconds))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
