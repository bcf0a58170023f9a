"""The retraining coordinator: one job from request to promotion, and the watch over champions.

A job (``run_job``) is a sequence of steps, each published on ``retrain.jobs`` before the next
begins: ``started`` → ``data_gathered`` → ``trained`` (registered on ``model.events``) →
``validated`` (beats the champion on the same holdout) → ``staged`` (shadow; live metrics on the
same events) → optionally ``canary`` → ``promoted``; or ``rejected`` with the numbers, or
``failed`` with the error. Jobs run in worker threads: training and reading are blocking work,
and the faust event loop keeps consuming meanwhile.

``ChampionWatch`` follows ``model.events``: every new champion, whoever promoted it, is watched
for ``retrain_watch_seconds``; if its live metric falls below its predecessor's by
``retrain_rollback_margin`` it is rolled back (``rolled_back`` on both topics).

A restart is safe: ``recover`` replays ``retrain.jobs``. A job interrupted while staged (or as a
canary) resumes its comparison; one interrupted earlier is failed, and a candidate it registered
is rejected — a job never half-promotes.

Several coordinators are safe too: a job (and a rollback) holds its model's lease
(``lease.ModelLeases``) from admission to its last step, and admission re-reads
``retrain.jobs`` under the lease, so a request that another coordinator acted on — or a job it
is still running — is never acted on twice. A job left ``running`` on ``retrain.jobs`` is
adopted (resumed or failed) by whichever coordinator gets its model's lease once its owner's
has expired; it re-checks the job first, since the owner may have finished it meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import ArtifactStore, OnnxModel
from ..models.card import ModelCard
from ..registry import (
    RegistryFollower,
    RegistryState,
    TransitionRefused,
    load_version,
    read_state,
    register,
    rollback,
    transition,
)
from ..registry.exceptions import RegistryError
from ..runtime import metrics
from ..runtime.errors import ModelstreamError
from ..runtime.service import redis_client
from ..runtime.settings import Settings
from .dataset import LabeledReader, gather_training_set, live_pairs, read_window
from .decision import (
    Metric,
    TriggerGate,
    Verdict,
    compare_live,
    metric_for,
    should_roll_back,
    validate_candidate,
)
from .jobs import TERMINAL, JobLog, JobState, RetrainRequest, job_id_for, now_ms, replay_jobs
from .lease import Holder, ModelLeases
from .trainer import Trainer, build_card, load_trainer

__all__ = ["ChampionWatch", "Coordinator", "JobFailed"]

log = logging.getLogger(__name__)

ACTOR = "retrain"
_MAX_TEXT = 2000


class JobFailed(ModelstreamError):
    """A job cannot go on; the message is recorded as the job's error."""


class Stopped(Exception):
    """The coordinator is shutting down; the job is left for ``recover`` to resume or fail."""


class LeaseLost(Stopped):
    """Another coordinator holds the model's lease now; the job is its to adopt."""


@dataclass
class _Candidate:
    version: str
    champion: str
    champion_card: ModelCard
    metric: Metric


