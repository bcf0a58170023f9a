"""Data and prediction drift of a live window against a model card's reference profile.

A ``FeatureDriftWindow`` holds the last ``capacity`` values of one feature (or of the model's
score) as *bin indices* in a ring, plus the bin counts they add up to, so adding a batch and
evicting the oldest values is O(batch) numpy work. Bins follow the card's convention
(``NumericProfile.bin_counts``): a numeric value ``v`` goes to ``searchsorted(edges, v,
side="right")``; a categorical value (its float code, as the model sees it) goes to its
category's cell, or to one extra "unseen" cell. Missing values (NaN) are counted apart and left
out of the distribution.

Statistics of a window (``stats()``), with ``q`` the live and ``p`` the reference proportions of
the non-missing values, both smoothed as ``(x + eps) / (1 + K·eps)`` where a logarithm or a
division needs it (a reference bin may be empty, e.g. the demo model's score profile):

- ``psi`` = Σ (q - p)·ln(q / p), the population stability index (smoothed);
- ``js`` = the Jensen-Shannon *distance*, base 2, in [0, 1] (smoothed);
- ``ks`` = max over the reference edges of |F_live(edge) - F_ref(edge)|, cumulative proportions
  below each edge (numeric only, unsmoothed), and ``ks_pvalue`` from the asymptotic Kolmogorov
  distribution with Stephens' correction and the two-sample effective size m·N/(m+N);
- ``chi2`` = Σ (O - E)² / E over the categories plus the unseen cell, E = m·p smoothed
  (categorical only), and ``chi2_pvalue`` from χ² with (cells - 1) degrees of freedom;
- ``missing_rate``, ``out_of_range_rate`` (numeric) and ``new_category_rate`` (categorical), as
  shares of all values in the window, and ``n``.

The p-values are asymptotic and only informative. Alarm thresholds are *calibrated*
(``calibrated_threshold``): the null distribution of each statistic for a window of ``n`` values
is simulated (vectorised multinomial draws, seeded) from the reference proportions, including the
sampling noise of the reference itself (it was estimated from ``count`` training rows, a
parametric bootstrap of the two-sample null), and the threshold is its 1 - alpha quantile. Where
alpha is smaller than the simulation resolves, the tail is extrapolated with an exponential
peaks-over-threshold fit, which is conservative for these light-tailed statistics. The integrity
rates use the exact binomial quantile instead. ``DriftDetector`` derives alpha from a false-alarm
budget (``FalseAlarmBudget``): an expected run length between false alarms, in windows, shared
by every (feature, statistic) test with a Bonferroni split, so that adding features or model
versions does not multiply the noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from ..models.card import (
    CategoricalProfile,
    FeatureSpec,
    NumericProfile,
    ReferenceProfile,
)
from .ring import RingBuffer

__all__ = [
    "CATEGORICAL_STATISTICS",
    "DEFAULT_EPSILON",
    "DEFAULT_REPLICATES",
    "NUMERIC_STATISTICS",
    "RATE_STATISTICS",
    "SCORE_STATISTICS",
    "DriftDetector",
    "DriftFinding",
    "FalseAlarmBudget",
    "FeatureDriftWindow",
    "calibrated_threshold",
    "distribution_statistics",
]

DEFAULT_EPSILON = 1e-4
DEFAULT_REPLICATES = 20_000
# The statistics each kind of window alarms on by default (stats() reports a few more).
NUMERIC_STATISTICS: tuple[str, ...] = ("psi", "js", "ks", "missing_rate", "out_of_range_rate")
CATEGORICAL_STATISTICS: tuple[str, ...] = ("psi", "js", "chi2", "missing_rate", "new_category_rate")
SCORE_STATISTICS: tuple[str, ...] = ("psi", "js", "ks")
RATE_STATISTICS = frozenset({"missing_rate", "out_of_range_rate", "new_category_rate"})

# Below alpha·R = 50 simulated exceedances an empirical quantile is too noisy: extrapolate.
_EMPIRICAL_MIN_EXCEEDANCES = 50
_TAIL_FRACTION = 0.02

FeatureProfile = NumericProfile | CategoricalProfile


class FeatureDriftWindow:
    """The last ``capacity`` values of one feature, binned against its reference profile.

    ``spec`` supplies the declared range (out-of-range values are still binned, in the tail
    bins, and also counted apart) and the category codes; without it the range is the
    reference's observed [min, max] and the codes follow ``FeatureSpec.category_codes``.
    ``bounds`` overrides the range (e.g. ``(0, 1)`` for a probability score).

    >>> from services.models.profile import numeric_profile
    >>> w = FeatureDriftWindow(numeric_profile(np.arange(1000.0)), capacity=500)
    >>> w.add(np.r_[np.arange(0.0, 1000.0, 2.5), [np.nan] * 100])
    >>> s = w.stats()
    >>> round(s["psi"], 4), s["missing_rate"], s["n"]
    (0.0, 0.2, 500.0)
    """

    def __init__(
        self,
        profile: FeatureProfile,
        capacity: int,
        *,
        spec: FeatureSpec | None = None,
        bounds: tuple[float | None, float | None] | None = None,
        eps: float = DEFAULT_EPSILON,
    ) -> None:
        self.profile = profile
        self.capacity = capacity
        self.eps = eps
        self.numeric = isinstance(profile, NumericProfile)
        if isinstance(profile, NumericProfile):
            self._edges = np.asarray(profile.edges, dtype=np.float64)
            cells = len(profile.edges) + 1
            self.reference = np.asarray(profile.proportions, dtype=np.float64)
            declared = (spec.min, spec.max) if spec is not None else (None, None)
            lo, hi = bounds if bounds is not None else declared
            # Outside a declared range nothing is expected; outside the training sample's own
            # [min, max], a new value from the same distribution lands w.p. about 2 / (N + 1).
            observed = lo is None or hi is None
            self.oor_null_rate = min(1.0, 2.0 / (profile.count + 1)) if observed else 0.0
            self.bounds = (
                profile.min if lo is None else float(lo),
                profile.max if hi is None else float(hi),
            )
            # codes: 0..B-1 bins, B missing, B+1..2B the same bins out of range, 2B+1 empty slot
            self._missing_code = cells
            self._empty = 2 * cells + 1
        else:
            codes = (
                spec.category_codes()
                if spec is not None and spec.categories
                else FeatureSpec(
                    name="_", type="category", categories=profile.categories
                ).category_codes()
            )
            code_array = np.asarray(codes, dtype=np.float64)
            order = np.argsort(code_array, kind="stable")
            self._sorted_codes = code_array[order]
            self._cell_of_sorted = order
            cells = len(codes) + 1  # the categories, then "unseen"
            self.reference = np.asarray([*profile.proportions, profile.unseen], dtype=np.float64)
            self.oor_null_rate = 0.0
            # codes: 0..K-1 categories, K unseen, K+1 missing, K+2 empty slot
            self._missing_code = cells
            self._empty = cells + 1
        self.cells = cells
        dtype = np.int8 if self._empty < 127 else np.int32
        self._dtype = dtype
        self._ring = RingBuffer(capacity, {"code": (dtype, self._empty)})
        self._counts = np.zeros(self._empty + 1, dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self._ring)

    @property
    def full(self) -> bool:
        return self._ring.full

    @property
    def null_rates(self) -> dict[str, float]:
        """The rate of each integrity statistic expected on unchanged data."""
        missing = self.profile.missing
        if self.numeric:
            return {"missing_rate": missing, "out_of_range_rate": self.oor_null_rate}
        unseen = float(self.reference[-1])
        return {"missing_rate": missing, "new_category_rate": unseen * (1.0 - missing)}

    def encode(self, values: np.ndarray) -> np.ndarray:
        """The ring code of each value (bin or cell; missing; out of range for numeric)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        missing = np.isnan(v)
        if self.numeric:
            code = np.searchsorted(self._edges, v, side="right")
            lo, hi = self.bounds
            code += (self.cells + 1) * ((v < lo) | (v > hi))
        else:
            last = len(self._sorted_codes) - 1
            idx = np.minimum(np.searchsorted(self._sorted_codes, v), last)
            hit = self._sorted_codes[idx] == v
            code = np.where(hit, self._cell_of_sorted[idx], self.cells - 1)
        code[missing] = self._missing_code
        return code.astype(self._dtype, copy=False)

    def add(self, values: np.ndarray) -> None:
        """Slide the window over a batch (floats; NaN is missing; categories as their codes)."""
        code = self.encode(values)
        if code.size == 0:
            return
        evicted = self._ring.push(code=code)["code"]
        size = self._empty + 1
        self._counts += np.bincount(code, minlength=size)
        self._counts -= np.bincount(evicted, minlength=size)
        self._counts[self._empty] = 0

    def counts(self) -> tuple[np.ndarray, int, int]:
        """``(cell counts of the non-missing values, missing, out-of-range or unseen)``."""
        c = self._counts
        if self.numeric:
            b = self.cells
            out = c[b + 1 : 2 * b + 1]
            return c[:b] + out, int(c[b]), int(out.sum())
        k = self.cells
        return c[:k].copy(), int(c[k]), int(c[k - 1])

    def stats(self) -> dict[str, float | None]:
        """Every statistic of the current window (see the module docstring); None if undefined."""
        n = self.n
        dist, missing, flagged = self.counts()
        m = int(dist.sum())
        out: dict[str, float | None] = {"n": float(n)}
        rate = "out_of_range_rate" if self.numeric else "new_category_rate"
        out["missing_rate"] = missing / n if n else None
        out[rate] = flagged / n if n else None
        names = (
            ("psi", "js", "ks", "ks_pvalue")
            if self.numeric
            else ("psi", "js", "chi2", "chi2_pvalue")
        )
        if m == 0:
            return out | dict.fromkeys(names, None)
        s = distribution_statistics(dist[None, :], self.reference, self.numeric, self.eps)
        out["psi"] = float(s["psi"][0])
        out["js"] = float(s["js"][0])
        if self.numeric:
            d = float(s["ks"][0])
            ref_n = self.profile.count * (1.0 - self.profile.missing)
            ne = m * ref_n / (m + ref_n) if ref_n > 0 else float(m)
            root = math.sqrt(ne)
            out["ks"] = d
            out["ks_pvalue"] = float(special.kolmogorov((root + 0.12 + 0.11 / root) * d))
        else:
            chi2 = float(s["chi2"][0])
            out["chi2"] = chi2
            out["chi2_pvalue"] = float(stats.chi2.sf(chi2, self.cells - 1))
        return out

    def reset(self) -> None:
        self._ring.clear()
        self._counts[:] = 0

    def state(self) -> dict[str, Any]:
        """Plain data (numpy arrays inside) for a checkpoint: the window's codes, oldest first."""
        return self._ring.state()

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned, for the same profile and capacity."""
        self._ring.load(state)
        self._counts[:] = np.bincount(self._ring.view("code"), minlength=self._empty + 1)
        self._counts[self._empty] = 0


def distribution_statistics(
    counts: np.ndarray, reference: np.ndarray, numeric: bool, eps: float = DEFAULT_EPSILON
) -> dict[str, np.ndarray]:
    """PSI, JS distance and KS (numeric) or chi² (categorical) of each row of ``counts``.

    ``counts`` is ``(R, K)`` live cell counts; ``reference`` is ``(K,)`` or ``(R, K)``
    proportions. Vectorised over rows: the same code scores a live window and a Monte-Carlo
    null sample, so a threshold is calibrated on exactly the statistic it is compared with.
    """
    counts = np.asarray(counts, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    k = counts.shape[-1]
    m = counts.sum(axis=-1, keepdims=True)
    q = counts / np.maximum(m, 1.0)
    qs = (q + eps) / (1.0 + k * eps)
    ps = (reference + eps) / (1.0 + k * eps)
    out = {"psi": ((qs - ps) * np.log(qs / ps)).sum(axis=-1)}
    mid = 0.5 * (qs + ps)
    jsd = 0.5 * (ps * np.log2(ps / mid)).sum(axis=-1) + 0.5 * (qs * np.log2(qs / mid)).sum(axis=-1)
    out["js"] = np.sqrt(np.maximum(jsd, 0.0))
    if numeric:
        gap = np.cumsum(q[..., :-1] - reference[..., :-1], axis=-1)
        out["ks"] = np.abs(gap).max(axis=-1) if k > 1 else np.zeros(counts.shape[0])
    else:
        expected = m * ps
        out["chi2"] = ((counts - expected) ** 2 / expected).sum(axis=-1)
    return out


def calibrated_threshold(
    profile: FeatureProfile,
    n: int,
    statistic: str,
    alpha: float,
    *,
    null_rate: float | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    eps: float = DEFAULT_EPSILON,
) -> float:
    """The value of ``statistic`` that a window of ``n`` unchanged values exceeds w.p. ``alpha``.

    Alarm when ``value > threshold``. Distribution statistics (psi, js, ks, chi2) come from a
    cached Monte-Carlo null sample per (reference proportions, n); rates (missing_rate,
    out_of_range_rate, new_category_rate) from the binomial quantile at ``null_rate``, which
    defaults to the reference's rate (out-of-range: 0, i.e. a declared range).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    numeric = isinstance(profile, NumericProfile)
    allowed = NUMERIC_STATISTICS if numeric else CATEGORICAL_STATISTICS
    if statistic not in allowed:
        raise ValueError(f"{statistic!r} is not a statistic of a {profile.kind} profile")
    if statistic in RATE_STATISTICS:
        if null_rate is None:
            null_rate = {
                "missing_rate": profile.missing,
                "out_of_range_rate": 0.0,
                "new_category_rate": getattr(profile, "unseen", 0.0) * (1.0 - profile.missing),
            }[statistic]
        return _binomial_threshold(n, null_rate, alpha)
    sample = _null_sample(
        numeric,
        _reference_cells(profile),
        profile.missing,
        profile.count,
        n,
        replicates,
        seed,
        eps,
    )[statistic]
    return _upper_quantile(sample, alpha)


