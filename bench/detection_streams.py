"""The streams and models of ``bench.detection``: each stream has its drift at a known event.

Two kinds of source:

- river's synthetic generators (BSD-3): ``Agrawal`` (features from river, labels from river's
  own classification functions 0 and 2, the switch the demo makes), ``SEA`` (variant 0 → 1:
  the threshold moves from 8 to 9, 10% label noise) and ``Hyperplane`` (still until the change,
  then rotating: river reads ``mag_change`` at every event, so setting it mid-stream starts the
  rotation there);
- seeded numpy streams: a 9-feature tabular stream (six Gaussian features, three categorical
  ones: the shape of the demo model's input) for covariate shifts, and a two-class Gaussian
  stream for label shift (the class prior moves, P(x | y) stays).

A concept change is sudden at ``change_at`` or, for ``ramp`` events, gradual: event ``t`` follows
the new concept with probability ``(t - change_at) / ramp`` (a linear ramp). Every model is a
small scikit-learn classifier fitted on the pre-change concept (the demo model for Agrawal), and
is "deployed" with a card-like reference profile built by ``build_reference_profile`` as the
training code builds it, and the card's holdout metrics (accuracy and rows, on held-out rows of
its training stream, never the test stream), so the monitor sees what it would see in production.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.models.card import FeatureSpec, ReferenceProfile
from services.models.profile import build_reference_profile
from services.monitor.concept import holdout_prior

__all__ = [
    "LABEL_SHIFT_PRIORS",
    "TABULAR_SHIFTS",
    "Deployed",
    "Shift",
    "agrawal_concepts",
    "agrawal_model",
    "concept_labels",
    "hyperplane_stream",
    "label_shift_model",
    "label_shift_stream",
    "sea_concepts",
    "sea_model",
    "tabular",
    "tabular_model",
]

TRAIN_EVENTS = 20_000  # rows a model (and its reference profile) is fitted on
SEA_NOISE = 0.1
SEA_VARIANTS = (0, 1)
AGRAWAL_FUNCTIONS = (0, 2)  # the switch `make demo` makes
HYPERPLANE_FEATURES = 10
HYPERPLANE_MAG_CHANGE = 0.001
HYPERPLANE_SIGMA = 0.1
LABEL_SHIFT_PRIORS = (0.2, 0.4)
_LABEL_SHIFT_MEAN = np.array([1.5, 1.0, 0.0, 0.0])
_BINARY_LABELS = ["0", "1"]


@dataclass
class Deployed:
    """A fitted classifier with what the monitor would know of it (specs, profile, accuracy)."""

    name: str
    model: Any  # a fitted scikit-learn classifier (probability of class 1 = score)
    specs: list[FeatureSpec] | None
    reference: ReferenceProfile | None
    accuracy: float  # on held-out pre-change rows, as a card's metrics["accuracy"]
    impute: bool = False  # the model's pipeline fills NaN with 0 (the tabular stream's mean)
    holdout_rows: int = 0  # the rows ``accuracy`` was measured on, as metrics["holdout_rows"]

    @property
    def metrics(self) -> dict[str, float]:
        """The card metrics the monitor reads (``holdout_prior``)."""
        return {"accuracy": self.accuracy, "holdout_rows": float(self.holdout_rows)}

    @property
    def prior(self) -> tuple[float, float] | None:
        """The concept-drift detector's prior, as ``VersionMonitor`` derives it from the card
        (none unless the monitor's default is to use it)."""
        from services.runtime.settings import Settings

        if not Settings.model_fields["monitor_concept_holdout_prior"].default:
            return None
        return holdout_prior(self.metrics)

    def _input(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(x, nan=0.0) if self.impute else x

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._input(x))[:, 1], dtype=np.float64)

    def errors(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self._input(x)) != y, dtype=bool)


def _deploy(
    name: str, model: Any, x: np.ndarray, y: np.ndarray, specs: list[FeatureSpec] | None,
    impute: bool = False, profile: bool = True,
) -> Deployed:
    """Fit on the first 3/4 of ``(x, y)``; profile and score the last quarter as a card does."""
    split = len(y) * 3 // 4
    fitted = model.fit(x[:split], y[:split])
    d = Deployed(name, fitted, specs, None, 0.0, impute, holdout_rows=len(y) - split)
    d.accuracy = float(1.0 - d.errors(x[split:], y[split:]).mean())
    if profile and specs is not None:
        d.reference = build_reference_profile(
            x[:split], specs, d.scores(x[split:]), labels=_BINARY_LABELS, seed=0
        )
    return d


# -- the tabular stream (numpy): covariate shifts ---------------------------------------------

