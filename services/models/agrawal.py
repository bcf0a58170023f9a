"""The demo model: a gradient-boosted classifier on river's ``Agrawal`` loan-approval stream.

``modelstream up`` publishes it on an empty artifact store so the stack is usable at once, and
the retrain service can train it again on other classification functions to show concept drift.
The feature bounds are those of river's generator *code* (``river.datasets.synth.Agrawal``),
which differ from its docstring: commission reaches 85k (10k + 75k·U), and house value is
``(8 - zipcode) · 100k · (0.5 + U)``, so it spans 0 (zipcode 8) to 1.2M (zipcode 0).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.errors import ModelLoadError
from .card import FeatureSpec, ModelCard
from .convert import sklearn_to_onnx
from .profile import build_reference_profile

if TYPE_CHECKING:
    from .store import ArtifactStore

__all__ = [
    "AGRAWAL_FEATURES",
    "DEMO_MODEL",
    "HOLDOUT_FRACTION",
    "ensure_demo_model",
    "fit_agrawal",
    "generate",
    "split_holdout",
    "train_agrawal",
]

DEMO_MODEL = "agrawal"

AGRAWAL_FEATURES: list[FeatureSpec] = [
    FeatureSpec(name="salary", type="float", min=20_000.0, max=150_000.0),
    FeatureSpec(name="commission", type="float", min=0.0, max=85_000.0),
    FeatureSpec(name="age", type="int", min=20, max=80),
    FeatureSpec(name="elevel", type="category", categories=list(range(0, 5))),
    FeatureSpec(name="car", type="category", categories=list(range(1, 21))),
    FeatureSpec(name="zipcode", type="category", categories=list(range(0, 9))),
    FeatureSpec(name="hvalue", type="float", min=0.0, max=1_200_000.0),
    FeatureSpec(name="hyears", type="int", min=1, max=30),
    FeatureSpec(name="loan", type="float", min=0.0, max=500_000.0),
]

_LABELS = ["0", "1"]
HOLDOUT_FRACTION = 0.25
# Small on purpose: 60 shallow trees train in about a second and score a 1000-row batch in
# well under a millisecond.
_N_TREES = 60
_MAX_DEPTH = 3
_LEARNING_RATE = 0.1


def generate(
    n: int, seed: int, classification_function: int = 0, perturbation: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the Agrawal stream: ``X`` float32 ``(n, 9)`` in feature order, ``y`` int."""
    from river.datasets import synth

    stream = synth.Agrawal(
        classification_function=classification_function, seed=seed, perturbation=perturbation
    )
    names = [f.name for f in AGRAWAL_FEATURES]
    x = np.empty((n, len(names)), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for i, (row, label) in enumerate(itertools.islice(stream, n)):
        x[i] = [row[name] for name in names]
        y[i] = label
    return x, y


def split_holdout(
    x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_holdout, y_holdout)``: the last quarter of the stream is held out.

    A stream has an order, so the holdout is the most recent rows rather than a random subset.
    """
    split = int(len(y) * (1.0 - HOLDOUT_FRACTION))
    return x[:split], y[:split], x[split:], y[split:]


def fit_agrawal(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """The fitted scikit-learn classifier behind the demo model (deterministic for a seed)."""
    from sklearn.ensemble import GradientBoostingClassifier

    # HistGradientBoostingClassifier would fit faster, but skl2onnx 1.20 fails to convert it
    # under scikit-learn 1.9 (boolean tree attributes), so the classic estimator it is.
    clf = GradientBoostingClassifier(
        n_estimators=_N_TREES, max_depth=_MAX_DEPTH, learning_rate=_LEARNING_RATE, random_state=seed
    )
    return clf.fit(x, y)


def train_agrawal(
    n: int = 20_000, seed: int = 42, classification_function: int = 0
) -> tuple[bytes, ModelCard]:
    """Train, convert to ONNX and describe the demo model; returns ``(onnx_bytes, card)``.

    The card is unpublished (no version or checksum yet): ``ArtifactStore.publish`` fills those.
    """
    import onnx
    import skl2onnx
    import sklearn
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    x_train, y_train, x_hold, y_hold = split_holdout(*generate(n, seed, classification_function))
    clf = fit_agrawal(x_train, y_train, seed)
    onnx_bytes = sklearn_to_onnx(clf, len(AGRAWAL_FEATURES), name=DEMO_MODEL)
    # Metrics and the reference score profile come from the ONNX model as it will be served
    # (float32): scikit-learn's float64 probabilities land in other bins at the profile's
    # edges, which the monitor would report as prediction drift.
    proba = _served_proba(onnx_bytes, x_hold)

    card = ModelCard(
        name=DEMO_MODEL,
        task="binary",
        features=AGRAWAL_FEATURES,
        labels=_LABELS,
        metrics={
            "accuracy": float(accuracy_score(y_hold, proba.argmax(axis=1))),
            "roc_auc": float(roc_auc_score(y_hold, proba[:, 1])) if len(set(y_hold)) > 1 else 0.5,
            "log_loss": float(log_loss(y_hold, proba, labels=[0, 1])),
            "holdout_rows": float(len(y_hold)),  # what the accuracy rests on (the monitor's prior)
        },
        lineage={
            "trainer": f"{__name__}.train_agrawal",
            "estimator": "sklearn.ensemble.GradientBoostingClassifier",
            "params": {
                "n_estimators": _N_TREES,
                "max_depth": _MAX_DEPTH,
                "learning_rate": _LEARNING_RATE,
            },
            "dataset": "river.datasets.synth.Agrawal",
            "classification_function": classification_function,
            "seed": seed,
            "training_size": len(y_train),
            "holdout_size": len(y_hold),
            "training_window": None,  # synthetic: no event-time window
            "parent_version": None,
            "versions": {
                "scikit-learn": sklearn.__version__,
                "skl2onnx": skl2onnx.__version__,
                "onnx": onnx.__version__,
            },
        },
        reference=build_reference_profile(
            x_train, AGRAWAL_FEATURES, proba[:, 1], labels=_LABELS, seed=seed
        ),
        input_name="features",
        label_output="label",
        score_output="probabilities",
    )
    return onnx_bytes, card


def _served_proba(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    out = session.run(["probabilities"], {"features": np.asarray(x, dtype=np.float32)})[0]
    return np.asarray(out, dtype=np.float64)


def ensure_demo_model(store: ArtifactStore) -> ModelCard:
    """The latest ``agrawal`` card, training and publishing version 1 if there is none."""
    latest = store.latest(DEMO_MODEL)
    if latest is not None:
        return store.card(DEMO_MODEL, latest)
    onnx_bytes, card = train_agrawal()
    try:
        # An explicit "1": if another process got there first, use its model instead.
        return store.publish(onnx_bytes, card.model_copy(update={"version": "1"}))
    except ModelLoadError:
        latest = store.latest(DEMO_MODEL)
        if latest is None:
            raise
        return store.card(DEMO_MODEL, latest)
