"""`modelstream score --topic`: a time range of predictions re-scored offline, one row per event."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from confluent_kafka import Producer

from services.models import ArtifactStore, OnnxModel, feature_matrix
from tests.conftest import settings_env
from tests.helpers import FULL

pytestmark = pytest.mark.integration

T0 = 1_763_900_000_000


def test_a_time_range_of_predictions_is_rescored(settings, demo_store: ArtifactStore, tmp_path):
    producer = Producer(settings.kafka_config())
    topic = settings.topics.predictions
    expected = []
    for i in range(60):
        features = {**FULL, "age": 20 + i}
        base = {"event_id": f"e-{i}", "entity_id": f"c-{i % 7}", "model": "agrawal",
                "model_version": "1", "label": "1", "score": 0.5, "features": features,
                "event_time": T0 + i * 1000, "predicted_at": T0 + i * 1000, "latency_ms": 1.0}
        records = [{**base, "role": "champion", "served": True},
                   {**base, "role": "shadow", "served": False, "model_version": "2"}]
        if i == 25:
            records.append({**base, "model": "other"})
        for r in records:
            producer.produce(topic, orjson.dumps(r), r["entity_id"], timestamp=T0 + i * 1000)
        if 20 <= i < 40:
            expected.append((f"e-{i}", features))
    producer.produce(topic, b"{broken", b"x", timestamp=T0 + 30_500)
    assert producer.flush(30) == 0

    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "score", "--topic", "predictions",
         "--from", str(T0 + 20_000), "--to", "2025-11-23T12:14:00Z", "-o", str(out), "--json",
         "--version", "1"],
        env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stderr)
    # 20 events in range (T0+20 s .. T0+40 s, exclusive) and the broken record among them;
    # their shadow copies and the other model's record are skipped, not input rows.
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (21, 20, 1)
    assert summary["skipped"] == 21
    assert summary["reasons"] == {"not_json": 1}
    assert summary["examples"][0]["offset"] >= 0
    scored = sorted((orjson.loads(line) for line in out.read_bytes().splitlines()),
                    key=lambda r: r["event_time"])
    assert [s["event_id"] for s in scored] == [e for e, _ in expected]
    model = OnnxModel.load(demo_store, "agrawal", "1")
    labels, scores = model.predict(feature_matrix([f for _, f in expected], model.card.features))
    assert [s["label"] for s in scored] == labels
    assert [round(s["score"], 6) for s in scored] == [round(float(v), 6) for v in scores]
    assert {"partition", "offset", "entity_id"} <= set(scored[0])