TABULAR_SPECS: list[FeatureSpec] = [
    *(FeatureSpec(name=f"x{i}", type="float") for i in range(6)),
    FeatureSpec(name="c0", type="category", categories=list(range(8))),
    FeatureSpec(name="c1", type="category", categories=list(range(5))),
    FeatureSpec(name="c2", type="category", categories=list(range(12))),
]
_C_PROBS = (
    0.6 ** np.arange(8) / (0.6 ** np.arange(8)).sum(),
    np.full(5, 0.2),
    (1.0 / np.arange(1, 13)) / (1.0 / np.arange(1, 13)).sum(),
)
# y = 1[2 x0 - 1.5 x1 + x2 + 0.3 (c0 - 1) + N(0, 0.5²) > 0]: x3..x5, c1 and c2 are unused.
_TAB_COEF = np.array([2.0, -1.5, 1.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0])
_TAB_NOISE = 0.5


@dataclass(frozen=True)
class Shift:
    """A covariate shift of one column of the tabular stream from ``change_at`` on.

    ``kind`` is ``mean`` (add ``size`` standard deviations), ``new_category`` (a share ``size`` of
    the values become a category the model never saw) or ``missing`` (a share ``size`` become
    missing). Labels follow the shifted values (P(y | x) is unchanged); a missing value is
    missing only to the model.
    """

    kind: str
    column: int
    size: float

    @property
    def feature(self) -> str:
        return TABULAR_SPECS[self.column].name


TABULAR_SHIFTS: dict[str, Shift] = {
    "covariate: mean +0.5σ": Shift("mean", 0, 0.5),
    "covariate: mean +1σ": Shift("mean", 0, 1.0),
    "covariate: mean +2σ": Shift("mean", 0, 2.0),
    "covariate: new category 5%": Shift("new_category", 7, 0.05),
    "covariate: missing 0→10%": Shift("missing", 4, 0.10),
    "benign: unused feature +1σ": Shift("mean", 5, 1.0),
}


