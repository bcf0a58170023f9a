"""Batch scoring: every row of an input through one ONNX session, thousands of rows per call.

``BatchScorer`` checks and encodes a batch column by column (``ColumnEncoder``), runs the rows
that passed through the model in one ``session.run``, and hands back the scored rows and the
rejected ones. ``score_all`` drives a source into a sink and keeps the books: every input row
is either scored or rejected with its line number and reason, so ``rows = scored + rejected``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..models.scoring import OnnxModel
from .columns import ColumnEncoder
from .sinks import RejectsFile, ScoredRows, Sink
from .sources import Rejection, RowBatch

__all__ = ["BatchScorer", "ScoreSummary", "score_all"]

_EXAMPLES = 5


@dataclass(slots=True)
class ScoreSummary:
    """The books of one run. ``rows`` counts input rows; ``skipped`` counts topic records
    that were not input rows (another model's, or a shadow's repeat of a served event)."""

    rows: int = 0
    scored: int = 0
    rejected: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        return self.rows == self.scored + self.rejected

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows, "scored": self.scored, "rejected": self.rejected,
            "skipped": self.skipped, "reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3), "model_seconds": round(self.model_seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
        }


class BatchScorer:
    """One model version, one onnxruntime session, any number of batches."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.card = model.card
        self.encoder = ColumnEncoder(model.card.features)
        self.model_seconds = 0.0

    def score(self, batch: RowBatch) -> tuple[ScoredRows, list[Rejection]]:
        n = len(batch.rows)
        encoded = self.encoder.encode(batch.columns, n)
        where = batch.extras
        rejected = list(batch.rejected)
        for i, (reason, detail) in sorted(encoded.reasons.items()):
            at = {"partition": where["partition"][i], "offset": where["offset"][i]} \
                if "partition" in where else {}
            rejected.append(Rejection(batch.rows[i], reason, detail, at))
        ok = encoded.ok
        if encoded.reasons:
            keep = np.flatnonzero(ok).tolist()
            rows = [batch.rows[i] for i in keep]
            extras = {k: [v[i] for i in keep] for k, v in batch.extras.items()}
        else:
            rows, extras = batch.rows, batch.extras
        started = time.perf_counter()
        scored = self._predict(encoded.matrix, rows, extras)
        self.model_seconds += time.perf_counter() - started
        return scored, rejected

    def _predict(
        self, x: np.ndarray, rows: list[int], extras: dict[str, list[object]]
    ) -> ScoredRows:
        card = self.card
        if not card.is_classifier:
            _, values = self.model.predict(x)
            return ScoredRows(rows, extras, [repr(v) for v in values.tolist()], values, None,
                              [], card.name, card.version)
        proba = self.model.predict_proba(x)
        labels: list[str] = np.asarray(card.labels, dtype=object)[proba.argmax(axis=1)].tolist() \
            if len(rows) else []
        score = proba[:, 1] if card.task == "binary" else proba.max(axis=1)
        return ScoredRows(rows, extras, labels, np.ascontiguousarray(score), proba,
                          list(card.labels), card.name, card.version)


def score_all(
    scorer: BatchScorer,
    batches: Iterable[RowBatch],
    sink: Sink,
    rejects: RejectsFile | None = None,
    on_progress: Callable[[int, ScoreSummary], None] | None = None,
) -> ScoreSummary:
    """Score every batch into ``sink``; rejected rows go to ``rejects`` (when given)."""
    summary = ScoreSummary()
    started = time.perf_counter()
    for batch in batches:
        scored, rejected = scorer.score(batch)
        if scored.rows:
            sink.write(scored)
        summary.rows += len(batch.rows) + len(batch.rejected)
        summary.scored += len(scored.rows)
        summary.rejected += len(rejected)
        summary.skipped += batch.skipped
        for r in rejected:
            summary.reasons[r.reason] += 1
        room = _EXAMPLES - len(summary.examples)
        if room > 0:
            summary.examples.extend(rejected[:room])
        if rejects is not None and rejected:
            rejects.write(rejected)
        if on_progress is not None:
            on_progress(batch.progress, summary)
    summary.seconds = time.perf_counter() - started
    summary.model_seconds = scorer.model_seconds
    return summary
