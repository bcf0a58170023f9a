"""Load and soak: the pipeline's maximum throughput, then a long run at a share of it, then a
stalled consumer.

1. **Maximum, sustained**: for ``--max-seconds`` (as long as the soak) the pipeline is kept
   saturated: the load produces as fast as it can while fewer than ``--saturation`` feature
   events (or twice as many outcomes) are waiting, and pauses above that, so every service
   always has work and the backlog stays small. The completed events per second (predicted and
   labeled) are taken per window; the maximum is the median of the windows of the last third
   (the steady state). A burst overstates it: the embedded broker (memory storage, no
   retention) slows as its topics grow, which the windows show. So the saturated run is as long
   as the soak, and the soak runs on a fresh broker and an empty Valkey: at 80% of the rate
   it writes less than the saturated run did, so its broker never holds more than the maximum
   was measured with, and Valkey holds only the soak's own join and monitor state.
2. **Soak**: ``--fraction`` (0.8) of that rate for ``--minutes``: every two seconds the RSS and CPU
   time of each service (and Valkey) and the backlog (feature events sent but not yet predicted,
   outcomes sent but not yet labeled), every ten the consumer lag of each service's group (high
   watermarks minus committed offsets, as ``modelstream status`` shows it). Pass: no service exits,
   the backlog stays bounded (over the soak's second half it never exceeds ``LAG_BOUND_SECONDS`` of
   load, and the pipeline completes what is offered, minute by minute), RSS slopes per service (by
   least squares over the run after a warm-up fifth) are reported.
   Valkey's RSS is sampled too. join keeps each event's state for its join window (~175 B an
   event once labeled), here 5 minutes (``SOAK_ENV``), so it levels off; Valkey rewrites its
   append-only file, forking the whole dataset, each time the file doubles, and on two cores
   those rewrites show as stalls in join and ingest. Valkey runs as deployed
   (append-only, fsync every second): with an fsync per write, join spends most of its time
   waiting for Valkey's replies (sampled: 61% of its main thread at 20% CPU) and falls behind
   while nothing is busy.
3. **Backpressure**: predict is stopped (SIGSTOP) while the load goes on: ingest keeps writing
   to ``features.valid`` and must stay within its memory; predict is then resumed and must
   catch up without its memory following the backlog (librdkafka's fetch queue is bounded by
   ``queued.max.messages.kbytes``).

Finally every topic is reconciled (see :mod:`.reconcile`).

    python -m tests.chaos.soak [--minutes 10] [--fraction 0.8] [--stall 60] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, TopicPartition

from services.models import ArtifactStore
from services.models.agrawal import ensure_demo_model
from services.runtime import kafka
from services.runtime.settings import Settings
from services.stack.embedded import EmbeddedServer, start_broker
from services.stack.processes import free_port

from .cluster import Cluster, RestartableValkey, Watched
from .load import Load, Sent
from .reconcile import GroupLag, Report, reconcile, reconcile_counts
from .run import wait_drained

__all__ = ["Capacity", "SoakResult", "measure_sustained", "run_soak", "slope"]

_T = TypeVar("_T")
FULL_RECONCILE_MAX = 300_000
REPLICAS = {"ingest": 1, "predict": 1, "join": 1, "monitor": 1}
LAG_BOUND_SECONDS = 10.0  # bounded: the backlog stays under this many seconds of the load
# join's window sized to the load's label delay (1 s), as a deployment sizes it: its state in
# Valkey then reaches a steady size within the run. Not shorter than the stall: outcomes that
# wait for predict's 60-s stall and its catch-up must still find their predictions (a 90-s
# window left 31,210 of them unmatched). With the default week it grows for the whole
# run (~175 B an event): Valkey rewrites its append-only file every minute or two (the write
# volume doubles it), each time forking a dataset bigger than the last, and the maximum measured
# at the saturated run's size no longer holds at the soak's.
SOAK_ENV = {"MODELSTREAM_MONITOR_EVAL_SECONDS": "1", "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "5",
            "MODELSTREAM_JOIN_WINDOW_SECONDS": "300", "MODELSTREAM_JOIN_GRACE_SECONDS": "60"}


# Sampled beside the services, and growing by design.
_NOT_SERVICES = {"driver": " (the load: keeps every event it sent, to reconcile)",
                 "broker": " (the embedded broker keeps every record in memory)"}


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


def _completed(predicted: int, labeled: int, sent: Sent) -> float:
    """Feature events the pipeline has completed, predicted and (their outcomes) labeled: each
    count scaled by its share of the feature events sent (some are bad, some outcomes
    malformed), the lesser of the two."""
    outcomes = len(sent.outcomes) + len(sent.malformed_outcomes)
    if not sent.valid or not outcomes:
        return 0.0
    valid_share = len(sent.valid) / sent.features
    labeled_share = valid_share * len(sent.outcomes) / outcomes
    return min(predicted / valid_share, labeled / labeled_share)


def _rate(points: list[tuple[float, float]], start: float, stop: float) -> float:
    """Growth per second of a cumulative (t, value) series over [start, stop]: from its last
    sample at or before ``start`` to its last one at or before ``stop``."""
    c = [x for x in points if x[0] <= stop]
    c = c[max(0, len([x for x in c if x[0] <= start]) - 1):]
    return ((c[-1][1] - c[0][1]) / (c[-1][0] - c[0][0])
            if len(c) > 1 and c[-1][0] > c[0][0] else 0.0)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


@dataclass
class Capacity:
    """The sustained maximum: events/s completed per window of a saturated run."""

    rate: float
    seconds: float
    windows: list[tuple[float, float]]  # (seconds into the run at the window's end, events/s)
    sent: Sent
    drained_after: float | None = None
    loadavg: list[float] = field(default_factory=list)  # the machine's, at each window's end

    def third(self, i: int) -> float:
        """Median events/s of the windows in the run's ``i``-th third (0, 1, 2)."""
        lo, hi = self.seconds * i / 3, self.seconds * (i + 1) / 3
        return _median([r for t, r in self.windows if lo < t <= hi + 1e-6])

    def text(self) -> str:
        first, last = self.third(0), self.third(2)
        drift = f"{last / first:.2f}" if first else "n/a"
        return (f"maximum, sustained: {self.rate:,.0f} events/s (median of the last third of "
                f"{self.seconds:.0f} s saturated; first third {first:,.0f}, ratio {drift}); "
                "per window: " + " ".join(f"{r:,.0f}" for _, r in self.windows)
                + (f"; machine load average {min(self.loadavg):.1f}–{max(self.loadavg):.1f}"
                   if self.loadavg else ""))


