"""Retraining under chaos: the coordinator stopped and started in the middle of its jobs.

Midway through the load the outcomes start following another concept (Agrawal's function 2;
the champion learned function 0), and a retraining job is requested for the model. The first
job's coordinator is killed (SIGKILL) once the job is under way and started again a moment
later: its replacement must find the job interrupted before staging and fail it (rejecting a
candidate it had registered), never half-promote. A second job is requested; once its candidate
scores as a shadow, the coordinator is stopped (SIGTERM) and started again: it must resume the
comparison and decide. Everything else — kills of data-plane replicas, the Valkey restart —
goes on meanwhile.

Afterwards ``reconcile_jobs`` checks ``retrain.jobs`` and ``model.events`` against each other:
every job decided exactly once (``promoted``, ``rejected``, ``failed`` or ``ignored``), nothing
but the champion watch after a decision, each candidate champion only if its job promoted it,
and no candidate left scoring as a shadow or canary once its job ended.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from services.registry import read_state
from services.retrain.coordinator import ACTOR
from services.retrain.jobs import job_id_for, manual_request, replay_jobs, send_request
from services.runtime import topics
from services.runtime.serde import EventDecoder
from services.runtime.settings import Settings

from .cluster import Replica
from .reconcile import Report

__all__ = ["RETRAIN_ENV", "RetrainChaos", "reconcile_jobs"]

DECISIONS = frozenset({"promoted", "rejected", "failed", "ignored"})
AFTER_PROMOTION = frozenset({"watched", "rolled_back"})  # the champion watch, later
RETRAIN_ENV = {
    "MODELSTREAM_RETRAIN_MIN_EXAMPLES": "300",
    # The latest 20 s of labeled events: by the second job, all of them follow the new concept.
    "MODELSTREAM_RETRAIN_WINDOW_SECONDS": "20",
    # Enough shared events that the comparison outlasts a stop and a start of the coordinator.
    "MODELSTREAM_RETRAIN_SHADOW_MIN_LABELED": "1500",
    "MODELSTREAM_RETRAIN_POLL_SECONDS": "0.5",
    "MODELSTREAM_RETRAIN_LEASE_SECONDS": "4",  # a killed coordinator's jobs are adopted soon
    # The jobs here are requested on a schedule of the run's own, not by the monitor's alerts
    # (the concept switch raises some); the run's own promotions are not watched into rollbacks.
    "MODELSTREAM_RETRAIN_ALERT_KINDS": "[]",
    "MODELSTREAM_RETRAIN_ROLLBACK_MARGIN": "1.0",
}


@dataclass
class Job:
    job_id: str
    request_id: str
    disruption: str  # "kill" (SIGKILL once under way) or "stop" (SIGTERM once staged)
    steps: list[str] = field(default_factory=list)
    disrupted_at_step: str | None = None

    @property
    def decided(self) -> bool:
        return any(s in DECISIONS for s in self.steps)


class RetrainChaos:
    """Drives the two jobs from :class:`.run.Chaos`'s ticks (``now``: seconds into the load).

    ``restart_at``: the chaos run's schedule of restarts (replica name → when, replica); a
    disrupted coordinator is put on it, so the run starts it again and does not take its
    absence for a crash.
    """

    def __init__(self, settings: Settings, coordinator: Replica, model: str, *,
                 request_at: float, restart_at: dict[str, tuple[float, Replica]],
                 rng: random.Random, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.coordinator = coordinator
        self.model = model
        self.request_at = request_at
        self.rng = rng
        self.log = log
        self.jobs: list[Job] = []
        self.disruptions: list[str] = []
        self.stop_codes: list[int | None] = []
        self.restart_at = restart_at
        self._consumer: Consumer | None = None
        self._decoder = EventDecoder(topics.RETRAIN_JOBS, max_bytes=1 << 20)

    # -- the schedule ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self.jobs and now >= self.request_at:
            self._request("kill", now)
        if not self.jobs:
            return
        self._read_steps()
        job = self.jobs[-1]
        down = self.coordinator.name in self.restart_at
        if job.disrupted_at_step is None and not down and not job.decided:
            under_way = [s for s in job.steps if s not in ("started", *DECISIONS)]
            if job.disruption == "kill" and under_way:
                self._disrupt(job, under_way[-1], now)
            elif job.disruption == "stop" and "staged" in job.steps:
                self._disrupt(job, "staged", now)
        if len(self.jobs) == 1 and job.decided:
            self._request("stop", now)

    def pending(self) -> bool:
        """A job still undecided (the run waits for it before reconciling)."""
        if self.jobs:
            self._read_steps()
        return any(not j.decided for j in self.jobs)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- the parts ------------------------------------------------------------------------

    def _request(self, disruption: str, now: float) -> None:
        request = manual_request(self.model, requested_by="chaos",
                                 reason=f"chaos: retrain, coordinator {disruption} mid-job")
        send_request(self.settings, request)
        job = Job(job_id_for(request.request_id), request.request_id, disruption)
        self.jobs.append(job)
        self.log(f"{now:6.1f}s  retraining of {self.model} requested (job {job.job_id})")

    def _disrupt(self, job: Job, step: str, now: float) -> None:
        job.disrupted_at_step = step
        c = self.coordinator
        if job.disruption == "kill":
            c.kill9()
            what = "kill -9"
        else:
            assert c.proc is not None
            c.proc.send_signal(signal.SIGTERM)
            code = c.proc.wait(30)
            self.stop_codes.append(code)
            what = f"stopped (SIGTERM, exit {code})"
        delay = self.rng.uniform(0.5, 3.0)
        self.restart_at[c.name] = (now + delay, c)
        self.disruptions.append(f"{what} at step {step} of job {job.job_id}")
        self.log(f"{now:6.1f}s  {c.name} {what} while job {job.job_id} is at step {step};"
                 f" start again in {delay:.1f}s")

    def _read_steps(self) -> None:
        if self._consumer is None:
            topic = self.settings.topics.retrain_jobs
            self._consumer = Consumer(self.settings.kafka_config(**{
                "group.id": "chaos-retrain", "enable.auto.commit": False,
                "fetch.wait.max.ms": 50}))
            md = self._consumer.list_topics(topic, timeout=10)
            self._consumer.assign([TopicPartition(topic, p, 0)
                                   for p in md.topics[topic].partitions])
        by_id = {j.job_id: j for j in self.jobs}
        for m in self._consumer.consume(1000, 0):
            if m.error():
                continue
            r = self._decoder.decode(m.value())
            job = by_id.get(str(r.get("job_id")))
            if job is not None:
                job.steps.append(r["step"])


def _order_problems(steps: list[str]) -> list[str]:
    decisions = [s for s in steps if s in DECISIONS]
    if len(decisions) != 1:
        return [f"{len(decisions)} decisions ({', '.join(decisions) or 'none'})"]
    after = steps[steps.index(decisions[0]) + 1:]
    allowed = AFTER_PROMOTION if decisions[0] == "promoted" else frozenset()
    wrong = [s for s in after if s not in allowed]
    return [f"step {s} after {decisions[0]}" for s in wrong]


def reconcile_jobs(settings: Settings, chaos: RetrainChaos, report: Report) -> None:
    """The jobs on ``retrain.jobs`` against the registry on ``model.events``, into ``report``."""
    records = replay_jobs(settings)
    state = read_state(settings)
    model = state.models.get(chaos.model)
    ours = {j.job_id for j in chaos.jobs}
    steps: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        steps.setdefault(r["job_id"], []).append(r)
    report.fact(f"retraining: {len(chaos.jobs)} jobs requested, coordinator disrupted "
                f"{len(chaos.disruptions)} times: " + "; ".join(chaos.disruptions))
    for job in chaos.jobs:
        rs = steps.get(job.job_id, [])
        names = [r["step"] for r in rs]
        problems = _order_problems(names)
        report.fact(f"  job {job.job_id} ({job.disruption} mid-job): " + " → ".join(names))
        report.check(not problems, f"job {job.job_id} decided exactly once, in order"
                     + (f" ({'; '.join(problems)})" if problems else ""))
        versions = sorted({str(r["new_version"]) for r in rs if r.get("new_version")})
        promoted = "promoted" in names
        for v in versions:
            became = [h for h in (model.history if model else [])
                      if h.applied and h.event.version == v and h.event.transition == "champion"]
            by_job = [h for h in became if h.event.actor == ACTOR]
            report.check(len(by_job) == (1 if promoted else 0) and len(became) == len(by_job),
                         f"candidate v{v} of job {job.job_id} became champion "
                         f"{len(became)} times ({len(by_job)} by the job, which "
                         f"{'promoted' if promoted else 'did not promote'} it)")
            role = model.role_of(v) if model else None
            report.check(role not in ("shadow", "canary"),
                         f"candidate v{v} no longer scores as a challenger once its job ended "
                         f"(now {role or 'unknown'})")
    stray = sorted(set(steps) - ours)
    report.check(not stray, f"no job but the ones requested ({len(stray)} others: "
                 f"{', '.join(stray[:3])})")
    report.check(bool(model and model.champion), f"{chaos.model} has a champion at the end "
                 f"(v{model.champion if model else '?'})")
    kills = [d for d in chaos.disruptions if d.startswith("kill")]
    stops = [d for d in chaos.disruptions if d.startswith("stopped")]
    report.check(bool(kills) and bool(stops), "the coordinator was killed once and stopped "
                 f"once in the middle of a job ({len(kills)} kills, {len(stops)} stops)")
    report.check(all(code == 0 for code in chaos.stop_codes),
                 f"the stopped coordinator exited cleanly (exit codes {chaos.stop_codes})")


def wait_jobs(chaos: RetrainChaos, timeout: float, on_tick: Callable[[], None]) -> bool:
    """Until every requested job is decided (True) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        on_tick()
        if not chaos.pending():
            return True
        time.sleep(0.5)
    return False
