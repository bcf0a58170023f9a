"""The coordinator's decisions, as pure functions of numbers: no Kafka, no clock of their own.

- Which metric judges a model (``Metric``): accuracy for classifiers, RMSE for regression.
- Validation: a candidate must beat the champion *on the same holdout* by ``margin``.
- Live comparison: shadow and champion labeled predictions of *the same events*.
- Rollback: a new champion whose live metric falls below its predecessor's by ``margin``.
- Triggers (``TriggerGate``): one job per model at a time, a request id acts once, and an
  alert-triggered job starts at most once per cooldown per model.

Every verdict carries a reason with the numbers, which the job records on ``retrain.jobs`` and
``model.events``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Metric",
    "TriggerGate",
    "Verdict",
    "compare_live",
    "metric_for",
    "should_roll_back",
    "validate_candidate",
]


@dataclass(frozen=True, slots=True)
class Metric:
    """A quality measure and its sense; ``better(a, b, margin)``: a beats b by margin."""

    name: str
    higher_is_better: bool

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if len(y_true) == 0:
            return float("nan")
        if self.name == "accuracy":
            return float(np.mean(y_true == y_pred))
        err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
        return float(np.sqrt(np.mean(err * err)))

    def better(self, a: float, b: float, margin: float) -> bool:
        """True when ``a`` is better than ``b`` by at least ``margin``."""
        return a >= b + margin if self.higher_is_better else a <= b - margin

    def worse(self, a: float, b: float, margin: float) -> bool:
        """True when ``a`` is worse than ``b`` by more than ``margin``."""
        return a < b - margin if self.higher_is_better else a > b + margin


ACCURACY = Metric("accuracy", higher_is_better=True)
RMSE = Metric("rmse", higher_is_better=False)


def metric_for(task: str) -> Metric:
    return RMSE if task == "regression" else ACCURACY


@dataclass(frozen=True, slots=True)
class Verdict:
    """``decision``: promote / reject / wait (live), pass / reject (holdout), keep / roll_back."""

    decision: str
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


def validate_candidate(
    metric: Metric, candidate: float, champion: float | None, margin: float, n: int
) -> Verdict:
    """Holdout validation: the candidate must beat the champion by ``margin`` on ``n`` rows."""
    numbers = {f"candidate_holdout_{metric.name}": candidate, "holdout_rows": float(n)}
    if champion is None:
        return Verdict("pass", f"no champion to beat; candidate {metric.name} {candidate:.4f}"
                       f" on {n} holdout rows", numbers)
    numbers[f"champion_holdout_{metric.name}"] = champion
    if not np.isfinite(candidate):
        return Verdict("reject", f"candidate {metric.name} is not finite", numbers)
    versus = (f"candidate {metric.name} {candidate:.4f} vs champion {champion:.4f} on the same"
              f" {n} holdout rows (margin {margin:g})")
    if metric.better(candidate, champion, margin):
        return Verdict("pass", versus, numbers)
    return Verdict("reject", f"does not beat the champion: {versus}", numbers)


def compare_live(
    metric: Metric,
    candidate: dict[str, tuple[Any, Any]],
    champion: dict[str, tuple[Any, Any]],
    *,
    min_events: int,
    margin: float,
    role: str = "shadow",
) -> Verdict:
    """Live verdict from ``{event_id: (predicted, actual)}`` of both versions.

    A shadow is judged on the events both versions scored. A canary serves other entities than
    the champion, so it is judged on its own events against the champion's over the same time
    (``role="canary"``). ``wait`` until ``min_events`` events count on each side.
    """
    if role == "shadow":
        common = sorted(candidate.keys() & champion.keys())
        cand_events, champ_events = common, common
    else:
        cand_events, champ_events = sorted(candidate), sorted(champion)
    n = min(len(cand_events), len(champ_events))
    if n < min_events:
        return Verdict("wait", f"{n} of {min_events} labeled {role} events so far",
                       {"live_events": float(n)})
    cand = _score(metric, candidate, cand_events)
    champ = _score(metric, champion, champ_events)
    numbers = {f"candidate_live_{metric.name}": cand, f"champion_live_{metric.name}": champ,
               "live_events": float(n)}
    what = "the same" if role == "shadow" else "their own"
    versus = (f"live {metric.name} {cand:.4f} vs champion {champ:.4f} on {what} {n} events"
              f" (margin {margin:g})")
    if metric.better(cand, champ, margin):
        return Verdict("promote", versus, numbers)
    return Verdict("reject", f"worse than the champion live: {versus}", numbers)


def should_roll_back(
    metric: Metric, live: float, baseline: float | None, margin: float, n: int, min_events: int
) -> Verdict:
    """Watch verdict for a new champion against its predecessor's live ``baseline``."""
    numbers = {f"live_{metric.name}": live, "live_events": float(n)}
    if baseline is None or not np.isfinite(baseline):
        return Verdict("keep", "no baseline from the previous champion", numbers)
    numbers[f"previous_live_{metric.name}"] = baseline
    if n < min_events:
        return Verdict("wait", f"{n} of {min_events} labeled events so far", numbers)
    versus = (f"live {metric.name} {live:.4f} vs the previous champion's {baseline:.4f}"
              f" on {n} events (margin {margin:g})")
    if metric.worse(live, baseline, margin):
        return Verdict("roll_back", f"quality fell: {versus}", numbers)
    return Verdict("keep", versus, numbers)