def measure_sustained(settings: Settings, counter: Counting, before: Sent, *, seconds: float,
                      saturation: int, window: float,
                      log: Callable[[str], None] = print) -> Capacity:
    """Keeps the whole pipeline saturated for ``seconds`` and measures what it completes.

    The load produces as fast as it can while fewer than ``saturation`` feature events (or
    twice as many outcomes) wait to be predicted (labeled), and pauses above: every service
    always has work, yet the backlog stays small. ``before``: what was sent to these topics
    earlier, all of it predicted and labeled already."""
    load = Load(settings, rate=1e9, total=10**9, seed=99)
    base_p, base_l = len(before.valid), len(before.outcomes)
    windows: list[tuple[float, float]] = []
    loadavg: list[float] = []
    t0 = last_t = time.monotonic()
    last_done = 0.0
    load.start()
    while (now := time.monotonic()) - t0 < seconds:
        sent = load.sent
        predicted = counter.counts["predictions"] - base_p
        labeled = counter.counts["predictions.labeled"] - base_l
        if (len(sent.valid) - predicted > saturation
                or len(sent.outcomes) - labeled > 2 * saturation):
            load.paused.set()
        else:
            load.paused.clear()
        if now - last_t >= window:
            done = _completed(predicted, labeled, sent)
            windows.append((now - t0, (done - last_done) / (now - last_t)))
            loadavg.append(os.getloadavg()[0])
            last_done, last_t = done, now
            log(f"{now - t0:6.0f}s  saturated: {windows[-1][1]:,.0f} events/s")
        time.sleep(0.05)
    sent = load.stop().merge(before)
    last = [r for t, r in windows if t > seconds * 2 / 3]
    capacity = Capacity(rate=_median(last), seconds=seconds, windows=windows, sent=sent,
                        loadavg=loadavg)
    capacity.drained_after = wait_drained(settings, sent, timeout=300)
    if capacity.drained_after is None:
        raise RuntimeError("the saturated run did not drain in 300 s")
    return capacity


