"""Alert episodes: from a metric's successive values to at most a few ``monitor.alerts`` events.

One state machine per ``AlertKey`` (model, version, role, metric, feature). Each evaluation of a
value against an ``AlertRule`` moves it; it emits:

- ``firing`` once, when the value has been past a threshold for ``fire_after`` consecutive
  evaluations (debounce), with severity ``critical`` if it was past the critical threshold for
  all of them, else ``warning``;
- ``firing`` once more, severity ``critical``, if a warning episode escalates (past the critical
  threshold for ``fire_after`` consecutive evaluations); an episode never de-escalates;
- ``resolved`` once, when the value has been back past the lower-severity threshold by the
  hysteresis ``margin`` for ``resolve_after`` consecutive evaluations.

Between the threshold and threshold ∓ margin nothing changes, so a value hovering around the
threshold yields one episode, not a storm. A missing value (None or NaN: the metric is undefined
on the window) is no evaluation at all: it neither extends nor breaks a run.

Every event of an episode carries the same ``alert_id``, derived from the key and the
``window_end`` of the evaluation that opened the episode, so an alert re-emitted after a restart
or a replay is recognisable; ``(alert_id, state, severity)`` is unique per event.

>>> book = AlertBook()
>>> rule = AlertRule(kind="performance", direction="below", warning=0.9, margin=0.02)
>>> key = AlertKey("agrawal", "1", "champion", "accuracy")
>>> [e.state for v in (0.95, 0.85, 0.89, 0.91, 0.93)
...  for e in book.evaluate(key, v, rule, now_ms=0, window=(0, 0))]
['firing', 'resolved']
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["AlertBook", "AlertEvent", "AlertKey", "AlertRule", "Direction", "Severity"]

Direction = Literal["above", "below"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True, slots=True)
class AlertRule:
    """When a metric is in trouble: thresholds, direction, debounce and hysteresis.

    ``kind`` is the schema's kind ('drift', 'performance', 'latency', 'errors',
    'label_delay'). At least one of ``warning`` and ``critical`` is set; with both, critical is
    the more extreme one.
    """

    kind: str
    direction: Direction = "above"
    warning: float | None = None
    critical: float | None = None
    margin: float = 0.0
    fire_after: int = 1
    resolve_after: int = 1

    def __post_init__(self) -> None:
        if self.warning is None and self.critical is None:
            raise ValueError("a rule needs a warning or a critical threshold")
        if (
            self.warning is not None
            and self.critical is not None
            and (
                self.critical < self.warning
                if self.direction == "above"
                else self.critical > self.warning
            )
        ):
            raise ValueError(f"critical {self.critical} is milder than warning {self.warning}")
        if self.margin < 0 or self.fire_after < 1 or self.resolve_after < 1:
            raise ValueError("margin must be >= 0; fire_after and resolve_after >= 1")

    def past(self, value: float, threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value > threshold if self.direction == "above" else value < threshold

    @property
    def base(self) -> float:
        """The lower-severity threshold: the one an episode must clear to resolve."""
        return self.warning if self.warning is not None else self.critical  # type: ignore[return-value]

    def cleared(self, value: float) -> bool:
        if self.direction == "above":
            return value < self.base - self.margin
        return value > self.base + self.margin

    def threshold(self, severity: Severity) -> float:
        chosen = self.critical if severity == "critical" else self.warning
        return self.base if chosen is None else chosen


class AlertKey(NamedTuple):
    """What an alert is about; ``feature`` is None unless the metric is per feature."""

    model: str
    version: str
    role: str
    metric: str
    feature: str | None = None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One ``monitor.alerts`` record; ``to_record()`` has exactly the schema's fields."""

    alert_id: str
    model: str
    model_version: str
    role: str | None
    kind: str
    metric: str
    feature: str | None
    value: float
    threshold: float
    severity: str
    state: str
    message: str
    window_start: int
    window_end: int
    raised_at: int

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Track:
    severity: Severity | None = None  # the episode's severity while firing
    run: int = 0  # consecutive evaluations past a threshold (or, while firing, cleared)
    critical_run: int = 0  # consecutive evaluations past the critical threshold
    opened_ms: int = 0  # window_end of the evaluation that opened the episode
    kind: str = ""  # the rule's kind when the episode opened (for the firing-alert gauge)