class Coordinator:
    def __init__(
        self, settings: Settings, *, store: ArtifactStore | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or ArtifactStore.from_settings(settings)
        self.trainer = trainer or load_trainer(settings.retrain_trainer)
        self.jobs = JobLog(settings)
        self.gate = TriggerGate(int(settings.retrain_cooldown_seconds * 1000))
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # admission and the gate, from the event loop and workers
        self.leases = ModelLeases(redis_client(settings), prefix=settings.topic_prefix,
                                  ttl_seconds=settings.retrain_lease_seconds)
        self.watch = ChampionWatch(self)
        # Live metric of the champion a job's candidate replaced, as measured on the same events.
        self.baselines: dict[tuple[str, str], tuple[float, str]] = {}

    # -- admission -------------------------------------------------------------------------

    def recover(self) -> list[JobState]:
        """Rebuild the gate from ``retrain.jobs``; return the jobs left ``running`` there, for
        ``adopt`` (each in a thread of its own: it waits for the model's lease)."""
        records = replay_jobs(self.settings)
        latest: dict[str, dict[str, Any]] = {}
        for r in records:
            latest[r["job_id"]] = r
        with self.lock:
            self.gate.replay(records)
        return [JobState.from_record(r) for r in latest.values()
                if (r.get("step") or "") not in TERMINAL and r.get("status") == "running"]

    def adopt(self, job: JobState) -> None:
        """Once the model's lease is ours, resume ``job`` if it is still staged (or a canary),
        fail it if it stopped earlier, or let it be if its owner has finished it."""
        while self.leases.acquire(job.model, job.job_id) is not None:
            if self.stopping.wait(self.settings.retrain_poll_seconds):
                return
        last = self._last_record(job.job_id)
        if last is None or last.get("status") != "running" \
                or (last.get("step") or "") in TERMINAL:
            with self.lock:
                self.gate.finished(job.model, job.job_id)
            self.leases.release(job.model)
            return
        job = JobState.from_record(last)
        if job.step in ("staged", "canary") and job.new_version and job.base_version:
            request = RetrainRequest(request_id=job.request_id, model=job.model,
                                     requested_by=ACTOR, requested_at=job.started_at)
            self.run_job(job, request, resume=True)
            return
        try:
            self._fail(job, JobFailed(f"interrupted by a coordinator restart at step {job.step}"))
        finally:  # the gate first: whoever takes the lease next must find the model free
            with self.lock:
                self.gate.finished(job.model, job.job_id)
            self.leases.release(job.model)

    def admit(self, request: RetrainRequest) -> JobState | None:
        """Start a job for ``request`` (its ``started`` record is published), or record why
        not (an ``ignored`` record) and return ``None``."""
        trigger = request.trigger
        at = now_ms()
        job = JobState(job_id=job_id_for(request.request_id), model=request.model,
                       request_id=request.request_id, trigger=trigger, started_at=at)
        holder = self.leases.acquire(request.model, job.job_id)
        if holder is not None and holder.mine and holder.job_id != job.job_id:
            holder = self._await_own_finish(request.model, job.job_id, holder)
        if holder is None:
            started = None
            try:
                started = self._admit(request, job, remote_busy=None)
            finally:
                if started is None:
                    self.leases.release(request.model)
            return started
        if not holder.mine and holder.job_id == job.job_id:
            log.info("request %s: another coordinator is acting on it", request.request_id)
            return None
        ours = holder.mine and request.model in self.gate.active  # the gate knows why
        return self._admit(request, job, remote_busy=None if ours else holder.job_id)

    def _await_own_finish(self, model: str, job_id: str, holder: Holder) -> Holder | None:
        """A job of ours holds ``model``'s lease. If it has published its decision it is only
        finishing (rejecting its candidate on ``model.events``, letting go of the lease): wait
        for that, so a request made on seeing the decision is not turned away as busy."""
        last = self._last_record(holder.job_id)
        if last is None or (last.get("step") or "") not in TERMINAL:
            return holder
        deadline = time.monotonic() + 30.0
        current: Holder | None = holder
        while current is not None and current.mine and time.monotonic() < deadline:
            if self.stopping.wait(0.1):
                break
            current = self.leases.acquire(model, job_id)
        return current

    def _last_record(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest record on ``retrain.jobs`` (read to its current end)."""
        return next((r for r in reversed(replay_jobs(self.settings)) if r["job_id"] == job_id),
                    None)

    def _admit(self, request: RetrainRequest, job: JobState,
               remote_busy: str | None) -> JobState | None:
        trigger, at = job.trigger, job.started_at
        if remote_busy is None and request.model not in self.gate.active:
            # Under the lease: every decision of every coordinator on this model is on
            # retrain.jobs by now (each step is acknowledged before the next).
            records = replay_jobs(self.settings)
            with self.lock:
                self.gate.learn(records)
        with self.lock:
            why = self.gate.admit(request.model, request.request_id, trigger, at)
            if why is None and remote_busy is not None:
                why = "busy"
            if why is None:
                self.gate.started(request.model, request.request_id, job.job_id, trigger, at)
            elif why != "duplicate":
                self.gate.ignored(request.request_id)
        kind = trigger.split(":", 1)[0]
        metrics.RETRAIN_TRIGGERS.labels(request.model, kind, why or "started").inc()
        if why == "duplicate":
            log.info("request %s: already acted on", request.request_id)
            return None
        if why is not None:
            detail = {
                "busy": f"job {remote_busy or self.gate.active.get(request.model)} of"
                        f" {request.model} is running",
                "cooldown": f"an alert-triggered job of {request.model} started less than"
                            f" {self.settings.retrain_cooldown_seconds:g} s ago",
            }[why]
            self.jobs.step(job, "ignored", reason=f"{why}: {detail}")
            log.info("request %s ignored: %s", request.request_id, detail)
            return None
        metrics.RETRAIN_ACTIVE.labels(request.model).inc()
        return self.jobs.step(job, "started", reason=request.reason)

    # -- one job ---------------------------------------------------------------------------

    def run_job(self, job: JobState, request: RetrainRequest, resume: bool = False) -> None:
        """Every step of ``job``; never raises (a failure is the job's ``failed`` step)."""
        try:
            if resume:
                self._resume(job)
            else:
                self._run(job, request)
        except Stopped:
            log.info("job %s left at step %s for the next start", job.job_id, job.step)
        except Exception as exc:  # the job's failure, recorded; the coordinator goes on
            log.exception("job %s failed at step %s", job.job_id, job.step)
            self._fail(job, exc)
        finally:  # the gate first: whoever takes the lease next must find the model free
            with self.lock:
                self.gate.finished(job.model, job.job_id)
            self.leases.release(job.model)
            if not resume:
                metrics.RETRAIN_ACTIVE.labels(job.model).dec()

    def _run(self, job: JobState, request: RetrainRequest) -> None:
        s = self.settings
        # An alert's job: the outcomes of the events that raised the alert are still arriving.
        wait = s.retrain_alert_wait_seconds if request.alert_id and not request.window_end else 0
        if wait > 0 and self.stopping.wait(wait):
            raise Stopped()
        state = read_state(s)
        record = state.model(job.model)
        if record is None or record.champion is None:
            raise JobFailed(f"{job.model} has no champion on model.events to retrain")
        champion = record.champion
        base = request.base_version or champion
        parent = record.versions.get(base)
        if parent is None or parent.card is None:
            raise JobFailed(f"{job.model} v{base} is not a registered version with a card")
        parent_card = parent.card
        metric = metric_for(parent_card.task)

        end = request.window_end or now_ms()
        start = request.window_start or end - int(s.retrain_window_seconds * 1000)
        records = read_window(s, job.model, start, end, latest=s.retrain_max_records)
        data = gather_training_set(records, parent_card, s.retrain_holdout_fraction, (start, end))
        if data.rows < s.retrain_min_examples or len(data.y_holdout) == 0:
            raise JobFailed(
                f"{data.rows} usable labeled examples of {job.model} in the window"
                f" (dropped {data.dropped}); at least {s.retrain_min_examples} are needed"
            )
        self.jobs.step(job, "data_gathered", base_version=champion, window_start=start,
                       window_end=end, metrics=data.numbers(),
                       reason=f"{data.rows} labeled examples, split by time")

        onnx_bytes = self.trainer.train(parent_card, data.x_train, data.y_train, request.params)
        provisional = OnnxModel(parent_card.model_copy(update={"version": ""}), onnx_bytes)
        cand_pred, cand_scores = _predict(provisional, data.x_holdout)
        cand_metric = metric(_truth(parent_card, data.y_holdout), cand_pred)
        lineage = {
            "training_window": {"start": start, "end": end}, "parent_version": base,
            "trigger": job.trigger, "job_id": job.job_id, "request_id": job.request_id,
            "trainer": self.trainer.name, "train_rows": len(data.y_train),
            "holdout_rows": len(data.y_holdout),
        }
        card = build_card(parent_card, data.x_train, cand_scores,
                          {metric.name: cand_metric}, lineage)
        self._fence(job)
        event = register(s, onnx_bytes, card, actor=ACTOR, reason=f"retrain job {job.job_id}",
                         lineage=lineage, store=self.store)
        if event.transition != "registered":
            raise JobFailed(f"the registry refused the candidate: {event.reason}")
        self.jobs.step(job, "trained", new_version=event.version, artifact_uri=event.artifact_uri,
                       metrics={f"candidate_holdout_{metric.name}": cand_metric},
                       reason=f"{self.trainer.name} trainer on {len(data.y_train)} rows")

        champion_model = load_version(self.store, record.versions[champion])
        champ_pred, _ = _predict(champion_model, data.x_holdout)
        champ_metric = metric(_truth(parent_card, data.y_holdout), champ_pred)
        verdict = validate_candidate(metric, cand_metric, champ_metric, s.retrain_margin,
                                     len(data.y_holdout))
        if verdict.decision != "pass":
            self._reject(job, event.version, verdict)
            return
        self.jobs.step(job, "validated", metrics=verdict.metrics, reason=verdict.reason)
        candidate = _Candidate(event.version, champion, parent_card, metric)
        self._stage_and_decide(job, candidate)

    def _resume(self, job: JobState) -> None:
        state = read_state(self.settings)
        record = state.model(job.model)
        version, champion = job.new_version or "", job.base_version or ""
        if record is None or record.role_of(version) not in ("shadow", "canary") \
                or record.champion != champion:
            raise JobFailed(f"on restart, v{version} is no longer a challenger of v{champion}")
        card = record.versions[champion].card
        assert card is not None
        candidate = _Candidate(version, champion, card, metric_for(card.task))
        log.info("job %s resumes its %s comparison", job.job_id, job.step)
        if job.step == "canary":
            self._canary(job, candidate, since=job.updated_at)
        else:
            self._shadow(job, candidate, since=job.updated_at)

    def _stage_and_decide(self, job: JobState, candidate: _Candidate) -> None:
        self._fence(job)
        event = transition(self.settings, job.model, candidate.version, "shadow", actor=ACTOR,
                           reason=f"retrain job {job.job_id}: validated on the holdout")
        self.jobs.step(job, "staged", reason=f"v{candidate.version} scores every event as shadow")
        self._shadow(job, candidate, since=event.time)

    def _shadow(self, job: JobState, candidate: _Candidate, since: int) -> None:
        s = self.settings
        verdict = self._compare(job, candidate, since, "shadow", s.retrain_shadow_min_labeled)
        if verdict.decision != "promote":
            self._reject(job, candidate.version, verdict)
            return
        if s.retrain_canary_fraction:
            self._fence(job)
            event = transition(s, job.model, candidate.version, "canary",
                               fraction=s.retrain_canary_fraction, actor=ACTOR,
                               reason=f"retrain job {job.job_id}: shadow {verdict.reason}")
            self.jobs.step(job, "canary", metrics=verdict.metrics,
                           reason=f"shadow {verdict.reason}; canary at"
                                  f" {s.retrain_canary_fraction:.0%} of entities")
            self._canary(job, candidate, since=event.time)
            return
        self._promote(job, candidate, verdict)

    def _canary(self, job: JobState, candidate: _Candidate, since: int) -> None:
        verdict = self._compare(job, candidate, since, "canary",
                                self.settings.retrain_canary_min_labeled)
        if verdict.decision != "promote":
            self._reject(job, candidate.version, verdict)
            return
        self._promote(job, candidate, verdict)

    def _compare(
        self, job: JobState, candidate: _Candidate, since: int, role: str, min_events: int
    ) -> Verdict:
        s = self.settings
        regression = candidate.metric.name != "accuracy"
        deadline = time.monotonic() + s.retrain_shadow_timeout_seconds
        reader = LabeledReader(s, job.model, since)
        records: list[dict[str, Any]] = []
        try:
            while True:
                records += reader.read_new()
                verdict = compare_live(
                    candidate.metric,
                    live_pairs(records, candidate.version, regression, role),
                    live_pairs(records, candidate.champion, regression, "champion"),
                    min_events=min_events, margin=s.retrain_live_margin, role=role,
                )
                if verdict.decision != "wait":
                    return verdict
                if time.monotonic() > deadline:
                    return Verdict("reject", f"timed out as {role} after"
                                   f" {s.retrain_shadow_timeout_seconds:g} s: {verdict.reason}",
                                   verdict.metrics)
                if self.stopping.wait(s.retrain_poll_seconds):
                    raise Stopped()
        finally:
            reader.close()

    def _promote(self, job: JobState, candidate: _Candidate, verdict: Verdict) -> None:
        name = candidate.metric.name
        baseline = verdict.metrics.get(f"champion_live_{name}")
        if baseline is not None:
            self.baselines[(job.model, candidate.version)] = (baseline, job.job_id)
        self._fence(job)
        transition(self.settings, job.model, candidate.version, "champion", actor=ACTOR,
                   reason=f"retrain job {job.job_id}: {verdict.reason}", metrics=verdict.metrics)
        self.jobs.step(job, "promoted", metrics=verdict.metrics,
                       reason=f"v{candidate.version} replaces v{candidate.champion}:"
                              f" {verdict.reason}")

    def _fence(self, job: JobState) -> None:
        """Before a write to the registry: the model's lease is still this coordinator's."""
        if not self.leases.holds(job.model):
            raise LeaseLost(f"job {job.job_id}: the lease of {job.model} is no longer ours")

    def _reject(self, job: JobState, version: str, verdict: Verdict) -> None:
        self._fence(job)
        try:
            transition(self.settings, job.model, version, "rejected", actor=ACTOR,
                       reason=_cut(f"retrain job {job.job_id}: {verdict.reason}"),
                       metrics=verdict.metrics)
        except TransitionRefused as exc:
            log.warning("job %s: %s", job.job_id, exc)
        self.jobs.step(job, "rejected", metrics=verdict.metrics, reason=_cut(verdict.reason))

    def _fail(self, job: JobState, exc: BaseException) -> None:
        message = _cut(str(exc) or type(exc).__name__)
        if not self.leases.holds(job.model):  # the job is another coordinator's to adopt now
            log.warning("job %s: not failed here (lease lost): %s", job.job_id, message)
            return
        if job.new_version:  # never leave a half-made candidate serving or promotable
            try:
                transition(self.settings, job.model, job.new_version, "rejected", actor=ACTOR,
                           reason=_cut(f"retrain job {job.job_id} failed: {message}"))
            except (TransitionRefused, RegistryError) as refused:
                log.info("job %s: candidate not rejected: %s", job.job_id, refused)
        self.jobs.step(job, "failed", error=message, reason=f"failed at step {job.step}")


class ChampionWatch:
    """Rolls back a new champion whose live quality falls below its predecessor's."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator
        self.follower: RegistryFollower | None = None
        self.watches: dict[str, _Watch] = {}

    def tick(self) -> None:
        """Follow model.events, then judge every watched champion once."""
        s = self.c.settings
        if self.follower is None:
            self.follower = RegistryFollower(s)
            self.follower.catch_up()
            for name, record in self.follower.state.models.items():
                self._consider(name, self.follower.state, record.champion)
        else:
            for event in self.follower.poll(0.0):
                if event.transition in ("champion", "rolled_back"):
                    ended = self.watches.pop(event.model, None)
                    if ended is not None:
                        ended.close()
                    now = self.follower.state.model(event.model)
                    if event.transition == "champion" and now is not None \
                            and now.champion == event.version:
                        self._consider(event.model, self.follower.state, event.version)
        for model in list(self.watches):
            if self._judge(self.watches[model]):
                self.watches.pop(model).close()

    def close(self) -> None:
        for w in self.watches.values():
            w.close()
        if self.follower is not None:
            self.follower.close()

    def _consider(self, model: str, state: RegistryState, version: str | None) -> None:
        record = state.model(model)
        if record is None or version is None or not record.champions:
            return
        period = record.champions[-1]
        previous = record.previous_champions[-1] if record.previous_champions else None
        watch_ms = self.c.settings.retrain_watch_seconds * 1000
        if previous is None or now_ms() - period.start > watch_ms:
            return
        card = record.versions[version].card
        task = card.task if card else "binary"
        baseline, job_id = self.c.baselines.pop((model, version), (None, None))
        extra = record.versions[version].lineage.model_extra or {}
        job_id = job_id or str(extra.get("job_id") or "")
        self.watches[model] = _Watch(self.c.settings, model, version, previous, period.start,
                                     metric_for(task), baseline, job_id or None)

    def _judge(self, w: _Watch) -> bool:
        """True when the watch is over (rolled back, or watched long enough)."""
        s = self.c.settings
        w.read()
        regression = w.metric.name != "accuracy"
        if w.baseline is None:
            w.baseline = w.previous_live(regression)
        pairs = live_pairs(w.records, w.version, regression, "champion")
        n = len(pairs)
        live = _pairs_metric(w.metric, pairs)
        verdict = should_roll_back(w.metric, live, w.baseline, s.retrain_rollback_margin, n,
                                   s.retrain_watch_min_labeled)
        if verdict.decision == "roll_back":
            if self.c.leases.acquire(w.model, f"rollback-{w.version}") is not None:
                return False  # a job of this model holds it: judge again on the next tick
            try:
                rollback(s, w.model, actor=ACTOR, reason=_cut(verdict.reason),
                         metrics=verdict.metrics)
            except TransitionRefused as exc:  # another coordinator or a user got there first
                log.info("rollback of %s v%s not needed: %s", w.model, w.version, exc)
                return True
            finally:
                self.c.leases.release(w.model)
            self._job_step(w, "rolled_back", verdict)
            return True
        if now_ms() - w.promoted_at > s.retrain_watch_seconds * 1000:
            if w.job_id:
                self._job_step(w, "watched", verdict)
            return True
        return False

    def _job_step(self, w: _Watch, step: str, verdict: Verdict) -> None:
        job = JobState(job_id=w.job_id or f"watch-{w.model}-{w.version}", model=w.model,
                       request_id=w.job_id or "", trigger="watch", started_at=w.promoted_at,
                       base_version=w.previous, new_version=w.version)
        self.c.jobs.step(job, step, metrics=verdict.metrics, reason=_cut(verdict.reason))


class _Watch:
    def __init__(self, settings: Settings, model: str, version: str, previous: str,
                 promoted_at: int, metric: Metric, baseline: float | None,
                 job_id: str | None) -> None:
        self.settings = settings
        self.model, self.version, self.previous = model, version, previous
        self.promoted_at, self.metric, self.baseline, self.job_id = \
            promoted_at, metric, baseline, job_id
        self.reader = LabeledReader(settings, model, promoted_at)
        self.records: list[dict[str, Any]] = []

    def read(self) -> None:
        self.records += self.reader.read_new(max_seconds=5.0)

    def previous_live(self, regression: bool) -> float | None:
        """The predecessor's live metric over the window before the promotion."""
        window = int(self.settings.retrain_watch_seconds * 1000)
        records = read_window(self.settings, self.model, self.promoted_at - window,
                              self.promoted_at)
        pairs = live_pairs(records, self.previous, regression, "champion")
        if len(pairs) < self.settings.retrain_watch_min_labeled:
            return None
        return _pairs_metric(self.metric, pairs)

    def close(self) -> None:
        self.reader.close()


def _pairs_metric(metric: Metric, pairs: dict[str, tuple[Any, Any]]) -> float:
    if not pairs:
        return float("nan")
    predicted = np.array([p for p, _ in pairs.values()], dtype=object)
    actual = np.array([a for _, a in pairs.values()], dtype=object)
    if metric.name != "accuracy":
        return metric(actual.astype(np.float64), predicted.astype(np.float64))
    return metric(actual, predicted)


def _predict(model: OnnxModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels (or values) and the scores a reference profile takes."""
    labels, scores = model.predict(x)
    if model.card.is_classifier:
        return np.asarray(labels, dtype=object), scores
    return scores, scores


def _truth(card: ModelCard, y: np.ndarray) -> np.ndarray:
    if card.is_classifier:
        return np.asarray(card.labels, dtype=object)[y]
    return y


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
