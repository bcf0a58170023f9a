"""The alternatives' model code scores as predict does, and the onnxruntime limit runs, on the
demo model (no broker: the Kafka side is exercised by ``make bench``)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import limits
from bench.faust_agent import model_session
from services.models import OnnxModel
from services.models.agrawal import AGRAWAL_FEATURES, generate

NAMES = [f.name for f in AGRAWAL_FEATURES]


def test_the_alternatives_load_the_served_model_and_agree_with_predict(demo_store):
    session, names, version = model_session(demo_store.root, "agrawal")
    served = OnnxModel.load(demo_store, "agrawal")
    assert names == NAMES and version == served.version
    x, _ = generate(50, seed=3)
    labels, proba = session.run(None, {"features": x[:1]})
    want_labels, want_scores = served.predict(x[:1])
    assert str(labels[0]) == want_labels[0]
    assert proba[0][1] == pytest.approx(float(want_scores[0]), abs=1e-6)


def test_the_rest_server_answers_one_event_as_predict_would(demo_store):
    pytest.importorskip("fastapi")  # the `bench` extra
    from fastapi.testclient import TestClient

    from bench.rest_server import create_app

    x, _ = generate(5, seed=4)
    client = TestClient(create_app(demo_store.root, "agrawal"))
    features = {n: float(v) for n, v in zip(NAMES, x[0], strict=True)}
    body = client.post("/predict", json={"features": features}).json()
    labels, scores = OnnxModel.load(demo_store, "agrawal").predict(x[:1])
    assert body["label"] == labels[0] and body["score"] == pytest.approx(float(scores[0]))
    missing = client.post("/predict", json={"features": {"salary": 1.0}})
    assert missing.status_code == 422 and "commission" in missing.json()["detail"]


def test_onnxruntime_alone_is_faster_per_row_in_batches(demo_store):
    x, _ = generate(1000, seed=5)
    rates = limits.onnx_rows_per_second(demo_store, x, batch_sizes=(1, 1000), seconds=0.1)
    assert set(rates) == {1, 1000} and all(np.isfinite(list(rates.values())))
    assert rates[1000] > 2 * rates[1]
