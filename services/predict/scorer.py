"""Turning decoded ``features.valid`` events into predictions for one model version."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..models import OnnxModel

__all__ = ["VersionScorer", "prediction_id"]


def prediction_id(event_id: str, model: str, version: str) -> str:
    """Deterministic: a replayed event gets the same id, so downstream counts it once."""
    return _ids_for(model, version)(event_id)


def _ids_for(model: str, version: str) -> Callable[[str], str]:
    suffix = f"\x1f{model}\x1f{version}".encode()
    blake2b = hashlib.blake2b

    def make(event_id: str) -> str:
        return blake2b(event_id.encode() + suffix, digest_size=16).hexdigest()

    return make


class VersionScorer:
    """Scores batches of complete feature vectors with one loaded model version."""

    def __init__(self, model: OnnxModel, role: str = "champion", served: bool = True) -> None:
        card = model.card
        self.model = model
        self.name = card.name
        self.version = card.version
        self.role = role
        self.served = served
        self.names = [f.name for f in card.features]
        # String categories are fed to the model as their index in the declared list.
        self.codes: dict[str, dict[Any, float]] = {
            f.name: {c: float(i) for i, c in enumerate(f.categories or [])}
            for f in card.features
            if f.type == "category" and any(isinstance(c, str) for c in (f.categories or []))
        }
        self._row = operator.itemgetter(*self.names)
        self._id = _ids_for(self.name, self.version)
        self.labels = list(card.labels)
        self.binary = card.task == "binary"
        self.regression = card.task == "regression"

    def matrix(self, vectors: Sequence[dict[str, Any]]) -> np.ndarray:
        if self.codes:
            codes, names = self.codes, self.names
            rows = [
                [codes[n][v[n]] if n in codes else v[n] for n in names] for v in vectors
            ]
        else:
            rows = list(map(self._row, vectors))  # itemgetter: the row in C, not a Python loop
        return np.asarray(rows, dtype=np.float32).reshape(len(vectors), len(self.names))

    def score(
        self, events: Sequence[dict[str, Any]], predicted_at: int
    ) -> list[dict[str, Any]]:
        x = self.matrix([e["features"] for e in events])
        labels, scores = self.model.predict(x)
        name, version, role, served = self.name, self.version, self.role, self.served
        make_id = self._id
        out = []
        if self.binary:
            neg, pos = self.labels[0], self.labels[1]
            score_list = scores.tolist()
            per_event = [(p, {neg: 1.0 - p, pos: p}) for p in score_list]
        elif self.regression:
            per_event = [(v, {}) for v in scores.tolist()]
        else:
            per_event = [
                (max(row), dict(zip(self.labels, row, strict=True))) for row in scores.tolist()
            ]
        for event, label, (score, score_map) in zip(events, labels, per_event, strict=True):
            event_id = event["event_id"]
            started = event.get("ingested_at") or event["event_time"]
            out.append(
                {
                    "prediction_id": make_id(event_id),
                    "event_id": event_id,
                    "entity_id": event["entity_id"],
                    "model": name,
                    "model_version": version,
                    "role": role,
                    "served": served,
                    "label": label,
                    "score": score,
                    "scores": score_map,
                    "features": event["features"],
                    "event_time": event["event_time"],
                    "predicted_at": predicted_at,
                    "latency_ms": float(max(predicted_at - started, 0)),
                }
            )
        return out
