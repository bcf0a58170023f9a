"""The dashboard's state: scraped series and topic history, as one JSON document the page
polls (``/api/state``)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..registry import RegistryState
from ..runtime.settings import Settings
from .feed import TopicHistory
from .scrape import ScrapeHistory, Target

__all__ = ["Board", "champion_timeline", "drift_heatmap", "model_history"]

SCORE = "__score__"
PSI_ALARM = 0.2  # the customary PSI alarm level, when no calibrated threshold is known yet


def champion_timeline(registry: RegistryState) -> dict[str, list[dict[str, Any]]]:
    """Which version was champion when, per model, as the registry's fold says (a rollback
    restores the previous champion); ``to`` is None while it still serves."""
    return {
        name: [{"version": p.version, "from": p.start, "to": p.end, "ended": p.ended_by}
               for p in record.champions]
        for name, record in sorted(registry.models.items())
    }


def model_history(registry: RegistryState, last: int) -> list[dict[str, Any]]:
    """The last transitions of every model in time order; refused ones say why."""
    entries = sorted((e for r in registry.models.values() for e in r.history),
                     key=lambda e: e.event.time)[-last:]
    return [{
        "model": e.event.model, "version": e.event.version, "transition": e.event.transition,
        "time": e.event.time, "actor": e.event.actor, "reason": e.event.reason,
        "traffic_fraction": e.event.traffic_fraction, "applied": e.applied, "note": e.note,
        "restored": e.restored,
    } for e in entries]


def drift_heatmap(
    history: list[dict[str, Any]],
    thresholds: dict[tuple[str, str], float],
) -> dict[str, Any]:
    """Rows: features (the score last); columns: snapshots; a cell is the feature's worst
    statistic as a multiple of its calibrated threshold (1 = alarm level). Without known
    thresholds, PSI over the customary 0.2."""
    unit = "threshold" if thresholds else "psi/0.2"
    features: set[str] = set()
    columns: list[dict[str, float]] = []
    for point in history:
        cells: dict[str, float] = {}
        for key, value in point["drift"].items():
            feature, _, statistic = key.rpartition(".")
            if thresholds:
                limit = thresholds.get((feature, statistic))
            else:
                limit = PSI_ALARM if statistic == "psi" else None
            if not limit or value is None:
                continue
            ratio = float(value) / limit
            cells[feature] = max(cells.get(feature, 0.0), ratio)
        features.update(cells)
        columns.append(cells)
    rows = sorted(features - {SCORE}) + ([SCORE] if SCORE in features else [])
    return {
        "unit": unit,
        "t": [p["t"] for p in history],
        "features": rows,
        "cells": [[round(c[f], 3) if f in c else None for c in columns] for f in rows],
    }


class Board:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.scrapes = ScrapeHistory(settings.dashboard_history)
        self.topics = TopicHistory(settings.dashboard_history)
        self.targets: list[Target] = []
        self.scraped_at: float | None = None

    def state(self) -> dict[str, Any]:
        with self.lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        topics = self.topics
        versions = []
        for (model, version, role), points in sorted(topics.quality.items()):
            history = list(points)
            thresholds = {(f, st): v for (m, ver, r, f, st), v in self.scrapes.thresholds.items()
                          if (m, ver, r) == (model, version, role)}
            versions.append({
                "model": model, "version": version, "role": role,
                "t": [p["t"] for p in history],
                "predictions": history[-1]["predictions"] if history else 0,
                "labeled": history[-1]["labeled"] if history else 0,
                "quality": {name: [p[name] for p in history] for name in (
                    "accuracy", "expected_accuracy", "f1", "expected_f1")},
                "drift": drift_heatmap(history, thresholds),
            })
        alerts = sorted(topics.alerts.values(), key=lambda a: -(a["raised_at"] or 0))
        return {
            "now": int(time.time() * 1000),
            "scrape_seconds": self.settings.dashboard_scrape_seconds,
            "scraped_at": int(self.scraped_at * 1000) if self.scraped_at else None,
            "services": {name: {"up": up, "replicas": n}
                         for name, (up, n) in sorted(self.scrapes.up.items())},
            "series": self.scrapes.series(),
            "dead_letters": [
                {"service": s, "reason": r, "count": int(n)}
                for (s, r), n in sorted(self.scrapes.dead_letters.items(), key=lambda x: -x[1])
            ],
            "versions": versions,
            "alerts": {
                "firing": [a for a in alerts if a["state"] == "firing"],
                "resolved": [a for a in alerts if a["state"] != "firing"][:50],
                "events": list(topics.alert_events)[-100:],
            },
            "model_events": model_history(topics.registry, 200),
            "champions": champion_timeline(topics.registry),
            "undecodable": topics.undecodable,
        }
