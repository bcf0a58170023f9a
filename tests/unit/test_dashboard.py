"""The dashboard's arithmetic: quantiles from histogram buckets, rates from scrapes of several
replicas (restarts included), the drift heatmap's unit, the champion timeline and the alerts."""

from __future__ import annotations

import math

import pytest

from services.dashboard.board import champion_timeline, drift_heatmap, model_history
from services.dashboard.feed import TopicHistory
from services.dashboard.promtext import histogram_quantile, parse_samples
from services.dashboard.scrape import FAMILIES, ScrapeHistory, Target
from services.registry import ModelEvent
from services.runtime import topics

EXPOSITION = """\
# TYPE modelstream_events_in_total counter
modelstream_events_in_total{service="predict",topic="features.valid"} %(n)s
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total %(cpu)s
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 104857600
# TYPE modelstream_consumer_lag gauge
modelstream_consumer_lag{partition="0",service="predict",topic="features.valid"} 7
# TYPE modelstream_events_rejected_total counter
modelstream_events_rejected_total{reason="not_json",service="ingest"} 3
# TYPE modelstream_batch_seconds histogram
modelstream_batch_seconds_bucket{le="+Inf",service="predict"} 1
"""


def samples(n: float, cpu: float, latency: dict[str, float] | None = None) -> dict:
    text = EXPOSITION % {"n": n, "cpu": cpu}
    if latency:
        text += "# TYPE modelstream_prediction_latency_seconds histogram\n" + "".join(
            f'modelstream_prediction_latency_seconds_bucket{{le="{le}",model="a",version="1"}}'
            f" {v}\n" for le, v in latency.items())
    return parse_samples(text, FAMILIES)


def test_parse_keeps_only_the_families_asked_for() -> None:
    s = samples(5, 1.0)
    names = {name for name, _ in s}
    assert "modelstream_events_in_total" in names
    assert not any(n.startswith("modelstream_batch_seconds") for n in names)


@pytest.mark.parametrize(("q", "expected"), [(0.5, 0.00625), (0.9, 0.03), (0.0, 0.0)])
def test_histogram_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    # 10 observations: 4 in (0, 0.005], 4 in (0.005, 0.01], 2 in (0.01, 0.05]
    buckets = {0.005: 4.0, 0.01: 8.0, 0.05: 10.0, math.inf: 10.0}
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    # Everything beyond the largest finite bound: that bound is all one can say.
    assert histogram_quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 5.0}) == 1.0


def test_rates_sum_replicas_and_survive_a_restart() -> None:
    h = ScrapeHistory(points=10)
    a, b = Target("predict", "http://a/metrics"), Target("predict", "http://b/metrics")
    h.add(100.0, {a: samples(1000, 10.0), b: samples(500, 5.0)})
    h.add(102.0, {a: samples(1400, 11.0), b: samples(700, 5.5)})
    point = h.points[-1]["services"]["predict"]
    assert point["events_in"] == pytest.approx((400 + 200) / 2)
    assert point["cpu"] == pytest.approx(100 * (1.0 + 0.5) / 2)  # percent of one core
    assert point["memory_mb"] == pytest.approx(200.0)
    assert point["lag"] == 14
    assert h.up == {"predict": [2, 2]}
    # b restarted (its counter went back to 50) and a stopped answering.
    h.add(104.0, {a: None, b: samples(50, 0.2)})
    assert h.points[-1]["services"]["predict"]["events_in"] == pytest.approx(50 / 2)
    assert h.up == {"predict": [1, 2]}
    assert h.dead_letters == {("ingest", "not_json"): 3.0}
    series = h.series()
    assert series["events_in"]["predict"] == [None, 300.0, 25.0]


def test_latency_counts_a_histogram_that_first_appears_between_scrapes() -> None:
    h = ScrapeHistory(points=10)
    t = Target("predict", "http://a/metrics")
    h.add(1.0, {t: samples(0, 0.0)})  # no prediction yet: no latency series at all
    h.add(2.0, {t: samples(10, 0.1, {"0.01": 5, "0.1": 10, "+Inf": 10})})
    assert h.points[-1]["latency_p50_ms"] == pytest.approx(10.0)
    assert h.points[-1]["latency_p99_ms"] == pytest.approx(98.2)
    h.add(3.0, {t: samples(10, 0.1, {"0.01": 5, "0.1": 10, "+Inf": 10})})
    assert h.points[-1]["latency_p50_ms"] is None  # nothing new in that interval


