"""The pure half of ``bench.detection_kafka``: from the replay's clock and the alerts the
monitor published to delays in events and seconds."""

from __future__ import annotations

import numpy as np
import orjson

from bench.detection_kafka import Clock, Plan, Stream, encode, kafka_delay
from services.models.card import FeatureSpec
from services.runtime import topics
from services.runtime.records import check_labeled, check_prediction

PLAN = Plan(change_at=1_000, horizon=2_000, label_delay=100, rate=1_000.0)


def clock() -> Clock:
    # One position per ms from wall time 10,000 ms on.
    return Clock(wall=[10_000.0 + p for p in range(0, 3_200, 10)],
                 position=list(range(0, 3_200, 10)))


def stream(topic: str) -> Stream:
    return Stream("s", 0, "m", "1", topic, [], [], np.arange(3_000), 500, {})


def alert(raised_at: int, *, metric: str = "concept_drift", kind: str = "performance",
          window_end: int = 0, state: str = "firing", version: str = "1") -> dict:
    return {"model": "m", "model_version": version, "state": state, "metric": metric,
            "kind": kind, "feature": None, "raised_at": raised_at, "window_end": window_end}


def test_the_clock_maps_a_time_to_the_position_produced_by_then_and_back() -> None:
    c = clock()
    assert c.position_at(10_000) == 0
    assert c.position_at(10_015) == 10
    assert c.position_at(9_999) == -1
    assert c.wall_at(1_000) == 11_000.0
    assert c.wall_at(1_005) == 11_010.0
    assert c.longest_gap() == 10.0


def test_a_concept_alert_counts_from_the_change_with_the_label_delay_inside() -> None:
    st = stream(topics.PREDICTIONS_LABELED)
    alerts = [alert(10_600),  # raised by an event before the change: a false alarm
              alert(11_700),  # reached 1,700: the labels up to 1,600 were out
              alert(12_000),
              alert(11_650, version="2"),  # another stream's
              alert(11_500, state="resolved")]
    out = kafka_delay(st, alerts, clock(), PLAN)
    assert out["pre_change"] == 1 and out["alerts"] == 3
    assert out["delay"] == 701  # positions 1,000..1,700
    assert out["seconds"] == 0.7  # from when the change event was due
    assert out["delay_window"] is None


def test_an_alert_past_the_horizon_is_a_miss() -> None:
    st = stream(topics.PREDICTIONS_LABELED)
    out = kafka_delay(st, [alert(13_150)], clock(), PLAN)
    assert out["delay"] is None and out["pre_change"] == 0


def test_a_drift_alert_is_placed_by_its_window_and_timed_by_the_clock() -> None:
    st = stream(topics.PREDICTIONS)
    alerts = [alert(10_900, metric="psi", kind="drift", window_end=500 + 880),  # before
              alert(11_300, metric="psi", kind="drift", window_end=500 + 1_249),
              alert(11_200, metric="concept_drift")]  # not a drift alert
    out = kafka_delay(st, alerts, clock(), PLAN)
    assert out["pre_change"] == 1
    assert out["delay"] == 301 and out["delay_window"] == 250


def test_records_are_what_predict_and_join_publish() -> None:
    specs = [FeatureSpec(name="a", type="float"),
             FeatureSpec(name="c", type="category", categories=[0, 1, 2])]
    x = np.array([[0.5, 2.0], [np.nan, 1.0]])
    keys, values = encode("m", "3", specs, x, np.array([0.8, 0.2]), np.array([1, 0]), 1_000)
    first, second = (orjson.loads(v) for v in values)
    check_prediction(first)
    assert first["features"] == {"a": 0.5, "c": 2} and second["features"]["a"] is None
    assert (first["label"], first["score"], first["event_time"]) == ("1", 0.8, 1_000)
    assert second["event_time"] == 1_001 and keys[0] == first["entity_id"].encode()
    _, labeled = encode("m", "3", specs, x, np.array([0.8, 0.2]), np.array([1, 0]), 1_000,
                        truth=np.array([0, 0]), label_delay=50)
    rec = orjson.loads(labeled[0])
    check_labeled(rec)
    assert (rec["outcome_label"], rec["correct"], rec["labeled_at"]) == ("0", False, 1_050)
    assert rec["prediction_id"] == first["prediction_id"]
