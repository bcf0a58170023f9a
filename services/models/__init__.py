"""Model artifacts: cards, the versioned ONNX store, scoring, and the Agrawal demo model.

A model version is an ONNX file plus a ``ModelCard`` (JSON). ``ArtifactStore`` keeps versions
immutable and checksummed; ``OnnxModel`` serves one with onnxruntime after checking that it
agrees with its card. No pickle is ever loaded: ``check_onnx`` refuses them by their first byte.
"""

from __future__ import annotations

from .agrawal import (
    AGRAWAL_FEATURES,
    DEMO_MODEL,
    ensure_demo_model,
    fit_agrawal,
    generate,
    split_holdout,
    train_agrawal,
)
from .artifact import check_onnx, refuse_pickle, sha256_hex
from .card import (
    ArtifactRef,
    CategoricalProfile,
    FeatureProfile,
    FeatureSpec,
    ModelCard,
    NumericProfile,
    ReferenceProfile,
    Task,
)
from .convert import sklearn_to_onnx
from .matrix import FeatureEncoder, feature_matrix
from .profile import build_reference_profile, categorical_profile, numeric_profile
from .scoring import OnnxModel
from .store import ArtifactStore

__all__ = [
    "AGRAWAL_FEATURES",
    "DEMO_MODEL",
    "ArtifactRef",
    "ArtifactStore",
    "CategoricalProfile",
    "FeatureEncoder",
    "FeatureProfile",
    "FeatureSpec",
    "ModelCard",
    "NumericProfile",
    "OnnxModel",
    "ReferenceProfile",
    "Task",
    "build_reference_profile",
    "categorical_profile",
    "check_onnx",
    "ensure_demo_model",
    "feature_matrix",
    "fit_agrawal",
    "generate",
    "numeric_profile",
    "refuse_pickle",
    "sha256_hex",
    "sklearn_to_onnx",
    "split_holdout",
    "train_agrawal",
]
