"""The training set from labeled predictions, the built-in trainer, the candidate's card."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.models import ArtifactStore, OnnxModel
from services.models.agrawal import AGRAWAL_FEATURES, generate
from services.retrain.dataset import gather_training_set, live_pairs
from services.retrain.trainer import SklearnTrainer, build_card, load_trainer
from services.runtime.errors import ConfigError

NAMES = [f.name for f in AGRAWAL_FEATURES]


def labeled(n: int, function: int, seed: int = 3) -> list[dict[str, Any]]:
    x, y = generate(n, seed, classification_function=function)
    out = []
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        features = {name: (int(v) if spec.type != "float" else v)
                    for name, spec, v in zip(NAMES, AGRAWAL_FEATURES, row, strict=True)}
        out.append({"event_id": f"e-{i}", "model": "agrawal", "model_version": "1",
                    "role": "champion", "served": True, "label": "1",
                    "features": features, "event_time": 1_000 + i,
                    "outcome_label": str(label)})
    return out


def test_training_set_is_one_row_per_event_split_by_time(demo_store: ArtifactStore) -> None:
    card = demo_store.card("agrawal", "1")
    records = labeled(400, function=2)
    # The same events scored by a shadow too (not served): still one example each.
    records += [{**r, "model_version": "2", "role": "shadow", "served": False}
                for r in records[:100]]
    records.append({**records[0], "event_id": "odd-label", "outcome_label": "maybe"})
    records.append({**records[1], "event_id": "bad", "features": {**records[1]["features"],
                                                                   "age": 500}})
    records.reverse()  # arrival order is not event order
    data = gather_training_set(records, card, 0.25, (0, 10))
    assert data.rows == 400 and data.dropped == 2
    assert len(data.y_train) == 300 and len(data.y_holdout) == 100
    # The holdout is the most recent quarter: the last 100 events in event time.
    x, y = generate(400, 3, classification_function=2)
    assert np.array_equal(data.y_holdout, y[300:])
    assert np.allclose(data.x_holdout, x[300:])


def test_sklearn_trainer_learns_the_new_concept(demo_store: ArtifactStore) -> None:
    card = demo_store.card("agrawal", "1")
    data = gather_training_set(labeled(1200, function=2), card, 0.25, (0, 10))
    onnx_bytes = SklearnTrainer().train(card, data.x_train, data.y_train, {"n_estimators": "30"})
    candidate = OnnxModel(card.model_copy(update={"version": ""}), onnx_bytes)
    labels, scores = candidate.predict(data.x_holdout)
    truth = np.asarray(card.labels, dtype=object)[data.y_holdout]
    new_acc = float(np.mean(np.asarray(labels, dtype=object) == truth))
    old_labels, _ = OnnxModel.load(demo_store, "agrawal", "1").predict(data.x_holdout)
    old_acc = float(np.mean(np.asarray(old_labels, dtype=object) == truth))
    assert new_acc > 0.9 and new_acc > old_acc + 0.1

    built = build_card(card, data.x_train, scores, {"accuracy": new_acc},
                       {"parent_version": "1", "job_id": "j-1"})
    assert built.version == "" and built.artifact.sha256 == ""
    assert built.features == card.features and built.labels == card.labels
    # The holdout's size rides with its accuracy: the monitor weighs the accuracy by it.
    assert built.metrics == {"accuracy": new_acc, "holdout_rows": float(len(scores))}
    assert built.reference.rows == len(data.y_train)
    assert built.reference != card.reference  # profiled from its own training data


def test_trainer_refuses_data_without_every_label(demo_store: ArtifactStore) -> None:
    card = demo_store.card("agrawal", "1")
    x = np.zeros((50, len(NAMES)), dtype=np.float32)
    with pytest.raises(ValueError, match="only one label"):
        SklearnTrainer().train(card, x, np.zeros(50, dtype=np.int64), {})


def test_trainer_parameters_are_checked() -> None:
    trainer = SklearnTrainer()
    assert trainer.params({"max_depth": "5"})["max_depth"] == 5
    with pytest.raises(ConfigError, match="unknown parameter 'depth'"):
        trainer.params({"depth": "5"})
    with pytest.raises(ConfigError, match="is not a int"):
        trainer.params({"n_estimators": "many"})


def test_trainers_are_found_by_entry_point_name() -> None:
    assert isinstance(load_trainer("sklearn"), SklearnTrainer)
    with pytest.raises(ConfigError, match="no trainer 'nope'"):
        load_trainer("nope")


def test_live_pairs_take_one_version_in_one_role() -> None:
    records = [
        {"event_id": "a", "model_version": "1", "role": "champion", "label": "1",
         "outcome_label": "1"},
        {"event_id": "a", "model_version": "2", "role": "shadow", "label": "0",
         "outcome_label": "1"},
        {"event_id": "b", "model_version": "2", "role": "shadow", "label": "0",
         "outcome_label": None},
    ]
    assert live_pairs(records, "2", False, "shadow") == {"a": ("0", "1")}
    assert live_pairs(records, "1", False, "champion") == {"a": ("1", "1")}
    assert live_pairs(records, "1", False, "shadow") == {}
