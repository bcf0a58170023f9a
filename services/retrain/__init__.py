"""The retrain service: the control plane that closes the loop, on faust-streaming.

Triggers — a firing drift or quality alert on ``monitor.alerts`` (cooldown and de-duplication
per model), a crontab schedule, or ``modelstream retrain`` — become requests on
``retrain.requests``. A job trains a candidate on the latest labeled predictions (the feature
snapshots that were served), checks it beats the champion on the same holdout, stages it as a
shadow, compares live metrics on the same events, and promotes or rejects it (optionally through
a canary); new champions are watched and rolled back if their live quality falls. Every step is
a record on ``retrain.jobs``; every registry change a record on ``model.events``.

Modules: ``app`` (the faust app: agents, timer, crontab), ``coordinator`` (jobs and the champion
watch), ``decision`` (the verdicts and the trigger gate, pure), ``dataset`` (reading
``predictions.labeled``), ``trainer`` (the ``modelstream.trainers`` entry points and the
built-in scikit-learn trainer), ``jobs`` (the two topics' records).
"""

from __future__ import annotations

from .decision import (
    Metric,
    TriggerGate,
    Verdict,
    compare_live,
    metric_for,
    should_roll_back,
    validate_candidate,
)
from .jobs import JobState, RetrainRequest, job_id_for, send_request
from .trainer import SklearnTrainer, Trainer, load_trainer

__all__ = [
    "JobState",
    "Metric",
    "RetrainRequest",
    "SklearnTrainer",
    "Trainer",
    "TriggerGate",
    "Verdict",
    "compare_live",
    "job_id_for",
    "load_trainer",
    "metric_for",
    "send_request",
    "should_roll_back",
    "validate_candidate",
]
