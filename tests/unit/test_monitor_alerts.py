"""Alert episodes: debounce, hysteresis, severities, one fire and one resolve, schema fit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import fastavro
import pytest

from services.monitor.alerts import AlertBook, AlertEvent, AlertKey, AlertRule

RAW_SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "monitor.alerts.avsc").read_text())
SCHEMA = fastavro.parse_schema(RAW_SCHEMA)
KEY = AlertKey("agrawal", "3", "champion", "psi", "salary")


def _run(
    book: AlertBook, rule: AlertRule, values: Sequence[float | None], key: AlertKey = KEY
) -> list[tuple[int, AlertEvent]]:
    out = []
    for i, v in enumerate(values):
        out += [
            (i, e)
            for e in book.evaluate(
                key, v, rule, now_ms=1000 * i, window=(1000 * i - 5000, 1000 * i)
            )
        ]
    return out


def test_a_fluctuating_series_fires_once_and_resolves_once() -> None:
    rule = AlertRule(kind="drift", warning=0.2, margin=0.05, fire_after=3, resolve_after=3)
    values = [
        0.1,
        0.25,
        0.1,
        0.3,
        0.1,
        0.22,
        0.26,
        0.21,  # spikes, then 3 in a row: fire at 7
        0.18,
        0.3,
        0.19,
        0.17,
        0.16,
        0.12,  # hovering under the threshold: still firing
        0.1,
        0.16,
        0.3,
        0.1,
        0.1,
        0.1,  # cleared twice, broken, then three times: resolve
        0.1,
        0.21,
        0.1,
        0.1,
    ]
    events = _run(AlertBook(), rule, values)
    assert [(i, e.state) for i, e in events] == [(7, "firing"), (19, "resolved")]
    fire, resolve = (e for _, e in events)
    assert fire.alert_id == resolve.alert_id and fire.severity == resolve.severity == "warning"
    assert fire.value == 0.21 and fire.threshold == 0.2 and fire.feature == "salary"
    assert (fire.window_start, fire.window_end, fire.raised_at) == (2000, 7000, 7000)


def test_missing_values_neither_extend_nor_break_a_run() -> None:
    rule = AlertRule(kind="performance", direction="below", warning=0.9, fire_after=2)
    events = _run(AlertBook(), rule, [0.8, None, float("nan"), 0.85])
    assert [(i, e.state) for i, e in events] == [(3, "firing")]


def test_a_warning_escalates_once_and_never_deescalates() -> None:
    rule = AlertRule(kind="performance", direction="below", warning=0.9, critical=0.8, fire_after=2)
    values = [0.85, 0.85, 0.7, 0.7, 0.75, 0.85, 0.7, 0.7, 0.95]
    events = [(i, e.state, e.severity, e.threshold) for i, e in _run(AlertBook(), rule, values)]
    assert events == [
        (1, "firing", "warning", 0.9),
        (3, "firing", "critical", 0.8),
        (8, "resolved", "critical", 0.8),
    ]


def test_critical_from_the_start() -> None:
    rule = AlertRule(kind="drift", warning=0.1, critical=0.25, fire_after=2)
    events = _run(AlertBook(), rule, [0.3, 0.4, 0.05])
    assert [(e.state, e.severity) for _, e in events] == [
        ("firing", "critical"),
        ("resolved", "critical"),
    ]


def test_events_fit_the_monitor_alerts_schema() -> None:
    rule = AlertRule(kind="drift", warning=0.2)
    events = [e for _, e in _run(AlertBook(), rule, [0.5, 0.1])]
    events += [e for _, e in _run(AlertBook(), rule, [0.5], AlertKey("m", "1", "shadow", "f1"))]
    for event in events:
        record = event.to_record()
        assert set(record) == {f["name"] for f in RAW_SCHEMA["fields"]}
        assert fastavro.validation.validate(record, SCHEMA)


def test_alert_ids_are_deterministic_per_episode() -> None:
    rule = AlertRule(kind="drift", warning=0.2)
    first = [e.alert_id for _, e in _run(AlertBook(), rule, [0.5, 0.1, 0.5])]
    again = [e.alert_id for _, e in _run(AlertBook(), rule, [0.5, 0.1, 0.5])]
    assert first == again and first[0] == first[1] != first[2]


def test_state_survives_a_checkpoint_mid_episode() -> None:
    rule = AlertRule(kind="drift", warning=0.2, resolve_after=2)
    book = AlertBook()
    _run(book, rule, [0.5, 0.1])  # firing, one clear evaluation so far
    restored = AlertBook()
    restored.load(json.loads(json.dumps(book.state())))
    assert restored.active() == {KEY: "warning"}
    events = restored.evaluate(KEY, 0.1, rule, now_ms=9, window=(0, 9))
    assert [e.state for e in events] == ["resolved"]
    assert events[0].alert_id == [e for _, e in _run(AlertBook(), rule, [0.5])][0].alert_id


def test_firing_alerts_carry_their_rule_kind_into_the_gauge() -> None:
    from types import SimpleNamespace

    from services.monitor.service import ModelMonitor
    from services.runtime import metrics

    book = AlertBook()
    drift = AlertRule(kind="drift", warning=0.2)
    quality = AlertRule(kind="performance", direction="below", warning=0.9, critical=0.7)
    concept = AlertKey("agrawal", "3", "champion", "concept_drift")
    _run(book, drift, [0.5])
    _run(book, quality, [0.5], concept)
    assert book.firing() == {KEY: ("drift", "warning"), concept: ("performance", "critical")}
    restored = AlertBook()
    restored.load(json.loads(json.dumps(book.state())))
    assert restored.firing() == book.firing()

    ModelMonitor._export_active(SimpleNamespace(alerts=restored))  # type: ignore[arg-type]
    firing = {
        (s.labels["metric"], s.labels["kind"], s.labels["severity"])
        for m in metrics.ALERTS_FIRING.collect() for s in m.samples if s.value == 1
    }
    assert firing == {("psi", "drift", "warning"), ("concept_drift", "performance", "critical")}
    restored.evaluate(KEY, 0.0, drift, now_ms=5, window=(0, 5))  # resolves
    ModelMonitor._export_active(SimpleNamespace(alerts=restored))  # type: ignore[arg-type]
    assert [s.labels["kind"] for m in metrics.ALERTS_FIRING.collect() for s in m.samples] == [
        "performance"]


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError):
        AlertRule(kind="drift")
    with pytest.raises(ValueError):
        AlertRule(kind="drift", warning=0.3, critical=0.2)
    with pytest.raises(ValueError):
        AlertRule(kind="performance", direction="below", warning=0.8, critical=0.9)
    with pytest.raises(ValueError):
        AlertRule(kind="drift", warning=0.3, fire_after=0)