@dataclass
class SoakResult:
    capacity: Capacity
    rate: float
    seconds: float
    sent: Sent | None = None
    report: Report | None = None
    backlog: list[tuple[float, int, int]] = field(default_factory=list)  # t, features, outcomes
    completed: list[tuple[float, float]] = field(default_factory=list)  # t, events completed
    loadavg: list[tuple[float, float]] = field(default_factory=list)  # t, the machine's 1-min
    lag: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # t, group → lag
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # CPU seconds
    stall: dict[str, float] = field(default_factory=dict)
    self_exits: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    drained_after: float | None = None

    @property
    def max_rate(self) -> float:
        return self.capacity.rate

    def rss_slopes(self, start: float, end: float) -> dict[str, float]:
        """MB per minute, per replica, over samples in [start, end] (seconds of the run)."""
        return {name: slope([(t, mb) for t, mb in pts if start <= t <= end])
                for name, pts in self.rss.items()}

    def unbounded(self) -> list[str]:
        """The lag over the soak's second half, against ``LAG_BOUND_SECONDS`` of the load (a
        group reading two records per event, join's and monitor's, gets twice as many)."""
        bound = LAG_BOUND_SECONDS * self.rate
        half = [b for b in self.backlog if self.seconds / 2 <= b[0] <= self.seconds]
        out = []
        for i, what in ((1, "feature events not yet predicted"),
                        (2, "outcomes not yet labeled")):
            worst = max((b[i] for b in half), default=0)
            if worst > bound:
                out.append(f"lag not bounded: {worst:,} {what} in the soak's second half "
                           f"({worst / self.rate:.0f} s of load; bound {LAG_BOUND_SECONDS:.0f} s)")
        lags = [g for t, g in self.lag if self.seconds / 2 <= t <= self.seconds]
        for group in lags[0] if lags else {}:
            worst = max(g[group] for g in lags)
            per_event = 1 if group in ("ingest", "predict") else 2
            if worst > bound * per_event:
                out.append(f"lag not bounded: {group}'s consumer group {worst:,} records "
                           f"behind in the soak's second half")
        return out

    @property
    def problems(self) -> list[str]:
        out = list(self.self_exits)
        out += [f"{n} exited with {c} on SIGTERM" for n, c in self.exit_codes.items() if c != 0]
        out += self.unbounded()
        if self.drained_after is None:
            out.append("the pipeline did not drain after the load")
        if self.report is not None:
            out += self.report.problems
        return out

    def minutes(self, end: float) -> list[str]:
        """Per minute of the soak (or per fifth of a short one): the backlog's peak, the
        events/s completed, the consumer groups' peak lag."""
        step = 60.0 if end >= 180 else end / 5
        lines = []
        start = 0.0
        while start < end - 1e-6:
            stop = min(start + step, end)
            b = [x for x in self.backlog if start <= x[0] <= stop]
            g = [x[1] for x in self.lag if start <= x[0] <= stop]
            la = [x[1] for x in self.loadavg if start <= x[0] <= stop]
            rate = _rate(self.completed, start, stop)
            lag = " ".join(f"{k} {max(x[k] for x in g):,}" for k in g[0]) if g else "-"
            cpu = " ".join(f"{name.removesuffix('-0')} {100 * _rate(pts, start, stop):.0f}%"
                           for name, pts in self.cpu.items())
            lines.append(f"  {start:5.0f}–{stop:4.0f}s  backlog ≤ "
                         f"{max((x[1] for x in b), default=0):7,} / "
                         f"{max((x[2] for x in b), default=0):7,}  completed "
                         f"{rate:7,.0f} events/s  load avg "
                         f"{max(la, default=0.0):4.1f}  group lag ≤ {lag}  CPU {cpu or '-'}")
            start = stop
        return lines

    def summary(self, warm: float, soak_end: float) -> str:
        lines = [self.capacity.text(),
                 f"soak: {self.rate:,.0f} events/s for {self.seconds:.0f} s"]
        soak = [b for b in self.backlog if b[0] <= soak_end]
        if soak:
            lines.append(f"backlog during the soak (features / outcomes): max "
                         f"{max(b[1] for b in soak):,} / {max(b[2] for b in soak):,}; at its "
                         f"end {soak[-1][1]:,} / {soak[-1][2]:,}")
            lines += self.minutes(soak_end)
        for name, s in self.rss_slopes(warm, soak_end).items():
            pts = [mb for t, mb in self.rss[name] if warm <= t <= soak_end]
            if pts:
                lines.append(f"RSS {name:<10} {min(pts):6.0f} – {max(pts):6.0f} MB, slope "
                             f"{s:+.2f} MB/min{_NOT_SERVICES.get(name, '')}")
        for k, v in self.stall.items():
            lines.append(f"backpressure: {k}: {v:,.1f}")
        if self.drained_after is not None:
            lines.append(f"drained {self.drained_after:.0f} s after the load")
        if self.report is not None:
            lines += ["", self.report.text()]
        lines += ["", "RESULT: " + ("OK" if not self.problems else
                                    f"{len(self.problems)} problems")]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _warm(settings: Settings) -> Sent:
    """A first small burst, drained: every service has joined its group."""
    load = Load(settings, rate=1e9, total=200, bad_rate=0.0, outcome_delay=0.0, seed=98)
    load.start()
    while not load.done():
        time.sleep(0.05)
    sent = load.stop()
    if wait_drained(settings, sent, timeout=300) is None:
        raise RuntimeError("the first 200 events did not drain in 300 s")
    return sent


