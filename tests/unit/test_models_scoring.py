"""Scoring the demo model with onnxruntime, and refusing models that disagree with their card."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.models import (
    AGRAWAL_FEATURES,
    ArtifactStore,
    FeatureSpec,
    ModelCard,
    OnnxModel,
    agrawal,
    build_reference_profile,
    ensure_demo_model,
    fit_agrawal,
    generate,
    sklearn_to_onnx,
    split_holdout,
)
from services.runtime.errors import ModelLoadError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    ensure_demo_model(store)  # trains once for the whole module
    return store


@pytest.fixture(scope="module")
def model(store: ArtifactStore) -> OnnxModel:
    return OnnxModel.load(store, "agrawal")


@pytest.fixture(scope="module")
def sklearn_model() -> Any:
    """The estimator the demo model was converted from, refitted: training is deterministic."""
    x_train, y_train, _, _ = split_holdout(*generate(20_000, 42))
    return fit_agrawal(x_train, y_train, seed=42)


def test_demo_model_is_published_once(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo model was trained again")

    monkeypatch.setattr(agrawal, "train_agrawal", no_training)
    card = ensure_demo_model(store)
    assert card.version == "1"
    assert store.versions("agrawal") == ["1"]


def test_demo_card(model: OnnxModel) -> None:
    card = model.card
    assert card.feature_names == [f.name for f in AGRAWAL_FEATURES]
    assert card.labels == ["0", "1"]
    assert card.metrics["accuracy"] >= 0.9
    assert card.metrics["roc_auc"] >= 0.9
    assert card.lineage["classification_function"] == 0
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


def test_holdout_accuracy(model: OnnxModel) -> None:
    x, y = generate(5000, seed=7)
    labels, _ = model.predict(x)
    accuracy = float(np.mean(np.array(labels) == y.astype(str)))
    assert accuracy >= 0.9


def test_generated_values_stay_within_the_feature_spec() -> None:
    x, _ = generate(5000, seed=3, perturbation=0.2)
    for j, spec in enumerate(AGRAWAL_FEATURES):
        column = x[:, j]
        if spec.categories is not None:
            assert set(column.tolist()) <= {float(c) for c in spec.categories}, spec.name
        else:
            assert spec.min is not None and spec.max is not None
            assert spec.min <= column.min() and column.max() <= spec.max, spec.name


def test_onnx_agrees_with_sklearn(model: OnnxModel, sklearn_model: Any) -> None:
    generated, _ = generate(2000, seed=11, perturbation=0.3)
    # Uniform rows over the spec's box also hit non-integer ages right at the split points.
    rng = np.random.default_rng(11)
    low = [s.min if s.min is not None else min(s.category_codes()) for s in AGRAWAL_FEATURES]
    high = [s.max if s.max is not None else max(s.category_codes()) for s in AGRAWAL_FEATURES]
    uniform = rng.uniform(low, high, size=(2000, len(AGRAWAL_FEATURES))).astype(np.float32)
    x = np.vstack([generated, uniform])
    expected = sklearn_model.predict_proba(x)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-4)
    labels, scores = model.predict(x)
    np.testing.assert_allclose(scores, expected[:, 1], atol=1e-4)
    assert labels == np.array(["0", "1"])[expected.argmax(axis=1)].tolist()


def test_predict_shapes(model: OnnxModel) -> None:
    x, _ = generate(10, seed=5)
    labels, scores = model.predict(x)
    assert len(labels) == 10 and all(isinstance(label, str) for label in labels)
    assert scores.shape == (10,)
    assert model.predict_proba(x).shape == (10, 2)
    assert model.predict(x[:0]) == ([], pytest.approx(np.empty(0)))
    with pytest.raises(ValueError, match="batches"):
        model.predict(x[:, :8])


def test_more_threads_same_scores(store: ArtifactStore, model: OnnxModel) -> None:
    x, _ = generate(500, seed=6)
    two = OnnxModel.load(store, "agrawal", version="1", threads=2)
    np.testing.assert_array_equal(two.predict_proba(x), model.predict_proba(x))


def test_scoring_is_fast(model: OnnxModel) -> None:
    x, _ = generate(1000, seed=8)
    model.predict(x)
    start = time.perf_counter()
    for _ in range(20):
        model.predict(x)
    rows_per_second = 20_000 / (time.perf_counter() - start)
    assert rows_per_second > 100_000  # measured ~1.5M/s; this only catches per-row Python


def test_wrong_input_width_is_refused(store: ArtifactStore, model: OnnxModel) -> None:
    card = model.card
    narrow = card.model_copy(update={"features": card.features[:8]})
    data = store.load_bytes("agrawal", "1")
    with pytest.raises(ModelLoadError, match="9 features per row, the card lists 8"):
        OnnxModel(narrow, data)
    with pytest.raises(ModelLoadError, match="9 features per row"):
        store.publish(data, narrow.model_copy(update={"version": ""}))
    assert store.versions("agrawal") == ["1"]


def test_task_must_match_the_outputs(store: ArtifactStore, model: OnnxModel) -> None:
    data = store.load_bytes("agrawal", "1")
    multiclass = model.card.model_copy(update={"task": "multiclass", "labels": ["a", "b", "c"]})
    with pytest.raises(ModelLoadError, match="probabilities must be"):
        OnnxModel(multiclass, data)
    wrong_output = model.card.model_copy(update={"score_output": "scores"})
    with pytest.raises(ModelLoadError, match="no float output"):
        OnnxModel(wrong_output, data)


def test_load_without_versions(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no published version"):
        OnnxModel.load(ArtifactStore(tmp_path), "agrawal")


def _toy_card(
    name: str, task: str, labels: list[str], x: np.ndarray, scores: np.ndarray, **outputs: Any
) -> ModelCard:
    specs = [FeatureSpec(name=f"f{j}", type="float") for j in range(x.shape[1])]
    return ModelCard(
        name=name,
        task=task,  # type: ignore[arg-type]
        features=specs,
        labels=labels,
        reference=build_reference_profile(x, specs, scores, labels=labels or None),
        **outputs,
    )


def test_multiclass_and_regression_models(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    store = ArtifactStore(tmp_path)

    classes = np.digitize(x[:, 0], [-0.5, 0.5])
    clf = LogisticRegression().fit(x, classes)
    card = _toy_card("three", "multiclass", ["low", "mid", "high"], x, clf.predict_proba(x))
    store.publish(sklearn_to_onnx(clf, 3), card)
    three = OnnxModel.load(store, "three")
    labels, scores = three.predict(x)
    assert scores.shape == (600, 3)
    np.testing.assert_allclose(scores, clf.predict_proba(x), atol=1e-4)
    assert labels == np.array(["low", "mid", "high"])[clf.predict(x)].tolist()

    reg = LinearRegression().fit(x, 2 * x[:, 1])
    card = _toy_card(
        "linear", "regression", [], x, reg.predict(x), label_output=None, score_output="variable"
    )
    store.publish(sklearn_to_onnx(reg, 3), card)
    linear = OnnxModel.load(store, "linear")
    labels, values = linear.predict(x)
    assert labels == []
    np.testing.assert_allclose(values, reg.predict(x), atol=1e-4)
    with pytest.raises(TypeError):
        linear.predict_proba(x)
