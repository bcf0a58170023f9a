"""The registry and predict's challengers against the real broker: shadow and canary serving,
promotion and rollback under traffic, broken artifacts rejected, failing challengers isolated."""

from __future__ import annotations

import pickle
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import TopicPartition

from services.models import ArtifactStore, ModelCard
from services.models.agrawal import AGRAWAL_FEATURES, train_agrawal
from services.models.card import ArtifactRef
from services.models.convert import sklearn_to_onnx
from services.predict.scorer import VersionScorer
from services.predict.service import build as build_predict
from services.registry import (
    adopt_store,
    entity_bucket,
    read_state,
    register,
    rollback,
    transition,
)
from services.runtime import kafka
from services.runtime.settings import Settings
from tests.helpers import FULL, produce, read

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def challenger() -> tuple[bytes, ModelCard]:
    """A second agrawal model (another seed, a smaller sample): a real, different version."""
    return train_agrawal(n=3000, seed=7)


@pytest.fixture
def reg(settings: Settings, demo_store: ArtifactStore, tmp_path: Path) -> Settings:
    """Settings with an artifact store of this test's own, holding demo v1 as the champion."""
    root = tmp_path / "artifacts"
    shutil.copytree(demo_store.path("agrawal", "1"), root / "agrawal" / "1")
    s = settings.model_copy(update={"artifact_dir": root, "batch_size": 100})
    events = adopt_store(s, ArtifactStore(root))
    assert [e.transition for e in events] == ["registered", "champion"]
    return s


