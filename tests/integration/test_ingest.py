"""ingest against the real broker and Valkey: validation, DLQ reasons, point-in-time merge."""

from __future__ import annotations

import math

import orjson
import pytest

from services.ingest.feature_store import FeatureStore
from services.ingest.service import build
from services.runtime.service import redis_client
from tests.helpers import FULL, event, produce, read

pytestmark = pytest.mark.integration

BAD_CASES: list[tuple[bytes, str]] = [
    (b"this is not json", "not_json"),
    (b"\x02e\x02c\x02\x0e", "not_avro"),
    (b'{"event_id": "x", ', "not_json"),
    (b"\x00\x00\x00\x00\x2a\x02ab", "unknown_schema_id"),
    (b"\x06e-1", "avro_truncated"),
    (orjson.dumps({"entity_id": "c", "features": FULL}), "missing_event_id"),
    (orjson.dumps({"event_id": "x", "features": FULL}), "missing_entity_id"),
    (event("b1", "c-b1", FULL, model="nope"), "unknown_model"),
    (event("b2", "c-new", {"salary": 1000.0 * 50}), "missing_feature"),
    (event("b3", "c-b3", {**FULL, "salary": "lots"}), "wrong_type"),
    (event("b4", "c-b4", {**FULL, "car": {"make": "x"}}), "wrong_type"),
    (event("b5", "c-b5", FULL).replace(b'"loan":20000.0', b'"loan":NaN'), "non_finite"),
    (event("b6", "c-b6", FULL).replace(b'"loan":20000.0', b'"loan":-Infinity'), "non_finite"),
    (event("b7", "c-b7", {**FULL, "age": 200}), "out_of_range"),
    (event("b8", "c-b8", {**FULL, "car": 99}), "unknown_category"),
    (event("b9", "c-b9", {**FULL, "colour": 1}), "unknown_feature"),
    (b'{"event_id": "' + b"x" * 70000 + b'"}', "too_large"),
]


def test_every_bad_event_lands_in_the_dlq_with_its_reason(settings, run_loop):
    produce(settings, "features", [(b"k", payload) for payload, _ in BAD_CASES])
    produce(settings, "features", [(b"c-1", event("ok-1", "c-1", FULL))])
    run_loop(build(settings))
    dlq = read(settings, "features.dlq", len(BAD_CASES))
    valid = read(settings, "features.valid", 1)
    assert sorted(r["reason"] for r in dlq) == sorted(reason for _, reason in BAD_CASES)
    assert [v["event_id"] for v in valid] == ["ok-1"]
    by_reason = {r["reason"]: r for r in dlq}
    assert by_reason["out_of_range"]["detail"].startswith("age")
    # The original bytes, and where they came from, travel with the reason.
    rec = by_reason["not_json"]
    assert rec["topic"] == settings.topics.features
    assert rec["offset"] >= 0


def test_partial_updates_are_completed_and_late_events_do_not_overwrite(settings, run_loop):
    t0 = 1_763_900_000_000
    produce(settings, "features", [
        (b"c-7", event("e1", "c-7", FULL, event_time=t0)),
        (b"c-7", event("e2", "c-7", {"salary": 60000.0}, event_time=t0 + 1000)),
        # Late: older than e2's salary, newer than e1's age.
        (b"c-7", event("e3", "c-7", {"salary": 25000.0, "age": 50}, event_time=t0 + 500)),
        (b"c-7", event("e2", "c-7", {"salary": 60000.0}, event_time=t0 + 1000)),  # duplicate
    ])
    run_loop(build(settings))
    valid = read(settings, "features.valid", 4)
    assert [v["event_id"] for v in valid] == ["e1", "e2", "e3", "e2"]
    assert valid[1]["features"] == {**FULL, "salary": 60000.0}
    # e3's snapshot is point-in-time: its own values, the stored rest.
    assert valid[2]["features"]["salary"] == 25000.0 and valid[2]["features"]["age"] == 50
    stored = FeatureStore(redis_client(settings), prefix=settings.topic_prefix,
                          ttl_seconds=60).get("agrawal", "c-7")
    assert stored["salary"] == 60000.0  # the late event did not overwrite the newer salary
    assert stored["age"] == 50  # but did update the older age
    ttl = redis_client(settings).pttl(f"{settings.topic_prefix}fs:agrawal:c-7")
    assert 0 < ttl <= settings.feature_ttl_seconds * 1000


def test_counts_reconcile_under_a_mixed_stream(settings, run_loop):
    from services.cli.traffic import BAD_KINDS, agrawal_events

    stream = list(agrawal_events(3000, bad_rate=0.1, seed=11))
    produce(settings, "features", [(e.key, e.value) for e in stream])
    run_loop(build(settings))
    bad = [e for e in stream if e.kind in BAD_KINDS]
    dlq = read(settings, "features.dlq", len(bad))
    valid = read(settings, "features.valid", len(stream) - len(bad))
    assert len(valid) + len(dlq) == len(stream)
    assert len(dlq) == len(bad)
    assert sorted(r["reason"] for r in dlq) == sorted(BAD_KINDS[e.kind] for e in bad)
    for v in valid:
        assert all(not (isinstance(x, float) and math.isnan(x)) for x in v["features"].values())
        assert len(v["features"]) == 9


def test_plain_avro_events_are_accepted(settings, run_loop):
    import io

    import fastavro

    from services.runtime.schemas import schema_for

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema_for("features"), {
        "event_id": "av-1", "entity_id": "c-av", "event_time": 1_763_900_000_000,
        "model": "agrawal", "features": FULL,
    })
    produce(settings, "features", [(b"c-av", buf.getvalue())])
    run_loop(build(settings))
    valid = read(settings, "features.valid", 1)
    assert valid[0]["event_id"] == "av-1"
    assert valid[0]["features"]["age"] == 41