class AlertBook:
    """The alert state of every key, and the events its evaluations emit."""

    def __init__(self) -> None:
        self._tracks: dict[AlertKey, _Track] = {}

    def active(self) -> dict[AlertKey, Severity]:
        """``{key: severity}`` of every episode currently firing."""
        return {k: t.severity for k, t in self._tracks.items() if t.severity is not None}

    def firing(self) -> dict[AlertKey, tuple[str, Severity]]:
        """``{key: (kind, severity)}`` of every episode currently firing: what the
        ``modelstream_alerts_firing`` gauge exports, labelled by the rule's real kind."""
        return {k: (t.kind, t.severity) for k, t in self._tracks.items()
                if t.severity is not None}

    def evaluate(
        self,
        key: AlertKey,
        value: float | None,
        rule: AlertRule,
        now_ms: int,
        window: tuple[int, int],
    ) -> list[AlertEvent]:
        """Advance ``key``'s state machine by one evaluation; return the events it emits."""
        if value is None or math.isnan(value):
            return []
        track = self._tracks.setdefault(key, _Track())
        critical = rule.past(value, rule.critical)
        track.critical_run = track.critical_run + 1 if critical else 0
        if track.severity is None:
            track.run = track.run + 1 if critical or rule.past(value, rule.warning) else 0
            if track.run < rule.fire_after:
                return []
            severity: Severity = "critical" if track.critical_run >= rule.fire_after else "warning"
            track.severity, track.run = severity, 0
            track.opened_ms = window[1]
            track.kind = rule.kind
            return [self._event(key, track, rule, value, "firing", now_ms, window)]
        events = []
        if track.severity == "warning" and track.critical_run >= rule.fire_after:
            track.severity = "critical"
            events.append(self._event(key, track, rule, value, "firing", now_ms, window))
        track.run = track.run + 1 if rule.cleared(value) else 0
        if track.run >= rule.resolve_after:
            events.append(self._event(key, track, rule, value, "resolved", now_ms, window))
            del self._tracks[key]
        return events

    def forget(self, keys: Iterable[AlertKey]) -> None:
        """Drop the state of keys that no longer exist (e.g. an archived version)."""
        for key in keys:
            self._tracks.pop(key, None)

    def state(self) -> list[dict[str, Any]]:
        """Plain data for a checkpoint."""
        return [
            {
                "key": list(k),
                "severity": t.severity,
                "run": t.run,
                "critical_run": t.critical_run,
                "opened_ms": t.opened_ms,
                "kind": t.kind,
            }
            for k, t in self._tracks.items()
        ]

    def load(self, state: Iterable[dict[str, Any]]) -> None:
        """Restore what ``state()`` returned (a checkpoint without kinds restores them as "")."""
        self._tracks = {
            AlertKey(*s["key"]): _Track(s["severity"], s["run"], s["critical_run"], s["opened_ms"],
                                        s.get("kind", ""))
            for s in state
        }

    @staticmethod
    def _event(
        key: AlertKey,
        track: _Track,
        rule: AlertRule,
        value: float,
        state: str,
        now_ms: int,
        window: tuple[int, int],
    ) -> AlertEvent:
        severity = track.severity or "warning"
        threshold = rule.threshold(severity)
        raw = "|".join(map(str, (*key, track.opened_ms)))
        alert_id = hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
        where = f"{key.model} v{key.version} ({key.role})"
        subject = f"{key.metric} of {key.feature}" if key.feature else key.metric
        side = "above" if rule.direction == "above" else "below"
        if state == "firing":
            message = f"{subject} of {where} is {value:.4g}, {side} {severity} {threshold:.4g}"
        else:
            message = f"{subject} of {where} is back to {value:.4g} ({severity} {threshold:.4g})"
        return AlertEvent(
            alert_id=alert_id,
            model=key.model,
            model_version=key.version,
            role=key.role,
            kind=rule.kind,
            metric=key.metric,
            feature=key.feature,
            value=float(value),
            threshold=float(threshold),
            severity=severity,
            state=state,
            message=message,
            window_start=int(window[0]),
            window_end=int(window[1]),
            raised_at=int(now_ms),
        )