def valid_events(n: int, entities: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        entity = f"c-{i % entities}"
        features = {**FULL, "salary": float(rng.uniform(20_000, 150_000)),
                    "age": int(rng.integers(20, 80))}
        out.append((entity.encode(), orjson.dumps({
            "event_id": f"e-{i}", "entity_id": entity, "event_time": 1_763_900_000_000 + i,
            "model": "agrawal", "features": features, "ingested_at": int(time.time() * 1000),
        })))
    return out


def registered_v2(s: Settings, challenger: tuple[bytes, ModelCard]) -> str:
    event = register(s, *challenger, actor="test", lineage={"trigger": "manual",
                                                            "parent_version": "1"})
    assert event.transition == "registered", event.reason
    return event.version


def test_a_shadow_scores_every_event_beside_the_champion(reg, challenger, run_loop):
    v2 = registered_v2(reg, challenger)
    transition(reg, "agrawal", v2, "shadow", actor="test", reason="compare on live traffic")
    run_loop(build_predict(reg))
    produce(reg, "features.valid", valid_events(200, 50))
    preds = read(reg, "predictions", 400)
    assert len(preds) == 400
    by_role = Counter((p["model_version"], p["role"], p["served"]) for p in preds)
    assert by_role == {("1", "champion", True): 200, (v2, "shadow", False): 200}
    per_event = Counter(p["event_id"] for p in preds)
    assert set(per_event.values()) == {2}
    assert len({p["prediction_id"] for p in preds}) == 400


def test_a_canary_serves_a_deterministic_share_of_entities(reg, challenger, run_loop):
    v2 = registered_v2(reg, challenger)
    transition(reg, "agrawal", v2, "canary", fraction=0.3, actor="test")
    run_loop(build_predict(reg))
    produce(reg, "features.valid", valid_events(600, 200))
    preds = read(reg, "predictions", 600)
    assert len(preds) == 600 and len({p["event_id"] for p in preds}) == 600
    assert all(p["served"] for p in preds)
    version_of: dict[str, set[str]] = {}
    for p in preds:
        version_of.setdefault(p["entity_id"], set()).add(p["model_version"])
        assert p["role"] == ("canary" if p["model_version"] == v2 else "champion")
    assert all(len(v) == 1 for v in version_of.values())  # an entity sees one version
    canary = {e for e, v in version_of.items() if v == {v2}}
    assert canary == {e for e in version_of if entity_bucket(e) < 0.3}
    assert 0.15 < len(canary) / len(version_of) < 0.45


def test_promote_and_roll_back_under_traffic_lose_and_repeat_nothing(reg, challenger, run_loop):
    v2 = registered_v2(reg, challenger)
    loop = run_loop(build_predict(reg)).loop
    predictor = loop.handler
    deadline = time.monotonic() + 30
    while not loop.assigned:
        assert time.monotonic() < deadline, "predict never joined its group"
        time.sleep(0.05)
    n, chunk, tail = 4500, 50, 600
    records = valid_events(n, 300)
    rolled_back = threading.Event()

    def traffic() -> None:  # ~1500 events/s, the last `tail` only once the rollback serves
        producer = kafka.producer(reg)
        topic = reg.topics.features_valid
        for i in range(0, n, chunk):
            if i == n - tail:
                rolled_back.wait(30)
            for key, value in records[i : i + chunk]:
                producer.produce(topic, value, key)
            producer.poll(0)
            time.sleep(chunk / 1500)
        assert producer.flush(30) == 0

    def serving_champion(version: str) -> None:
        until = time.monotonic() + 20
        while predictor.watch.plan["agrawal"].champion.version != version:
            assert time.monotonic() < until, f"v{version} never became the serving champion"
            time.sleep(0.01)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    time.sleep(0.7)
    transition(reg, "agrawal", v2, "champion", actor="test", reason="better holdout")
    serving_champion(v2)
    time.sleep(0.7)
    rollback(reg, "agrawal", actor="test", reason="drill")
    serving_champion("1")
    rolled_back.set()
    sender.join(60)
    preds = read(reg, "predictions", n, timeout=60)
    assert len(preds) == n, "one prediction per event, no more and no less"
    assert Counter(p["event_id"] for p in preds).most_common(1)[0][1] == 1
    assert all(p["served"] and p["role"] == "champion" for p in preds)
    versions = Counter(p["model_version"] for p in preds)
    assert versions["1"] > tail and versions[v2] > 0, versions
    last = {f"e-{i}" for i in range(n - tail, n)}
    assert {p["model_version"] for p in preds if p["event_id"] in last} == {"1"}
    m = read_state(reg).models["agrawal"]
    assert m.champion == "1" and m.versions[v2].status == "rolled_back"
    assert [p.version for p in m.champions] == ["1", v2, "1"]


def test_a_replay_after_a_promotion_is_served_by_the_versions_of_the_first_pass(
    reg, challenger, run_loop
):
    """Served versions follow the record's timestamp, not when it is processed: replayed after
    the champion changed (predict killed with a batch in hand), events keep their prediction."""
    v2 = registered_v2(reg, challenger)
    records = valid_events(900, 200)
    first = run_loop(build_predict(reg))
    produce(reg, "features.valid", records[:300])
    transition(reg, "agrawal", v2, "champion", actor="test", reason="better holdout")
    produce(reg, "features.valid", records[300:600])
    rollback(reg, "agrawal", actor="test", reason="drill")
    produce(reg, "features.valid", records[600:])
    preds = read(reg, "predictions", 900)
    assert len(preds) == 900
    served = {p["event_id"]: (p["model_version"], p["prediction_id"]) for p in preds}
    assert {served[f"e-{i}"][0] for i in range(300)} == {"1"}
    assert {served[f"e-{i}"][0] for i in range(300, 600)} == {v2}
    assert {served[f"e-{i}"][0] for i in range(600, 900)} == {"1"}
    first.stop()

    # Replay everything with the group's offsets reset, then again after another promotion:
    # the registry now says v2, yet each event is scored as it was the first time.
    transition(reg, "agrawal", v2, "champion", actor="test", reason="again")
    group = f"{reg.topic_prefix}modelstream-predict"
    reset = kafka.consumer(reg, group)
    topic = reg.topics.features_valid
    parts = reset.list_topics(topic, timeout=10).topics[topic].partitions
    reset.commit(offsets=[TopicPartition(topic, p, 0) for p in parts], asynchronous=False)
    reset.close()
    run_loop(build_predict(reg))
    again = read(reg, "predictions", 1800, timeout=60)
    assert len(again) == 1800, "each event scored once more, as a replay"
    replayed = Counter((p["event_id"], p["model_version"], p["prediction_id"]) for p in again)
    assert set(replayed.values()) == {2}
    assert {(e, v, pid) for e, (v, pid) in served.items()} == set(replayed)


def _sklearn_onnx(n_features: int, n_classes: int) -> bytes:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, size=200)
    return sklearn_to_onnx(LogisticRegression().fit(x, y), n_features)


