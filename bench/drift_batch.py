"""Batch drift reports every N events (Evidently) against modelstream's online drift detector.

The same stream for both: Agrawal events like the demo model's training data, then, from event
``change_at``, older customers only (age ≥ 50, the covariate shift of ``modelstream demo``,
inside the feature spec). The reference is the model's own training data.

- **Evidently**, as its documentation shows it: every N events a ``Report([DataDriftPreset()])``
  of the last N events against the training rows (pandas DataFrames; Wasserstein distance for
  numeric columns, Jensen-Shannon for categorical ones, threshold 0.1 — Evidently's defaults
  for a reference of more than 1,000 rows). A column is drifted when its value reaches the
  threshold.
- **modelstream**: ``DriftDetector`` configured as the monitor configures it for a version
  (``monitor_window`` events, calibrated thresholds, ``FalseAlarmBudget(monitor_arl0_windows)``,
  the 9 features and the score), fed the loop's batches of 1,000 events and evaluated after
  each. (The service evaluates every ``monitor_eval_seconds`` and alerts after two evaluations
  past a threshold; here every batch is evaluated, as in ``bench.detection``.)

Reported: the time each spends per N events (in this process; Evidently's report vs the
online window updates and evaluations), the detection delay (events from the change to the end
of the window or batch in which the shifted feature is first flagged) and false alarms (windows
or evaluations before the change flagging any feature).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.models import ArtifactStore, OnnxModel
from services.models.agrawal import AGRAWAL_FEATURES, DEMO_MODEL, generate, split_holdout
from services.monitor.drift import DriftDetector, FalseAlarmBudget
from services.runtime.settings import Settings

__all__ = ["DriftRun", "Stream", "evidently_drift", "make_stream", "online_drift"]

NAMES = [f.name for f in AGRAWAL_FEATURES]
SHIFTED = "age"
MIN_AGE = 50
BATCH = 1000


@dataclass
class Stream:
    x: np.ndarray  # (n, 9) float32, feature order of the card
    scores: np.ndarray  # the model's P(label 1) for each row
    change_at: int
    reference: np.ndarray  # the model's training rows


@dataclass
class DriftRun:
    method: str
    every: int  # events between checks
    seconds: list[float] = field(default_factory=list)  # per check
    delay: int | None = None  # events from the change to the first flag of the shifted feature
    false_alarms: int = 0  # checks before the change that flagged any feature
    checks_before: int = 0

    def ms_per(self, events: int) -> float:
        """Time spent per ``events`` events, from the median check."""
        if not self.seconds:
            return float("nan")
        return float(np.median(self.seconds)) * 1000.0 * events / self.every

    def note(self) -> str:
        delay = "missed" if self.delay is None else f"{self.delay:,} events"
        return (f"{self.method} every {self.every:,}: {len(self.seconds)} checks, median "
                f"{np.median(self.seconds) * 1000:.1f} ms; delay {delay}; false alarms "
                f"{self.false_alarms}/{self.checks_before}")


def make_stream(store: ArtifactStore, before: int, after: int, seed: int = 101) -> Stream:
    """``before`` events like the training data, then ``after`` older customers."""
    x_all, y_all = generate(20_000, seed=42)  # the demo model's training call (train_agrawal)
    reference = split_holdout(x_all, y_all)[0]
    normal, _ = generate(before, seed=seed)
    older, _ = generate(after * 3, seed=seed + 1)
    older = older[older[:, NAMES.index(SHIFTED)] >= MIN_AGE][:after]
    x = np.concatenate([normal, older])
    model = OnnxModel.load(store, DEMO_MODEL)
    _, scores = model.predict(x)
    return Stream(x, np.asarray(scores, dtype=np.float64), before, reference)


def online_drift(store: ArtifactStore, settings: Settings, stream: Stream) -> DriftRun:
    card = OnnxModel.load(store, DEMO_MODEL).card
    detector = DriftDetector(
        card.reference, settings.monitor_window, specs=card.features,
        budget=FalseAlarmBudget(settings.monitor_arl0_windows), score_bounds=(0.0, 1.0),
    )
    detector.thresholds()  # calibrated once per process, at start-up: not per batch
    run = DriftRun("modelstream online", BATCH)
    for end in range(BATCH, len(stream.x) + 1, BATCH):
        started = time.perf_counter()
        detector.add(stream.x[end - BATCH:end], stream.scores[end - BATCH:end])
        findings = detector.evaluate()
        run.seconds.append(time.perf_counter() - started)
        flagged = {f.feature for f in findings if f.drifted}
        _judge(run, end, stream.change_at, flagged)
    return run


def evidently_drift(stream: Stream, every: int) -> DriftRun:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    categorical = [f.name for f in AGRAWAL_FEATURES if f.type == "category"]
    definition = DataDefinition(
        numerical_columns=[n for n in NAMES if n not in categorical],
        categorical_columns=categorical,
    )
    reference = Dataset.from_pandas(pd.DataFrame(stream.reference, columns=NAMES),
                                    data_definition=definition)
    run = DriftRun("Evidently DataDriftPreset", every)
    for end in range(every, len(stream.x) + 1, every):
        started = time.perf_counter()
        current = Dataset.from_pandas(pd.DataFrame(stream.x[end - every:end], columns=NAMES),
                                      data_definition=definition)
        snapshot = Report([DataDriftPreset()]).run(current_data=current,
                                                   reference_data=reference)
        flagged = drifted_columns(snapshot.dict())
        run.seconds.append(time.perf_counter() - started)
        _judge(run, end, stream.change_at, flagged)
    return run


def drifted_columns(snapshot: dict[str, Any]) -> set[str]:
    """Columns whose ``ValueDrift`` metric reached its threshold, from ``Snapshot.dict()``.

    >>> drifted_columns({"metrics": [
    ...     {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "age",
    ...                 "threshold": 0.1}, "value": 0.3},
    ...     {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "car",
    ...                 "threshold": 0.1}, "value": 0.02},
    ...     {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"},
    ...      "value": {"count": 1.0}}]})
    {'age'}
    """
    out = set()
    for m in snapshot["metrics"]:
        config = m["config"]
        if config["type"].endswith(":ValueDrift") and m["value"] >= config["threshold"]:
            out.add(config["column"])
    return out


def _judge(run: DriftRun, end: int, change_at: int, flagged: set[Any]) -> None:
    """A check covering events up to ``end`` (exclusive) flagged ``flagged``."""
    if end <= change_at:
        run.checks_before += 1
        run.false_alarms += bool(flagged)
    elif run.delay is None and SHIFTED in flagged:
        run.delay = end - change_at
