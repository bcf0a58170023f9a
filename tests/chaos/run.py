"""The chaos run: sustained load through the whole pipeline while replicas die.

Two replicas each of ingest, predict and join (one monitor: its windows must see every
partition), on one broker and a Valkey whose data survives restarts. During the load, at random
moments, a random replica is killed with SIGKILL and started again a moment later; midway,
Valkey is stopped, left down for a few seconds and started again. With a challenger, it is
promoted and rolled back under load; with ``retrain``, the outcomes then switch concept and the
retraining coordinator is killed and stopped in the middle of its jobs (see :mod:`.retrain`).
Afterwards, once the pipeline has drained, every topic is reconciled against what was sent (see
:mod:`.reconcile`), and the jobs against the registry. The run fails on any discrepancy, and on
any service that exits by itself.

    python -m tests.chaos [--seconds 180] [--rate 300] [--kills 15] [--seed N]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from services.models import ArtifactStore, ModelCard
from services.runtime import kafka
from services.runtime.serde import EventDecoder
from services.runtime.settings import Settings

from .cluster import Cluster, Replica, RestartableValkey
from .load import Load, Sent
from .reconcile import GroupLag, Report, reconcile
from .retrain import RETRAIN_ENV, RetrainChaos, reconcile_jobs, wait_jobs

__all__ = ["ChaosResult", "run_chaos"]

REPLICAS = {"ingest": 2, "predict": 2, "join": 2, "monitor": 1}
CHAOS_ENV = {
    "MODELSTREAM_MONITOR_EVAL_SECONDS": "1",
    "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "2",
    "MODELSTREAM_BATCH_SIZE": "200",
}


@dataclass
class ChaosResult:
    sent: Sent
    report: Report
    kills: list[str] = field(default_factory=list)
    valkey_restarts: int = 0
    promotions: list[str] = field(default_factory=list)
    retrain: list[str] = field(default_factory=list)  # the coordinator's disruptions
    self_exits: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    drained_after: float | None = None

    @property
    def problems(self) -> list[str]:
        bad_exits = [f"{n} exited with {c} on SIGTERM" for n, c in self.exit_codes.items()
                     if c != 0]
        drain = [] if self.drained_after is not None else ["the pipeline did not drain"]
        return [*self.self_exits, *bad_exits, *drain, *self.report.problems]

    def summary(self) -> str:
        head = [
            f"kills survived: {len(self.kills)} ({', '.join(self.kills)})",
            f"valkey restarts: {self.valkey_restarts}",
            f"registry transitions: {', '.join(self.promotions) or 'none'}",
            f"retraining coordinator: {'; '.join(self.retrain) or 'not run'}",
            f"events sent: {self.sent.features:,} features "
            f"({len(self.sent.bad):,} malformed), {self.sent.outcome_records:,} outcomes",
            "drained " + (f"{self.drained_after:.1f} s after the load ended"
                          if self.drained_after is not None else "NEVER"),
        ]
        tail = ["", "RESULT: " + ("OK, everything reconciles" if not self.problems else
                                  f"{len(self.problems)} discrepancies")]
        tail += [f"  - {p}" for p in self.problems]
        return "\n".join([*head, "", self.report.text(), *tail])


def _monitor_counts(settings: Settings, consumer: Consumer, decoder: EventDecoder,
                    latest: dict[tuple[str, str, str], dict]) -> None:
    for m in consumer.consume(5000, 0.5):
        if not m.error():
            s = decoder.decode(m.value())
            latest[(s["model"], s["model_version"], s["role"])] = s


def wait_drained(settings: Settings, sent: Sent, timeout: float,
                 on_tick: Callable[[], None] = lambda: None) -> float | None:
    """Seconds until the monitor has counted every prediction and every joinable outcome
    (``sent``: everything sent to these topics)."""
    topic = settings.topics.name("monitor.metrics")
    c = Consumer(settings.kafka_config(**{"group.id": "chaos-drain",
                                          "enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    decoder = EventDecoder("monitor.metrics", max_bytes=1 << 24)
    latest: dict[tuple[str, str, str], dict] = {}
    started = time.monotonic()
    reached: float | None = None
    last: tuple[int, int] = (-1, -1)
    try:
        while time.monotonic() - started < timeout:
            on_tick()
            _monitor_counts(settings, c, decoder, latest)
            champion = [s for k, s in latest.items() if k[2] == "champion"]
            counts = (sum(s["predictions"] for s in champion),
                      sum(s["labeled"] for s in champion))
            if counts != last:  # more may come than was sent (a discrepancy): wait for quiet
                last, reached = counts, None
            elif counts[0] >= len(sent.valid) and counts[1] >= len(sent.outcomes):
                reached = reached or time.monotonic()
                if time.monotonic() - reached >= 3.0:
                    return reached - started
        return None
    finally:
        c.close()


def monitor_behind(settings: Settings) -> list[str]:
    """The partitions the monitor's last checkpoint left short of the end of its topics: which
    partitions an undrained monitor is stuck on, if any (none: it read them all and lost some
    in counting)."""
    groups = GroupLag(settings, ["monitor"])
    try:
        return [f"{tp.topic}[{tp.partition}] at {at:,} of {high:,}"
                for tp, at, high in groups.positions("monitor", timeout=10) if at < high]
    finally:
        groups.close()


class Promotions:
    """Promotes a challenger to champion at 15% of the run and rolls it back at 35%, through
    the registry (``model.events``), while predict serves."""

    def __init__(self, settings: Settings, challenger: tuple[bytes, ModelCard],
                 seconds: float, log: Callable[[str], None]) -> None:
        from services.registry import adopt_store, register

        self.settings = settings
        self.log = log
        store = ArtifactStore(settings.artifacts)
        adopt_store(settings, store, actor="chaos")  # the stored version is the champion
        event = register(settings, *challenger, actor="chaos", store=store)
        if event.transition != "registered":
            raise RuntimeError(f"the challenger was not registered: {event.reason}")
        self.model, self.version = event.model, event.version
        self.plan = [(0.15 * seconds, "promote"), (0.35 * seconds, "rollback")]
        self.done: list[str] = []

    def tick(self, now: float) -> None:
        from services.registry import rollback, transition

        if not self.plan or now < self.plan[0][0]:
            return
        _, action = self.plan.pop(0)
        if action == "promote":
            transition(self.settings, self.model, self.version, "champion", actor="chaos",
                       reason="chaos: promote under load")
        else:
            rollback(self.settings, self.model, actor="chaos", reason="chaos: roll back")
        self.done.append(f"{action} {self.model} v{self.version}")
        self.log(f"{now:6.1f}s  {action} {self.model} v{self.version}")


class Chaos:
    """Kills and restarts replicas on a random schedule; restarts Valkey once, midway."""

    def __init__(self, cluster: Cluster, valkey: RestartableValkey, *, seconds: float,
                 kills: int, rng: random.Random, log: Callable[[str], None],
                 promotions: Promotions | None = None) -> None:
        self.retrain: RetrainChaos | None = None
        self.cluster = cluster
        self.valkey = valkey
        self.rng = rng
        self.log = log
        margin = min(5.0, seconds / 10)
        self.kill_at = sorted(rng.uniform(margin, seconds - margin) for _ in range(kills))
        self.valkey_at: float | None = seconds * rng.uniform(0.4, 0.6)
        self.restart_at: dict[str, tuple[float, Replica]] = {}
        self.kills: list[str] = []
        self.self_exits: list[str] = []
        self.promotions = promotions
        self.started = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic() - self.started
        if self.promotions is not None:
            before = len(self.promotions.done)
            self.promotions.tick(now)
            if len(self.promotions.done) > before:
                # predict killed with the batches scored around the change in hand: they are
                # replayed after it, and must be served by the versions of their first pass.
                self._kill([r for r in self.cluster.of("predict") if r.alive()], now)
        if self.retrain is not None:
            self.retrain.tick(now)
        for name, (at, replica) in list(self.restart_at.items()):
            if now >= at:
                replica.start()
                del self.restart_at[name]
        for r in self.cluster.replicas:
            if r.name not in self.restart_at and not r.alive():
                code = r.proc.returncode if r.proc else None
                tail = self.cluster.log_tail(r, 800).strip().splitlines()[-3:]
                self.self_exits.append(f"{r.name} exited by itself with {code}: "
                                       + " | ".join(tail))
                self.log(f"{now:6.1f}s  {r.name} EXITED BY ITSELF ({code}); restarting")
                r.start()
        if self.kill_at and now >= self.kill_at[0]:
            self.kill_at.pop(0)
            # The data plane's replicas: the coordinator is stopped on its own schedule.
            self._kill([r for r in self.cluster.replicas
                        if r.alive() and r.service != "retrain"], now)
        if self.valkey_at is not None and now >= self.valkey_at:
            self.valkey_at = None
            self.log(f"{now:6.1f}s  valkey stopped for 3 s")
            self.valkey.restart(down_seconds=3.0)
            self.log(f"{time.monotonic() - self.started:6.1f}s  valkey back")

    def _kill(self, alive: list[Replica], now: float) -> None:
        if not alive:
            return
        victim = self.rng.choice(alive)
        victim.kill9()
        delay = self.rng.uniform(0.5, 3.0)
        self.restart_at[victim.name] = (now + delay, victim)
        self.kills.append(victim.name)
        self.log(f"{now:6.1f}s  kill -9 {victim.name}; restart in {delay:.1f}s")

    def finish(self) -> None:
        for _, replica in self.restart_at.values():
            replica.start()
        self.restart_at.clear()


def run_chaos(
    base: Settings, valkey: RestartableValkey, log_dir: Path, *, seconds: float, rate: float,
    kills: int, seed: int = 1, drain_timeout: float = 180.0,
    log: Callable[[str], None] = print, challenger: tuple[bytes, ModelCard] | None = None,
    retrain: bool = False,
) -> ChaosResult:
    """One chaos run on ``base``'s broker and topic prefix, with ``valkey`` (started). With a
    ``challenger`` (ONNX bytes and card of another version of the model), it is registered,
    promoted to champion and rolled back during the run. With ``retrain``, the outcomes follow
    another concept from 40% of the run on, and two retraining jobs are requested from 45%: the
    coordinator is killed in the middle of the first and stopped in the middle of the second."""
    settings = base.model_copy(update={"redis_url": valkey.url, "partitions": 4})
    kafka.create_topics(settings)
    promotions = Promotions(settings, challenger, seconds, log) if challenger else None
    rng = random.Random(seed)
    replicas = {**REPLICAS, "retrain": 1} if retrain else REPLICAS
    cluster = Cluster(settings, log_dir, replicas,
                      {**CHAOS_ENV, **RETRAIN_ENV} if retrain else CHAOS_ENV)
    cluster.start()
    total = int(rate * seconds)
    load = Load(settings, rate=rate, total=total, seed=seed,
                concept=(int(0.40 * total), 2) if retrain else None)
    log(f"{len(cluster.replicas)} replicas up; {load.total:,} events at {rate:g}/s, "
        f"{kills} kills, a Valkey restart")
    chaos = Chaos(cluster, valkey, seconds=seconds, kills=kills, rng=rng, log=log,
                  promotions=promotions)
    if retrain:
        chaos.retrain = RetrainChaos(settings, cluster.of("retrain")[0], "agrawal",
                                     request_at=0.45 * seconds, restart_at=chaos.restart_at,
                                     rng=rng, log=log)
    jobs_done = True
    load.start()
    try:
        while not load.done():
            chaos.tick()
            time.sleep(0.1)
        sent = load.stop()
        log(f"load done: {sent.features:,} features, {sent.outcome_records:,} outcomes; "
            "draining")
        if chaos.retrain is not None:
            jobs_done = wait_jobs(chaos.retrain, drain_timeout, on_tick=chaos.tick)
        chaos.finish()
        drained = wait_drained(settings, sent, drain_timeout, on_tick=chaos.tick)
        behind = monitor_behind(settings) if drained is None else []
        cluster.settle()
    finally:
        codes = cluster.stop()
        if chaos.retrain is not None:
            chaos.retrain.close()
    report = reconcile(settings, sent)
    if drained is None:
        report.fact("the monitor's committed positions short of the end: "
                    + (", ".join(behind) or "none"))
    if chaos.retrain is not None:
        report.check(jobs_done, "every retraining job was decided before the drain timeout")
        reconcile_jobs(settings, chaos.retrain, report)
    return ChaosResult(sent=sent, report=report, kills=chaos.kills,
                       promotions=promotions.done if promotions else [],
                       retrain=chaos.retrain.disruptions if chaos.retrain else [],
                       valkey_restarts=valkey.restarts, self_exits=chaos.self_exits,
                       exit_codes=codes, drained_after=drained)