def test_broken_artifacts_are_rejected_and_the_champion_is_untouched(reg, challenger):
    onnx_bytes, card = challenger
    cases = {
        "truncated": (onnx_bytes[: len(onnx_bytes) // 2], card, "not a valid ONNX model"),
        "checksum": (onnx_bytes, card.model_copy(update={"artifact": ArtifactRef(
            sha256="0" * 64, bytes=len(onnx_bytes))}), "checksum mismatch"),
        "pickle": (pickle.dumps({"weights": [0.1, 0.2]}, protocol=4), card, "pickle"),
        "output shape": (_sklearn_onnx(len(AGRAWAL_FEATURES), 3), card, "probabilities must be"),
        "input shape": (_sklearn_onnx(len(AGRAWAL_FEATURES) - 1, 2), card, "features per row"),
    }
    for name, (data, c, why) in cases.items():
        event = register(reg, data, c, actor="test")
        assert event.transition == "rejected", name
        assert event.version == "" and why in (event.reason or ""), (name, event.reason)
    assert ArtifactStore(reg.artifacts).versions("agrawal") == ["1"]  # nothing stored
    m = read_state(reg).models["agrawal"]
    assert m.champion == "1" and list(m.versions) == ["1"]
    assert [h.event.transition for h in m.history[-5:]] == ["rejected"] * 5


def test_a_challenger_corrupted_at_rest_is_rejected_and_the_champion_serves(
    reg, challenger, run_loop
):
    v2 = registered_v2(reg, challenger)
    transition(reg, "agrawal", v2, "shadow", actor="test")
    artifact = ArtifactStore(reg.artifacts).path("agrawal", v2) / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")  # bit rot after it was staged
    run_loop(build_predict(reg))
    produce(reg, "features.valid", valid_events(100, 30))
    preds = read(reg, "predictions", 100)
    assert len(preds) == 100 and {p["model_version"] for p in preds} == {"1"}
    deadline = time.monotonic() + 20
    while read_state(reg).models["agrawal"].versions[v2].status != "rejected":
        assert time.monotonic() < deadline, "predict never rejected the corrupt shadow"
        time.sleep(0.3)
    last = read_state(reg).models["agrawal"].history[-1].event
    assert last.actor == "predict" and "checksum mismatch" in (last.reason or "")


def test_a_canary_that_throws_is_isolated_and_its_share_served_by_the_champion(
    reg, challenger, run_loop, monkeypatch
):
    v2 = registered_v2(reg, challenger)
    transition(reg, "agrawal", v2, "canary", fraction=0.5, actor="test")
    real_score = VersionScorer.score

    def score(self: VersionScorer, events, predicted_at):  # type: ignore[no-untyped-def]
        if self.version == v2:
            raise RuntimeError("onnxruntime: bad allocation")
        return real_score(self, events, predicted_at)

    monkeypatch.setattr(VersionScorer, "score", score)
    run_loop(build_predict(reg))
    produce(reg, "features.valid", valid_events(300, 100))
    preds = read(reg, "predictions", 300)
    assert len(preds) == 300 and len({p["event_id"] for p in preds}) == 300
    assert {(p["model_version"], p["served"]) for p in preds} == {("1", True)}
    deadline = time.monotonic() + 20
    while read_state(reg).models["agrawal"].versions[v2].status != "rejected":
        assert time.monotonic() < deadline, "the failing canary was never rejected"
        time.sleep(0.3)
    m = read_state(reg).models["agrawal"]
    assert m.canary is None and m.champion == "1"
    assert "failed to score as canary" in (m.history[-1].event.reason or "")