def run_soak(base: Settings, valkey: RestartableValkey, log_dir: Path, *, seconds: float,
             fraction: float, stall_seconds: float, max_seconds: float, saturation: int = 8000,
             window: float = 10.0, log: Callable[[str], None] = print,
             fresh_broker: Callable[[], EmbeddedServer] | None = None) -> SoakResult:
    """The maximum on topics of its own, then the soak on fresh ones (prefixes ``max.`` and
    ``run.`` under ``base``'s): the embedded broker keeps every record in memory and slows as
    its topics grow, so the soak must not start where the saturated run left them. Between the
    two, ``fresh_broker`` (if given) replaces the broker with an empty one and returns it (its
    CPU and RSS are then sampled too), and Valkey is restarted empty: the soak then starts on
    the stack the maximum was measured on, not beside the saturated run's records and join
    state."""
    settings = base.model_copy(update={"redis_url": valkey.url, "partitions": 4})
    first = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "max."})
    capacity = _with_cluster(first, log_dir / "max", lambda _cluster, counter: measure_sustained(
        first, counter, _warm(first), seconds=max_seconds, saturation=saturation,
        window=window, log=log))[0]
    rate = fraction * capacity.rate
    log(capacity.text())
    # Sampled beside the services: this process (the load and the counting), the broker.
    watched: dict[str, RestartableValkey | Watched] = {"driver": Watched(os.getpid())}
    if fresh_broker is not None:
        broker = fresh_broker()
        settings = settings.model_copy(update={"kafka_bootstrap": broker.url})
        if broker.proc is not None:
            watched["broker"] = Watched(broker.proc.pid)
    valkey.reset()
    log(f"soaking at {rate:,.0f} events/s for {seconds:.0f} s, on fresh topics"
        + (" on a fresh broker" if fresh_broker is not None else ""))
    result = SoakResult(capacity=capacity, rate=rate, seconds=seconds)
    soak = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "run."})
    valkey.rss.clear()  # sampled during the soak only, beside the services
    valkey.cpu.clear()
    watched["valkey"] = valkey
    result.drained_after, cluster, result.exit_codes = _with_cluster(
        soak, log_dir / "run", lambda cluster, counter: _soak(
            soak, cluster, counter, result, _warm(soak), stall_seconds, log, watched))
    result.rss = {r.name: r.rss for r in cluster.replicas}
    result.cpu = {r.name: r.cpu for r in cluster.replicas}
    for name, other in watched.items():
        result.rss[name], result.cpu[name] = list(other.rss), list(other.cpu)
    _backpressure(cluster, result)
    assert result.sent is not None
    # Every record in memory costs ~1 KB a topic: a long soak is reconciled by its counts.
    full = result.sent.features <= FULL_RECONCILE_MAX
    result.report = (reconcile if full else reconcile_counts)(soak, result.sent)
    return result


