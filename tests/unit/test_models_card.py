"""Cards, profiles and feature encoding: pure logic, no ONNX involved."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from services.models import (
    CategoricalProfile,
    FeatureSpec,
    ModelCard,
    NumericProfile,
    build_reference_profile,
    categorical_profile,
    feature_matrix,
    numeric_profile,
)

SPECS = [
    FeatureSpec(name="amount", type="float", min=0.0, max=100.0),
    FeatureSpec(name="count", type="int", min=0, max=9),
    FeatureSpec(name="color", type="category", categories=["red", "green", "blue"]),
    FeatureSpec(name="zone", type="category", categories=[3, 5, 7]),
]


def _data(n: int = 1000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.uniform(0, 100, n),
            rng.integers(0, 10, n),
            rng.integers(0, 3, n),  # positions of "red", "green", "blue"
            rng.choice([3, 5, 7], n),
        ]
    ).astype(np.float32)


def _card(**overrides: object) -> ModelCard:
    x = _data()
    scores = np.asarray(np.random.default_rng(2).uniform(size=x.shape[0]))
    fields: dict[str, object] = {
        "name": "toy",
        "task": "binary",
        "features": SPECS,
        "labels": ["no", "yes"],
        "metrics": {"accuracy": 0.9},
        "lineage": {"trainer": "test", "seed": 1, "parent_version": None},
        "reference": build_reference_profile(x, SPECS, scores, labels=["no", "yes"]),
    }
    fields.update(overrides)
    return ModelCard.model_validate(fields)


def test_card_json_round_trip() -> None:
    card = _card()
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert again == card
    assert again.reference.features["zone"].kind == "categorical"
    assert again.reference.sample[0]["color"] in {"red", "green", "blue"}
    assert isinstance(again.reference.sample[0]["count"], int)


def test_feature_names_and_spec_by_name() -> None:
    card = _card()
    assert card.feature_names == ["amount", "count", "color", "zone"]
    assert card.spec_by_name["zone"].categories == [3, 5, 7]
    assert card.version == ""  # unpublished until the store assigns one


@pytest.mark.parametrize(
    ("task", "labels"),
    [
        ("binary", ["a"]),
        ("binary", ["a", "b", "c"]),
        ("multiclass", ["a", "b"]),
        ("regression", ["a"]),
    ],
)
def test_label_count_must_fit_the_task(task: str, labels: list[str]) -> None:
    with pytest.raises(ValidationError, match="labels"):
        _card(task=task, labels=labels)


def test_card_rejects_unsafe_names_and_versions() -> None:
    with pytest.raises(ValidationError):
        _card(name="../etc")
    with pytest.raises(ValidationError):
        _card(version="01")


def test_card_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        _card(lables=["no", "yes"])


def test_reference_must_cover_the_features() -> None:
    with pytest.raises(ValidationError, match="reference"):
        _card(features=SPECS[:3])


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "a", "type": "category", "categories": [1, "x"]},
        {"name": "a", "type": "category", "categories": [1, 1]},
        {"name": "a", "type": "category", "min": 0},
        {"name": "a", "type": "float", "categories": [1]},
        {"name": "a", "type": "float", "min": 2, "max": 1},
    ],
)
def test_feature_spec_rejects_inconsistent_specs(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeatureSpec.model_validate(spec)


def test_category_codes() -> None:
    assert SPECS[2].category_codes() == [0.0, 1.0, 2.0]  # strings: their position
    assert SPECS[3].category_codes() == [3.0, 5.0, 7.0]  # integers: themselves


def test_numeric_profile_bins_hold_equal_mass() -> None:
    values = np.random.default_rng(3).normal(size=10_000)
    profile = numeric_profile(values)
    assert len(profile.edges) == 9
    assert len(profile.proportions) == 10
    assert math.isclose(sum(profile.proportions), 1.0)
    assert all(abs(p - 0.1) < 0.01 for p in profile.proportions)
    assert profile.bin_counts(values).tolist() == [round(p * 10_000) for p in profile.proportions]
    assert profile.cdf_at_edges()[4] == pytest.approx(0.5, abs=0.01)


def test_numeric_profile_deduplicates_edges_of_a_point_mass() -> None:
    values = np.array([0.0] * 600 + list(range(1, 401)), dtype=np.float64)
    profile = numeric_profile(values)
    assert profile.edges == sorted(set(profile.edges))
    assert profile.edges[0] == 0.0
    assert profile.proportions[0] == 0.0  # nothing below the point mass
    assert profile.proportions[1] > 0.6 - 1e-9
    assert math.isclose(sum(profile.proportions), 1.0)


def test_numeric_profile_counts_missing_values() -> None:
    profile = numeric_profile(np.array([1.0, 2.0, np.nan, 4.0]))
    assert profile.missing == 0.25
    assert profile.count == 4
    assert profile.max == 4.0


def test_categorical_profile_keeps_unseen_values_apart() -> None:
    profile = categorical_profile(np.array([3, 3, 5, 9]), [3, 5, 7], [3, 5, 7])
    assert profile.proportions == [0.5, 0.25, 0.0]
    assert profile.unseen == 0.25
    assert profile.frequencies == {3: 0.5, 5: 0.25, 7: 0.0}


def test_reference_profile_proportions_sum_to_one() -> None:
    reference = _card().reference
    for profile in [*reference.features.values(), reference.score]:
        total = sum(profile.proportions)
        if isinstance(profile, CategoricalProfile):
            total += profile.unseen
        assert math.isclose(total, 1.0, abs_tol=1e-9)
    assert reference.predicted is not None
    assert reference.predicted.categories == ["no", "yes"]
    assert len(reference.sample) == 200


def test_profiles_reject_inconsistent_shapes() -> None:
    with pytest.raises(ValidationError):
        NumericProfile(count=1, edges=[1.0], proportions=[1.0], mean=0, std=0, min=0, max=0)
    with pytest.raises(ValidationError):
        NumericProfile(
            count=1, edges=[1.0, 2.0], proportions=[0.5, 0.4, 0.0], mean=0, std=0, min=0, max=0
        )


def test_feature_matrix_encodes_categories_and_missing_values() -> None:
    rows: list[dict[str, object]] = [
        {"amount": 1.5, "count": 2, "color": "blue", "zone": 5},
        {"amount": None, "color": "purple", "zone": 7},
    ]
    x = feature_matrix(rows, SPECS)
    assert x.dtype == np.float32
    assert x[0].tolist() == [1.5, 2.0, 2.0, 5.0]
    assert np.isnan(x[1, :3]).all()
    assert x[1, 3] == 7.0