def tabular(
    n: int, seed: int, shift: Shift | None = None, change_at: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows ``(x (n, 9) float64, y)`` of the tabular stream, ``shift`` from ``change_at``."""
    rng = np.random.default_rng([seed, 7])
    x = np.empty((n, 9))
    x[:, :6] = rng.standard_normal((n, 6))
    for j, p in enumerate(_C_PROBS):
        x[:, 6 + j] = rng.choice(len(p), size=n, p=p)
    noise = rng.standard_normal(n) * _TAB_NOISE
    after = np.arange(n) >= change_at
    hit = after & (rng.random(n) < (shift.size if shift is not None else 0.0))
    if shift is not None and shift.kind == "mean":
        x[after, shift.column] += shift.size
    elif shift is not None and shift.kind == "new_category":
        x[hit, shift.column] = len(_C_PROBS[shift.column - 6])  # the first unseen code
    y = ((x - np.r_[np.zeros(6), 1.0, 0.0, 0.0]) @ _TAB_COEF + noise > 0).astype(np.int64)
    if shift is not None and shift.kind == "missing":
        x[hit, shift.column] = np.nan
    return x, y


def tabular_model() -> Deployed:
    from sklearn.linear_model import LogisticRegression

    x, y = tabular(TRAIN_EVENTS, seed=10_000)
    return _deploy("tabular", LogisticRegression(max_iter=1000), x, y, TABULAR_SPECS,
                   impute=True)


# -- the two-class Gaussian stream (numpy): label shift ---------------------------------------

LABEL_SHIFT_SPECS: list[FeatureSpec] = [FeatureSpec(name=f"z{i}", type="float") for i in range(4)]


def label_shift_stream(
    n: int, seed: int, change_at: int, priors: tuple[float, float] = LABEL_SHIFT_PRIORS
) -> tuple[np.ndarray, np.ndarray]:
    """x | y ~ N(y·μ, I) in 4 dimensions; P(y = 1) is ``priors[0]``, then ``priors[1]``."""
    rng = np.random.default_rng([seed, 11])
    prior = np.where(np.arange(n) < change_at, priors[0], priors[1])
    y = (rng.random(n) < prior).astype(np.int64)
    x = rng.standard_normal((n, 4)) + y[:, None] * _LABEL_SHIFT_MEAN
    return x, y


def label_shift_model() -> Deployed:
    from sklearn.linear_model import LogisticRegression

    x, y = label_shift_stream(TRAIN_EVENTS, seed=10_001, change_at=TRAIN_EVENTS)
    return _deploy("label-shift", LogisticRegression(max_iter=1000), x, y, LABEL_SHIFT_SPECS)


# -- river's generators ------------------------------------------------------------------------


def concept_labels(
    old: np.ndarray, new: np.ndarray, change_at: int, ramp: int, seed: int
) -> np.ndarray:
    """Labels of the old concept before ``change_at``, of the new one after, with a linear ramp.

    >>> concept_labels(np.zeros(6, int), np.ones(6, int), 2, 0, 0).tolist()
    [0, 0, 1, 1, 1, 1]
    """
    t = np.arange(len(old))
    if ramp <= 0:
        use_new = t >= change_at
    else:
        p_new = np.clip((t - change_at + 1) / ramp, 0.0, 1.0)
        use_new = np.random.default_rng([seed, 13]).random(len(old)) < p_new
    return np.where(use_new, new, old)


def _river_rows(stream: Any, n: int, names: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((n, len(names)))
    y = np.empty(n, dtype=np.int64)
    for i, (row, label) in enumerate(itertools.islice(stream, n)):
        x[i] = [row[k] for k in names]
        y[i] = label
    return x, y


def sea_concepts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y under variant 0, y under variant 1)`` of river's SEA with 10% label noise.

    river draws the features and the noise flips from one seeded generator whatever the
    variant, so the two variants share ``x`` and the flips and differ only by the threshold.
    """
    from river.datasets import synth

    x, y_old = _river_rows(synth.SEA(variant=SEA_VARIANTS[0], noise=SEA_NOISE, seed=seed), n,
                           [0, 1, 2])
    _, y_new = _river_rows(synth.SEA(variant=SEA_VARIANTS[1], noise=SEA_NOISE, seed=seed), n,
                           [0, 1, 2])
    return x, y_old, y_new


def sea_model() -> Deployed:
    from sklearn.linear_model import LogisticRegression

    x, y, _ = sea_concepts(TRAIN_EVENTS, seed=10_002)
    return _deploy("sea", LogisticRegression(max_iter=1000), x, y, None, profile=False)


def agrawal_concepts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y under function 0, y under function 2)`` of river's Agrawal.

    The features are river's (function 0, no perturbation, unbalanced: the function does not
    change the draws); the labels of function 2 come from river's own function on those rows.
    Rows are float32, as the demo model is served.
    """
    from river.datasets import synth

    from services.models.agrawal import AGRAWAL_FEATURES

    names = [f.name for f in AGRAWAL_FEATURES]
    old, new = AGRAWAL_FUNCTIONS
    x, y_old = _river_rows(synth.Agrawal(classification_function=old, seed=seed), n, names)
    function = getattr(synth.Agrawal, f"_classification_function_{new}")
    y_new = np.fromiter((function(*row) for row in x.tolist()), np.int64, n)
    return x.astype(np.float32), y_old, y_new


def agrawal_model() -> Deployed:
    """The demo model exactly as ``train_agrawal`` fits it (scikit-learn, without ONNX)."""
    from services.models.agrawal import fit_agrawal, generate, split_holdout

    x_train, y_train, x_hold, y_hold = split_holdout(*generate(TRAIN_EVENTS, 42))
    model = fit_agrawal(x_train, y_train, 42)
    accuracy = float((model.predict(x_hold) == y_hold).mean())
    return Deployed("agrawal", model, None, None, accuracy, holdout_rows=len(y_hold))


def hyperplane_stream(
    n: int, seed: int, change_at: int, mag_change: float = HYPERPLANE_MAG_CHANGE
) -> tuple[np.ndarray, np.ndarray]:
    """river's Hyperplane (10 features, 2 drifting, 5% noise), still until ``change_at``.

    From ``change_at`` on the hyperplane rotates by ``mag_change`` per event (direction
    reversing w.p. ``sigma`` = 0.1 per event, river's default). The first ``change_at`` rows are
    one stationary concept: train on a prefix of them.
    """
    from river.datasets import synth

    ds = synth.Hyperplane(seed=seed, n_features=HYPERPLANE_FEATURES, n_drift_features=2,
                          mag_change=0.0, sigma=HYPERPLANE_SIGMA)
    names = list(range(HYPERPLANE_FEATURES))
    x = np.empty((n, len(names)))
    y = np.empty(n, dtype=np.int64)
    it = iter(ds)
    for i in range(n):
        if i == change_at:
            ds.mag_change = mag_change  # read by river's generator at every event
        row, label = next(it)
        x[i] = [row[k] for k in names]
        y[i] = label
    return x, y


def hyperplane_model(x: np.ndarray, y: np.ndarray) -> Deployed:
    from sklearn.linear_model import LogisticRegression

    return _deploy("hyperplane", LogisticRegression(max_iter=1000), x, y, None, profile=False)