def _with_cluster(settings: Settings, log_dir: Path,
                  work: Callable[[Cluster, Counting], _T]) -> tuple[_T, Cluster,
                                                                   dict[str, int | None]]:
    """``work`` with one replica of each service on ``settings``' topics (created), and a
    count of the predictions and labeled predictions on them; then every replica stopped."""
    kafka.create_topics(settings)
    cluster = Cluster(settings, log_dir, REPLICAS, SOAK_ENV)
    cluster.start()
    counter = Counting(settings, ["predictions", "predictions.labeled"])
    try:
        out = work(cluster, counter)
    finally:
        counter.close()
        codes = cluster.stop()
    return out, cluster, codes


def _soak(settings: Settings, cluster: Cluster, counter: Counting, result: SoakResult,
          prior: Sent, stall_seconds: float, log: Callable[[str], None],
          watched: dict[str, RestartableValkey | Watched]) -> float | None:
    """The load at ``result.rate`` for ``result.seconds``, then predict stopped for
    ``stall_seconds`` while it goes on, then as long again to catch up; sampled every 2 s.
    ``prior``: on the topics already, predicted and labeled."""
    seconds, rate = result.seconds, result.rate
    load = Load(settings, rate=rate, total=int(rate * (seconds + stall_seconds * 2)) + 1,
                seed=17)
    # The load is this process: its pools of events (millions of objects) and whatever the
    # saturated run left in reference cycles make each full garbage collection a pause of
    # seconds, after which the load catches up in a burst. In one run this process began the
    # soak at 8.2 GB (1.6 GB in the run before): in two of its minutes its CPU rose from 10% to
    # 35%, ingest's lag jumped to 45,000 and the outcome backlog to 83,000, a harness artifact.
    # So the saturated run's garbage is collected now, and what is alive is frozen out of the
    # collector for the soak.
    gc.collect()
    gc.freeze()
    t0 = time.monotonic()
    cluster.t0 = t0
    predict = cluster.of("predict")[0]
    phase = "soak"
    stalled_at: float | None = None
    next_lag = next_log = 0.0
    groups = GroupLag(settings)
    load.start()
    while not load.done():
        now = time.monotonic() - t0
        cluster.sample_usage(*watched.values())
        sent = load.sent
        predicted = counter.counts["predictions"] - len(prior.valid)
        labeled = counter.counts["predictions.labeled"] - len(prior.outcomes)
        result.backlog.append((now, len(sent.valid) - predicted, len(sent.outcomes) - labeled))
        result.completed.append((now, _completed(predicted, labeled, sent)))
        result.loadavg.append((now, os.getloadavg()[0]))
        if now >= next_lag:
            if (lag := groups.sample()) is not None:
                result.lag.append((now, lag))
            next_lag = now + 10.0
        for r in cluster.replicas:
            if not r.alive():
                result.self_exits.append(f"{r.name} exited by itself: "
                                         + cluster.log_tail(r, 300).replace("\n", " | "))
                r.start()
        if phase == "soak" and now >= seconds:
            phase, stalled_at = "stall", now
            result.stall["stalled at"] = now
            predict.pause()
            log(f"{now:6.0f}s  predict stopped (SIGSTOP); the load goes on")
        elif phase == "stall" and now - (stalled_at or now) >= stall_seconds:
            phase = "catch-up"
            result.stall["resumed at"] = now
            predict.resume()
            log(f"{now:6.0f}s  predict resumed with a backlog of "
                f"{result.backlog[-1][1]:,} events")
        elif phase == "soak" and now >= next_log:
            next_log = now + 60.0
            log(f"{now:6.0f}s  backlog {result.backlog[-1][1]:,} / {result.backlog[-1][2]:,}"
                f"; group lag {result.lag[-1][1] if result.lag else '?'}")
        # A stall ends on time: past the consumers' session timeout the group rebalances.
        time.sleep(min(2.0, stalled_at + stall_seconds - now + 0.01)
                   if phase == "stall" and stalled_at is not None else 2.0)
    groups.close()
    gc.unfreeze()
    result.sent = load.stop().merge(prior)
    drained = wait_drained(settings, result.sent, timeout=300)
    log(f"load done; drained {drained}s after")
    cluster.settle()
    return drained