def test_drift_heatmap_in_units_of_the_calibrated_threshold() -> None:
    history = [
        {"t": 1, "drift": {"age.psi": 0.05, "age.ks": 0.2, "__score__.psi": 0.01}},
        {"t": 2, "drift": {"age.psi": 0.3, "age.ks": 0.1, "car.chi2": 4.0}},
    ]
    thresholds = {("age", "psi"): 0.1, ("age", "ks"): 0.1, ("__score__", "psi"): 0.1}
    h = drift_heatmap(history, thresholds)
    assert h["unit"] == "threshold"
    assert h["features"] == ["age", "__score__"]  # car has no known threshold: left out
    assert h["cells"] == [[2.0, 3.0], [0.1, None]]
    fallback = drift_heatmap(history, {})
    assert fallback["unit"] == "psi/0.2"
    assert fallback["cells"][fallback["features"].index("age")] == [0.25, 1.5]


def _event(version: str, transition: str, t: int, **kw: object) -> dict:
    return ModelEvent(model="m", version=version, transition=transition, time=t,  # type: ignore[arg-type]
                      actor="test", **kw).to_record()


def test_champion_timeline_follows_the_registry_fold() -> None:
    h = TopicHistory(points=10)
    for record in (
        _event("1", "registered", 1), _event("1", "champion", 2),
        _event("2", "registered", 3), _event("2", "canary", 4, traffic_fraction=0.1),
        _event("2", "champion", 5), _event("2", "rolled_back", 6, reason="worse"),
        _event("9", "champion", 7),  # never registered: refused by the fold
    ):
        h.add(topics.MODEL_EVENTS, record)
    assert champion_timeline(h.registry) == {"m": [
        {"version": "1", "from": 2, "to": 5, "ended": "champion"},
        {"version": "2", "from": 5, "to": 6, "ended": "rolled_back"},
        {"version": "1", "from": 6, "to": None, "ended": None},
    ]}
    history = model_history(h.registry, 100)
    assert [e["transition"] for e in history][-2:] == ["rolled_back", "champion"]
    assert history[-2]["restored"] == "1"
    assert history[-1]["applied"] is False and "not registered" in history[-1]["note"]


def test_alerts_keep_when_an_episode_opened() -> None:
    h = TopicHistory(points=10)
    base = {"alert_id": "a1", "model": "m", "model_version": "1", "role": "champion",
            "kind": "drift", "metric": "psi", "feature": "age", "value": 0.3,
            "threshold": 0.1, "severity": "warning", "message": "psi of age"}
    h.add(topics.MONITOR_ALERTS, {**base, "state": "firing", "raised_at": 100})
    h.add(topics.MONITOR_ALERTS, {**base, "state": "firing", "raised_at": 105,
                                  "severity": "critical"})
    assert h.alerts["a1"]["opened_at"] == 100 and h.alerts["a1"]["severity"] == "critical"
    h.add(topics.MONITOR_ALERTS, {**base, "state": "resolved", "raised_at": 200})
    assert h.alerts["a1"]["state"] == "resolved" and h.alerts["a1"]["opened_at"] == 100
    assert len(h.alert_events) == 3


def test_snapshots_keep_time_order_and_bounded_history() -> None:
    h = TopicHistory(points=3)
    for t in (1, 2, 2, 3, 4, 0):
        h.add(topics.MONITOR_METRICS, {
            "model": "m", "model_version": "1", "role": "champion", "emitted_at": t,
            "predictions": t, "labeled": t, "metrics": {"accuracy": 0.9},
            "feature_drift": {"age.psi": 0.1}})
    points = h.quality[("m", "1", "champion")]
    assert [p["t"] for p in points] == [2, 3, 4]
    assert points[-1]["accuracy"] == 0.9 and points[-1]["expected_accuracy"] is None