def _score(metric: Metric, pairs: dict[str, tuple[Any, Any]], events: Sequence[str]) -> float:
    predicted = np.array([pairs[e][0] for e in events], dtype=object)
    actual = np.array([pairs[e][1] for e in events], dtype=object)
    if metric.name != "accuracy":
        return metric(actual.astype(np.float64), predicted.astype(np.float64))
    return metric(actual, predicted)


class TriggerGate:
    """Admission of retraining triggers, rebuilt from ``retrain.jobs`` on start.

    ``admit`` answers ``None`` (start a job) or why not: ``duplicate`` (this request id acted
    already), ``busy`` (a job for the model is running), ``cooldown`` (an alert-triggered job
    of the model started less than ``cooldown_ms`` ago).
    """

    def __init__(self, cooldown_ms: int) -> None:
        self.cooldown_ms = cooldown_ms
        self.seen: set[str] = set()
        self.active: dict[str, str] = {}  # model -> job id
        self.last_alert_start: dict[str, int] = {}

    def admit(self, model: str, request_id: str, trigger: str, now_ms: int) -> str | None:
        if request_id in self.seen:
            return "duplicate"
        if model in self.active:
            return "busy"
        if trigger.startswith("alert") and now_ms - self.last_alert_start.get(
            model, -(1 << 62)
        ) < self.cooldown_ms:
            return "cooldown"
        return None

    def started(self, model: str, request_id: str, job_id: str, trigger: str, at_ms: int) -> None:
        self.seen.add(request_id)
        self.active[model] = job_id
        if trigger.startswith("alert"):
            self.last_alert_start[model] = max(at_ms, self.last_alert_start.get(model, at_ms))

    def ignored(self, request_id: str) -> None:
        self.seen.add(request_id)

    def finished(self, model: str, job_id: str) -> None:
        if self.active.get(model) == job_id:
            del self.active[model]

    def learn(self, records: Iterable[dict[str, Any]]) -> None:
        """Fold what other coordinators decided (request ids acted on, alert-triggered starts)
        from ``retrain.jobs`` records; the jobs running here stay this gate's own."""
        for r in records:
            if r.get("request_id"):
                self.seen.add(r["request_id"])
            trigger = r.get("trigger") or ""
            if r.get("step") == "started" and trigger.startswith("alert"):
                at = int(r.get("started_at") or r["updated_at"])
                self.last_alert_start[r["model"]] = max(
                    at, self.last_alert_start.get(r["model"], at))

    def replay(self, records: Iterable[dict[str, Any]]) -> None:
        """Fold ``retrain.jobs`` records (in topic order) into the gate."""
        for r in records:
            if r.get("request_id"):
                self.seen.add(r["request_id"])
            step, model, job_id = r.get("step"), r["model"], r["job_id"]
            trigger = r.get("trigger") or ""
            if step == "started":
                self.started(model, r.get("request_id") or job_id, job_id, trigger,
                             int(r.get("started_at") or r["updated_at"]))
            elif r.get("status") != "running" and step != "ignored":
                self.finished(model, job_id)
