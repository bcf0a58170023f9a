"""The records join and monitor read: predictions of the demo model, their outcomes, and the
labeled records join would make of them.

The predictions are real: the demo model scores the same complete feature events the other
throughput runs read, so the monitor sees the score and feature distributions it would see live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from services.cli.traffic import agrawal_events
from services.models import ArtifactStore, OnnxModel
from services.predict.scorer import VersionScorer

__all__ = ["Labeled", "feature_events_with_truth", "labeled_records"]

Records = list[tuple[bytes, bytes]]
OUTCOME_DELAY_MS = 60_000


def feature_events_with_truth(n: int, seed: int = 7) -> tuple[Records, list[str]]:
    """Complete ``features`` events (as ``throughput.feature_events``) and each one's true label."""
    events = list(agrawal_events(n, seed=seed, bad_rate=0.0, partial_rate=0.0))
    return [(e.key, e.value) for e in events], [str(e.label) for e in events]


@dataclass
class Labeled:
    predictions: Records  # keyed by entity id, as predict writes them
    outcomes: Records  # keyed by event id; every outcome's event has one prediction
    labeled: Records  # predictions.labeled as join writes them, keyed by entity id

    def part(self, start: int, stop: int | None = None) -> Labeled:
        return Labeled(self.predictions[start:stop], self.outcomes[start:stop],
                       self.labeled[start:stop])


def labeled_records(store: ArtifactStore, full: Records, truth: list[str]) -> Labeled:
    scorer = VersionScorer(OnnxModel.load(store, "agrawal"))
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    for _, value in full:
        e = orjson.loads(value)
        e["ingested_at"] = e["event_time"]
        events.append(e)
    preds = scorer.score(events, now)
    outcomes: Records = []
    labeled: Records = []
    for p, label in zip(preds, truth, strict=True):
        outcome_time = p["predicted_at"] + OUTCOME_DELAY_MS
        outcomes.append((p["event_id"].encode(), orjson.dumps(
            {"event_id": p["event_id"], "label": label, "outcome_time": outcome_time})))
        labeled.append((p["entity_id"].encode(), orjson.dumps({
            **p, "outcome_label": label, "outcome_value": None, "outcome_time": outcome_time,
            "label_delay_ms": OUTCOME_DELAY_MS, "correct": p["label"] == label,
            "labeled_at": now,
        })))
    return Labeled(
        predictions=[(p["entity_id"].encode(), orjson.dumps(p)) for p in preds],
        outcomes=outcomes,
        labeled=labeled,
    )