@dataclass(frozen=True, slots=True)
class FalseAlarmBudget:
    """How often a whole family of drift tests may raise a false alarm on unchanged data.

    ``arl0_windows`` is the expected run length between two false alarms of the family, in
    windows (a window being ``capacity`` events). Each of ``tests`` tests gets
    ``alpha = 1 / (arl0_windows · tests)`` (Bonferroni), so the family's chance of any false
    alarm per window is at most ``1 / arl0_windows``. Evaluating a sliding window more often
    than once per window correlates the evaluations: alarms then come in episodes, and the
    alert debounce keeps one alert per episode.

    >>> FalseAlarmBudget(arl0_windows=1000).alpha(tests=50)
    2e-05
    """

    arl0_windows: float = 1000.0

    def alpha(self, tests: int) -> float:
        if self.arl0_windows < 1.0:
            raise ValueError("arl0_windows must be at least 1")
        return 1.0 / (self.arl0_windows * max(tests, 1))


@dataclass(frozen=True, slots=True)
class DriftFinding:
    """One statistic of one window against its calibrated threshold.

    ``feature`` is None for prediction drift (the model's score distribution).
    """

    feature: str | None
    statistic: str
    value: float
    threshold: float
    n: int

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold


class DriftDetector:
    """Drift of every feature and of the score of one model version, with calibrated thresholds.

    ``add(x, scores)`` takes the encoded feature matrix (columns in ``feature_names`` order, the
    ONNX column order when ``specs`` is the card's feature list) and the scores; ``evaluate()``
    reports each alarming statistic of each *full* window (the thresholds are calibrated for
    exactly ``capacity`` values). ``family_size`` widens the Bonferroni family beyond this
    detector's own tests, e.g. to the tests of every version monitored at once.
    ``min_rate_increase`` is a floor on the integrity-rate thresholds above their null rate, so
    that a single missing value in a feature that was never missing is not an alarm.
    """

    def __init__(
        self,
        reference: ReferenceProfile,
        capacity: int,
        *,
        specs: Sequence[FeatureSpec] | None = None,
        budget: FalseAlarmBudget | None = None,
        family_size: int | None = None,
        statistics: Mapping[str, Sequence[str]] | None = None,
        score_bounds: tuple[float | None, float | None] | None = None,
        min_rate_increase: float = 0.01,
        replicates: int = DEFAULT_REPLICATES,
        seed: int = 0,
        eps: float = DEFAULT_EPSILON,
    ) -> None:
        by_name = {s.name: s for s in specs} if specs is not None else {}
        self.feature_names = list(by_name) if specs is not None else list(reference.features)
        self.capacity = capacity
        self.windows = {
            name: FeatureDriftWindow(
                reference.features[name], capacity, spec=by_name.get(name), eps=eps
            )
            for name in self.feature_names
        }
        self.score_window = FeatureDriftWindow(
            reference.score, capacity, bounds=score_bounds, eps=eps
        )
        chosen = {
            "numeric": NUMERIC_STATISTICS,
            "categorical": CATEGORICAL_STATISTICS,
            "score": SCORE_STATISTICS,
            **(statistics or {}),
        }
        self.tests: list[tuple[str | None, str]] = [
            (name, stat)
            for name, w in self.windows.items()
            for stat in chosen["numeric" if w.numeric else "categorical"]
        ] + [(None, stat) for stat in chosen["score"]]
        self.alpha = (budget or FalseAlarmBudget()).alpha(family_size or len(self.tests))
        self.min_rate_increase = min_rate_increase
        self._replicates, self._seed, self._eps = replicates, seed, eps
        self._thresholds: dict[tuple[str | None, str], float] | None = None

    def window(self, feature: str | None) -> FeatureDriftWindow:
        return self.score_window if feature is None else self.windows[feature]

    def add(self, x: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Slide every feature window over ``x`` ``(n, features)``, and the score window."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"x has shape {x.shape}, expected (n, {len(self.feature_names)})")
        for j, w in enumerate(self.windows.values()):
            w.add(x[:, j])
        if scores is not None:
            self.score_window.add(scores)

    def thresholds(self) -> dict[tuple[str | None, str], float]:
        """``{(feature, statistic): threshold}`` for every test, calibrated once and kept."""
        if self._thresholds is None:
            self._thresholds = {}
            for feature, stat in self.tests:
                w = self.window(feature)
                null = w.null_rates.get(stat)
                t = calibrated_threshold(
                    w.profile,
                    self.capacity,
                    stat,
                    self.alpha,
                    null_rate=null,
                    replicates=self._replicates,
                    seed=self._seed,
                    eps=self._eps,
                )
                if null is not None:
                    t = max(t, null + self.min_rate_increase)
                self._thresholds[(feature, stat)] = t
        return self._thresholds

    def evaluate(self) -> list[DriftFinding]:
        """Every test of every full window, drifted or not (see ``DriftFinding.drifted``)."""
        thresholds = self.thresholds()
        stats_of: dict[str | None, dict[str, float | None]] = {}
        findings = []
        for feature, stat in self.tests:
            w = self.window(feature)
            if not w.full:
                continue
            if feature not in stats_of:
                stats_of[feature] = w.stats()
            value = stats_of[feature].get(stat)
            if value is None:
                continue
            findings.append(DriftFinding(feature, stat, value, thresholds[(feature, stat)], w.n))
        return findings

    def reset(self) -> None:
        for w in (*self.windows.values(), self.score_window):
            w.reset()


def _reference_cells(profile: FeatureProfile) -> tuple[float, ...]:
    if isinstance(profile, NumericProfile):
        return tuple(profile.proportions)
    return (*profile.proportions, profile.unseen)


def _binomial_threshold(n: int, rate: float, alpha: float) -> float:
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    # isf gives the smallest count c with P(X > c) <= alpha: alarm on a count above it.
    return float(stats.binom.isf(alpha, n, rate)) / n


@functools.lru_cache(maxsize=512)
def _null_sample(
    numeric: bool,
    cells: tuple[float, ...],
    missing: float,
    reference_count: int,
    n: int,
    replicates: int,
    seed: int,
    eps: float,
) -> dict[str, np.ndarray]:
    """Sorted null samples of each distribution statistic for a window of ``n`` values."""
    rng = np.random.default_rng(seed)
    p = np.asarray(cells, dtype=np.float64)
    p = p / p.sum()
    # The window has missing values too: draw them, so the statistics see the same m as live.
    live = rng.multinomial(n, np.r_[p * (1.0 - missing), missing], size=replicates)[:, :-1]
    ref_n = max(1, round(reference_count * (1.0 - missing)))
    reference = rng.multinomial(ref_n, p, size=replicates) / ref_n
    sample = distribution_statistics(live, reference, numeric, eps)
    return {name: np.sort(values) for name, values in sample.items()}


def _upper_quantile(sorted_sample: np.ndarray, alpha: float) -> float:
    """The 1 - alpha quantile of a sorted sample, with an exponential tail beyond its reach."""
    r = len(sorted_sample)
    if alpha * r >= _EMPIRICAL_MIN_EXCEEDANCES:
        return float(sorted_sample[min(r - 1, math.ceil((1.0 - alpha) * r) - 1)])
    # Peaks over threshold: excesses over the (1 - k/r) quantile are modelled as exponential,
    # so the quantile at alpha is u + mean_excess · ln(k / (r·alpha)).
    k = max(_EMPIRICAL_MIN_EXCEEDANCES, int(r * _TAIL_FRACTION))
    u = float(sorted_sample[r - k - 1])
    mean_excess = float((sorted_sample[r - k :] - u).mean())
    return u + mean_excess * math.log(k / (r * alpha))