def _backpressure(cluster: Cluster, result: SoakResult) -> None:
    """While predict was stopped, ingest's memory; while it caught up, predict's."""
    seconds = result.seconds
    stalled_at = result.stall.pop("stalled at", None)
    resumed_at = result.stall.pop("resumed at", None)
    if stalled_at is None or resumed_at is None:
        return
    ingest, predict = cluster.of("ingest")[0], cluster.of("predict")[0]
    before = [mb for t, mb in ingest.rss if seconds * 0.5 <= t <= seconds]
    during = [mb for t, mb in ingest.rss if stalled_at <= t <= resumed_at]
    if before and during:
        result.stall["ingest RSS before the stall, max MB"] = max(before)
        result.stall["ingest RSS while predict is stopped, max MB"] = max(during)
    result.stall["backlog at resume, events"] = max(b[1] for b in result.backlog
                                                    if b[0] >= stalled_at)
    pre = [mb for t, mb in predict.rss if seconds * 0.5 <= t <= seconds]
    catching = [mb for t, mb in predict.rss if t > resumed_at]
    if pre and catching:
        result.stall["predict RSS before the stall, max MB"] = max(pre)
        result.stall["predict RSS catching up, max MB"] = max(catching)
    caught = next((t for t, b, _ in result.backlog if t > resumed_at and b <= result.rate * 2),
                  None)
    if caught is not None:
        result.stall["catch-up seconds"] = caught - resumed_at


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.8)
    p.add_argument("--stall", type=float, default=60.0, help="seconds predict is stopped")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="seconds of the saturated run that measures the maximum (default: as "
                        "long as the soak)")
    p.add_argument("--saturation", type=int, default=8000,
                   help="feature events kept waiting while the maximum is measured")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="modelstream-soak-"))
    print(f"soak run; logs in {tmp}", flush=True)
    brokers = [start_broker(free_port(), tmp)]
    valkey = RestartableValkey(free_port(), tmp / "valkey", fsync="everysec")

    def fresh_broker() -> EmbeddedServer:
        brokers[-1].stop()
        log_dir = tmp / f"broker-{len(brokers)}"
        log_dir.mkdir()
        brokers.append(start_broker(free_port(), log_dir))
        return brokers[-1]

    try:
        valkey.start()
        store = ArtifactStore(tmp / "artifacts")
        ensure_demo_model(store)
        settings = Settings(kafka_bootstrap=brokers[0].url, redis_url=valkey.url,
                            topic_prefix="soak.", data_dir=tmp, artifact_dir=store.root)
        seconds = args.minutes * 60
        result = run_soak(settings, valkey, tmp / "logs", seconds=seconds,
                          fraction=args.fraction, stall_seconds=args.stall,
                          max_seconds=args.max_seconds or seconds,
                          saturation=args.saturation,
                          log=lambda line: print(line, flush=True), fresh_broker=fresh_broker)
    finally:
        valkey.stop()
        brokers[-1].stop()
    print()
    print(result.summary(warm=seconds / 5, soak_end=seconds))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
