"""Detection replayed through Kafka (``bench.detection_kafka``): a concept-drift stream and a
null stream of the same length, paced through the broker into a real monitor process."""

from __future__ import annotations

import time

import pytest

from bench import detection
from bench.detection_kafka import ConceptStreams, Models, Plan, kafka_delay, replay
from services.models import ArtifactStore
from services.runtime import kafka

pytestmark = pytest.mark.integration


def test_a_concept_drift_is_alerted_after_the_change_and_a_null_stream_raises_none(
        settings, demo_store, tmp_path):
    # Topics of one partition: the monitor reads each stream in the in-process order.
    s = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}k.",
                                    "partitions": 1, "artifact_dir": tmp_path / "artifacts"})
    kafka.create_topics(s)
    store = ArtifactStore(s.artifacts)
    store.publish(demo_store.load_bytes("agrawal", "1"), demo_store.card("agrawal", "1"))
    models = Models(store)
    plan = Plan(seeds=1, change_at=3_000, horizon=3_000, streams=2)
    null_plan = Plan(seeds=1, change_at=plan.length, horizon=0, streams=2)
    drift = ConceptStreams(models, plan, "agrawal")
    null = ConceptStreams(models, null_plan, "sea")

    before = time.monotonic()
    r = replay(s, models, [lambda t0: drift.stream(detection.AGRAWAL_SUDDEN, 0, t0),
                           lambda t0: null.stream(detection.SEA_SUDDEN, 0, t0)],
               plan, kafka.producer(s), tmp_path / "monitor.log")
    (changed, clock), (unchanged, _) = r.rows
    assert len(r.waves) == 1 and time.monotonic() - before < 40

    inprocess = changed.inprocess
    assert inprocess["delay"] is not None and inprocess["pre_change"] == 0
    through = kafka_delay(changed, r.alerts, clock, plan)
    # After the change: never before the in-process detector signalled (it is the same one, on
    # the same records), and within the horizon.
    assert through["pre_change"] == 0
    assert through["delay"] is not None, r.alerts
    assert inprocess["delay"] <= through["delay"] <= plan.horizon
    assert through["seconds"] > plan.label_delay / plan.rate
    assert r.signals[("agrawal", "1")] == inprocess["signals"]

    assert unchanged.inprocess["signals"] == 0
    assert not [a for a in r.alerts if a["model"] == "sea"], r.alerts
    assert r.signals.get(("sea", "1"), 0) == 0
