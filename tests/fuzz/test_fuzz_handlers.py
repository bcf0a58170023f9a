"""The services' batch handlers against hostile batches, on the real Valkey: nothing raises out
of a handler, every bad record becomes a dead letter with a reason, and counts reconcile —
records in = records published + records dead-lettered (ingest, predict), = script calls +
dead letters (join), = counted + skipped (monitor)."""

from __future__ import annotations

import itertools

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from services.ingest.catalog import ModelCatalog
from services.ingest.feature_store import FeatureStore
from services.ingest.service import FeatureIngestor
from services.models import ArtifactStore
from services.predict.service import Predictor
from services.runtime.serde import EventDecoder
from services.runtime.service import redis_client
from tests.fuzz.hostile import (
    FUZZ_HANDLERS,
    SANE,
    TOPIC_FIELDS,
    event_shaped_json,
    hostile_payloads,
)

pytestmark = pytest.mark.integration

_offsets = itertools.count()
DLQ_DECODER = EventDecoder("features.dlq", max_bytes=1 << 24)


def good(topic: str, i: int) -> bytes:
    values = dict(SANE)
    values["event_id"] = f'"good-{i}"'
    values["prediction_id"] = f'"p-good-{i}"'
    return ("{" + ",".join(f'"{k}":{values[k]}' for k in TOPIC_FIELDS[topic]) + "}").encode()


def batch(topic: str, payloads: list[bytes]) -> list[Message]:
    return [Message(topic=topic, partition=0, offset=next(_offsets), key=b"k", value=p,
                    timestamp=(1, 1_763_900_000_000)) for p in payloads]


def mixed(topic: str) -> st.SearchStrategy[list[bytes]]:
    """A batch of hostile records with a few good ones among them."""
    one = st.one_of(hostile_payloads(topic), event_shaped_json(topic),
                    st.integers(0, 10**6).map(lambda i: good(topic, i)))
    return st.lists(one, min_size=1, max_size=12)


def counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ingest_handler(settings):
    store = FeatureStore(redis_client(settings), prefix=settings.topic_prefix, ttl_seconds=60)
    ingest = FeatureIngestor(settings, store,
                             ModelCatalog(ArtifactStore(settings.artifacts), reject_unknown=True))
    t = settings.topics

    @FUZZ_HANDLERS
    @given(payloads=mixed("features"))
    def check(payloads: list[bytes]) -> None:
        outputs = ingest(batch(t.features, payloads))
        assert len(outputs) == len(payloads)  # one valid record or one dead letter each
        for out in outputs:
            assert out.topic in (t.features_valid, t.features_dlq)
            if out.topic == t.features_dlq:
                dead = DLQ_DECODER.decode(out.value)
                assert dead["reason"] and dead["service"] == "ingest"

    check()


def test_join_handler(settings):
    from services.join.service import OutcomeJoiner
    from services.join.state import JoinState

    joiner = OutcomeJoiner(settings, JoinState(redis_client(settings),
                                               prefix=settings.topic_prefix, grace_seconds=1))
    t = settings.topics
    labeled_topic = t.name("predictions.labeled")

    @FUZZ_HANDLERS
    @given(preds=mixed("predictions"), outcomes=mixed("outcomes"), first=st.booleans())
    def check(preds: list[bytes], outcomes: list[bytes], first: bool) -> None:
        msgs = batch(t.predictions, preds) + batch(t.outcomes, outcomes)
        if first:
            msgs.reverse()
        before = counter("modelstream_events_rejected_total",
                         {"service": "join", "reason": "bad_prediction"})
        outputs = joiner(msgs)
        dead = [DLQ_DECODER.decode(o.value) for o in outputs if o.topic == t.name("outcomes.dlq")]
        assert all(o.topic in (labeled_topic, t.name("outcomes.dlq")) for o in outputs)
        assert all(d["reason"] for d in dead)
        bad = sum(d["reason"] == "bad_prediction" for d in dead)
        after = counter("modelstream_events_rejected_total",
                        {"service": "join", "reason": "bad_prediction"})
        assert after - before == bad
        joiner.state.sweep(2**62)  # and the state it kept can always be swept

    check()


def test_monitor_handler(settings):
    from services.monitor.service import ModelMonitor

    monitor = ModelMonitor(settings, ArtifactStore(settings.artifacts), redis_client(settings))
    t = settings.topics
    labeled_topic = t.name("predictions.labeled")

    def total() -> float:
        return sum(counter("modelstream_monitor_events_total", {"stream": s, "result": r})
                   for s in ("predictions", "labeled")
                   for r in ("counted", "duplicate", "undecodable"))

    @FUZZ_HANDLERS
    @given(preds=mixed("predictions"), labeled=mixed("predictions.labeled"))
    def check(preds: list[bytes], labeled: list[bytes]) -> None:
        before = total()
        assert monitor(batch(t.predictions, preds) + batch(labeled_topic, labeled)) == []
        assert total() - before == len(preds) + len(labeled)  # each counted or skipped

    check()
    monitor.evaluate(1_763_900_100_000)  # the windows it filled evaluate, too


def test_predict_handler(settings):
    predictor = Predictor(settings, ArtifactStore(settings.artifacts))
    t = settings.topics

    @FUZZ_HANDLERS
    @given(payloads=mixed("features.valid"))
    def check(payloads: list[bytes]) -> None:
        outputs = predictor(batch(t.features_valid, payloads))
        assert len(outputs) == len(payloads)  # one prediction or one dead letter each
        for out in outputs:
            assert out.topic in (t.predictions, t.features_dlq)
            if out.topic == t.predictions:
                orjson.loads(out.value)

    try:
        check()
    finally:
        predictor.close()  # its registry watch: a consumer that would outlive the broker


