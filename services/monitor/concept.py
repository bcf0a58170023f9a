"""Concept drift: change detectors on a model version's 0/1 error stream.

Both detectors take a batch of errors (1 = the prediction was wrong) and return the indices,
within the batch, at which they signalled a change (``update_many``); ``reset()`` forgets
everything.

- ``ADWINDetector`` wraps river's ``ADWIN`` (Bifet & Gavaldà 2007), fed one event at a time:
  adaptive windowing, no parameter but ``delta``; it signals changes in either direction.
- ``BernoulliCUSUM`` is Page's CUSUM for a Bernoulli rate (Reynolds & Stoumbos 1999), fully
  vectorised: it tests the in-control error rate p0 against p1 = p0 scaled by an odds ratio,
  with log-likelihood-ratio steps ln(p1/p0) for an error and ln((1-p1)/(1-p0)) for a correct
  prediction, signalling when the statistic reaches h. It detects increases only: a model that
  gets better is not an alarm. Unless p0 is given it is estimated after ``warmup`` labeled
  events and re-estimated each time the events seen double, up to ``horizon``, as an upper
  confidence bound (an underestimate would shorten the run length between false alarms). A
  ``prior`` (the errors and rows of the model card's holdout, ``holdout_prior``) counts as
  events seen before the first: monitoring starts at once and the live errors refine it. h is
  chosen from the target ``arl0`` (expected events between false alarms): the steps are
  scaled to small integers, which makes the statistic a finite Markov chain whose exact ARL is
  one sparse linear solve (Brook & Evans 1972), and h is the smallest integer limit reaching
  ``arl0``. The detector runs on the same integer steps, so the design is exact for it (given
  p0). After a signal it re-learns p0 from the next events (the new concept), as ADWIN drops
  its old window. Work is per batch, about 10 µs per call plus 0.025 µs per event: feed it
  batches of hundreds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import sparse, stats
from scipy.sparse.linalg import splu

__all__ = [
    "ADWINDetector",
    "BernoulliCUSUM",
    "ConceptDriftDetector",
    "CusumDesign",
    "design_bernoulli_cusum",
    "holdout_prior",
    "monitor_detector",
]

# Below this in-control error rate the integer chain would need millions of states; such a
# model is monitored as if its error rate were this floor (slightly less sensitive, never noisier).
_MIN_P0 = 1e-3
_MAX_STATES = 200_000
_MAX_DOWN_STEP = 20
_GRID_STEP = math.log(1.005)
# Chunks bound the work redone after a signal (the statistic restarts there).
_CHUNK = 8192


class ConceptDriftDetector(Protocol):
    """What the monitor needs of a detector on an error stream."""

    def update_many(self, errors: np.ndarray) -> list[int]: ...

    def reset(self) -> None: ...


class ADWINDetector:
    """river's ``ADWIN`` behind the batch interface (a Python loop: about 0.5 µs per event).

    ``increases_only`` drops the signals at which ADWIN's estimate of the error rate fell.
    """

    def __init__(
        self, delta: float = 0.002, *, clock: int = 32, increases_only: bool = False
    ) -> None:
        self.delta = delta
        self.clock = clock
        self.increases_only = increases_only
        self.reset()

    def reset(self) -> None:
        from river.drift import ADWIN

        self._adwin = ADWIN(delta=self.delta, clock=self.clock)

    @property
    def estimation(self) -> float:
        return float(self._adwin.estimation)

    def update_many(self, errors: np.ndarray) -> list[int]:
        adwin = self._adwin
        update = adwin.update
        signals = []
        if not self.increases_only:
            for i, e in enumerate(np.asarray(errors, dtype=np.float64).tolist()):
                update(e)
                if adwin.drift_detected:
                    signals.append(i)
            return signals
        for i, e in enumerate(np.asarray(errors, dtype=np.float64).tolist()):
            before = adwin.estimation
            update(e)
            if adwin.drift_detected and adwin.estimation > before:
                signals.append(i)
        return signals


@dataclass(frozen=True, slots=True)
class CusumDesign:
    """An integer Bernoulli CUSUM: +``up`` per error, -``down`` per correct, signal at ``limit``."""

    p0: float
    p1: float
    up: int
    down: int
    limit: int

    def arl(self, p: float) -> float:
        """Expected events until a signal, from a zero statistic, when the error rate is ``p``."""
        return _arl(self.up, self.down, self.limit, p)

    @property
    def step(self) -> float:
        """The log-likelihood ratio (nats) of one unit of the integer statistic."""
        return -math.log((1.0 - self.p1) / (1.0 - self.p0)) / self.down

    @property
    def h(self) -> float:
        """The limit in log-likelihood units (nats)."""
        return self.limit * self.step


def design_bernoulli_cusum(p0: float, p1: float, arl0: float) -> CusumDesign:
    """The integer CUSUM for p0 → p1 whose in-control ARL is the first to reach ``arl0``.

    >>> d = design_bernoulli_cusum(0.05, 0.1, 10_000)
    >>> d.arl(0.05) >= 10_000 > _arl(d.up, d.down, d.limit - 1, 0.05)
    True
    """
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, not p0={p0}, p1={p1}")
    up_llr = math.log(p1 / p0)
    down_llr = -math.log((1.0 - p1) / (1.0 - p0))
    ratio = up_llr / down_llr

    # The smallest down step whose rounded up step keeps the ratio within 0.5% (else the best).
    def badness(d: int) -> tuple[bool, float]:
        error = abs(max(1, round(ratio * d)) / d - ratio) / ratio
        return (error > 0.005, d if error <= 0.005 else error)

    best = min(range(1, _MAX_DOWN_STEP + 1), key=badness)
    down, up = best, max(1, round(ratio * best))
    lo, hi = _bracket_limit(up, down, p0, arl0, down_llr / down)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _arl(up, down, mid, p0) >= arl0:
            hi = mid
        else:
            lo = mid
    return CusumDesign(p0=p0, p1=p1, up=up, down=down, limit=hi)


def _bracket_limit(up: int, down: int, p0: float, arl0: float, step: float) -> tuple[int, int]:
    """Limits ``lo < hi`` with ARL(lo) < arl0 <= ARL(hi), in a few solves: the log ARL grows
    almost linearly with the limit, so a secant through two solves lands within a few states
    of the answer, and the bracket widens from there by doubling steps."""
    target = math.log(arl0)

    def log_arl(limit: int) -> float:
        if limit > _MAX_STATES:
            raise ValueError(f"arl0={arl0} needs more than {_MAX_STATES} states")
        return math.log(max(_arl(up, down, limit, p0), 1.0))

    x1 = max(2, round(target / step))
    x2 = x1 + max(2, x1 // 8)
    a1, a2 = log_arl(x1), log_arl(x2)
    slope = (a2 - a1) / (x2 - x1)
    guess = max(1, x2 + math.ceil((target - a2) / slope)) if slope > 0 else 2 * x2
    # Walk from the guess (or the nearer solved point) until arl0 is bracketed.
    x, width = guess, 1
    while log_arl(x) < target:
        x, width = x + width, width * 2
    hi, width = x, 1
    lo = max(0, hi - 1)
    while lo > 0 and log_arl(lo) >= target:
        hi, lo, width = lo, max(0, lo - width), width * 2
    return lo, hi


def _arl(up: int, down: int, limit: int, p: float) -> float:
    """Zero-state ARL of the chain S ← max(0, S + up) w.p. p, else max(0, S - down); S < limit."""
    if limit <= 0:
        return 1.0
    # (I - Q) L = 1 over the transient states 0..limit-1; two entries of Q per row. A sparse LU
    # (COLAMD ordering) solves it in milliseconds where a dense banded solve takes seconds.
    rows = np.arange(limit)
    climbs = rows + up < limit
    values = np.r_[np.ones(limit), np.full(int(climbs.sum()), -p), np.full(limit, p - 1.0)]
    i = np.r_[rows, rows[climbs], rows]
    j = np.r_[rows, rows[climbs] + up, np.maximum(rows - down, 0)]
    a = sparse.csc_matrix((values, (i, j)), shape=(limit, limit))
    return float(splu(a, permc_spec="COLAMD").solve(np.ones(limit))[0])


class BernoulliCUSUM:
    """Page's CUSUM on the 0/1 error stream, vectorised (see the module docstring).

    ``odds_ratio`` sets the change it is tuned to (p1 odds = odds_ratio · p0 odds); larger
    jumps are caught faster still. Several odds ratios make it a multi-chart CUSUM
    (Tartakovsky et al. 2006): one chart per alternative, run side by side on the same events
    with the same p0, signalling when any chart does. Each chart is designed for
    ``len(odds_ratio) · arl0`` (Bonferroni over the charts), so the whole keeps about ``arl0``
    while a small change is caught by the chart tuned to it and a jump by the chart tuned to
    jumps: close to the GLR's adaptivity, with the CUSUM's exact run-length design. Without
    ``p0``, monitoring starts after ``warmup`` events and p0 is re-estimated from every event
    since the warm-up began each time their number doubles, up to ``horizon`` events (default
    16 · warmup): an error rate estimated from 1,000 events is too rough to test a small
    increase against, and a long wait before monitoring would miss early changes.
    ``p0_quantile`` is the Jeffreys-posterior quantile of that estimate used as p0 (0.5 for
    the plain estimate; higher is safer against false alarms, slower to detect);
    ``learning_quantile`` (default: the same) is used instead for the estimates before the last
    refit, from fewer events: a cautious one there keeps the estimate's error from spending
    the false-alarm budget while p0 is still being learned. ``shares`` splits the budget
    between the charts (chart i is designed for ``arl0 / share_i``; default equal shares, the
    Bonferroni split): a chart for large jumps needs little of it, as its statistic climbs
    steeply either way.

    ``prior = (errors, events)`` counts a sample of the model's errors taken before monitoring
    (the card's holdout) as events already seen: the charts run from the first event on the
    quantile of the posterior given the prior alone and each refit adds the live events to
    it; the refits and the quantile of each follow the live events as without a prior. After a
    signal the prior is dropped (it describes the concept the model was trained on, which
    has changed) and p0 is learned from live events alone; ``reset()`` restores it.

    >>> rng = np.random.default_rng(0)
    >>> det = BernoulliCUSUM(arl0=100_000, p0=0.05)
    >>> det.update_many(rng.random(20_000) < 0.05)
    []
    >>> len(det.update_many(rng.random(1_000) < 0.3))
    1
    """

    def __init__(
        self,
        *,
        arl0: float = 10_000_000.0,
        odds_ratio: float | Sequence[float] = 2.0,
        p0: float | None = None,
        warmup: int = 1000,
        horizon: int | None = None,
        p0_quantile: float = 0.75,
        rewarm: bool = True,
        shares: Sequence[float] | None = None,
        learning_quantile: float | None = None,
        prior: tuple[float, float] | None = None,
    ) -> None:
        ratios = (odds_ratio,) if isinstance(odds_ratio, int | float) else tuple(odds_ratio)
        if not ratios or min(ratios) <= 1.0:
            raise ValueError("odds_ratio must be above 1 (an increase of the error rate)")
        if warmup < 1:
            raise ValueError("warmup must be at least 1 event")
        if prior is not None and not 0 <= prior[0] <= prior[1] > 0:
            raise ValueError(f"a prior is (errors, events) with 0 <= errors <= events, not {prior}")
        self.arl0 = arl0
        self.odds_ratios = tuple(float(r) for r in ratios)
        self.warmup = warmup
        self.horizon = 16 * warmup if horizon is None else max(horizon, warmup)
        self.p0_quantile = p0_quantile
        self.learning_quantile = p0_quantile if learning_quantile is None else learning_quantile
        weights = [1.0] * len(self.odds_ratios) if shares is None else [float(w) for w in shares]
        if len(weights) != len(self.odds_ratios) or min(weights) <= 0:
            raise ValueError("one positive share of the false-alarm budget per odds ratio")
        self.shares = tuple(w / sum(weights) for w in weights)
        self.rewarm = rewarm
        self._given_p0 = p0
        self.prior = None if prior is None else (float(prior[0]), float(prior[1]))
        self.reset()

    @property
    def design(self) -> CusumDesign | None:
        """The first chart's design (every chart shares its p0), None while warming up."""
        return self.designs[0] if self.designs else None

    @property
    def statistic(self) -> int:
        """The first chart's statistic (``statistics`` has every chart's)."""
        return self.statistics[0]

    def reset(self) -> None:
        """Forget the statistics and the in-control rate (a given ``p0`` and prior are kept)."""
        self.statistics = [0] * len(self.odds_ratios)
        self._seen = 0  # events since the warm-up began (reset by a signal)
        self._seen_errors = 0
        self._next_fit = self.warmup
        self.designs: list[CusumDesign] = []
        self._prior_in_use = self.prior is not None
        if self._given_p0 is not None:
            self.designs = self._design(self._given_p0)
            self._next_fit = 0  # never re-estimated
        elif self._prior_in_use:
            self.designs = self._design(self._estimate())

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint (the designs are recomputed from their p0 on load)."""
        return {
            "statistics": list(self.statistics),
            "seen": self._seen,
            "seen_errors": self._seen_errors,
            "next_fit": self._next_fit,
            "p0": None if self.design is None else self.design.p0,
            "prior": self._prior_in_use,
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned, for a detector with the same settings."""
        saved = state.get("statistics", [state.get("statistic", 0)])
        self.statistics = [int(x) for x in saved][: len(self.odds_ratios)]
        self.statistics += [0] * (len(self.odds_ratios) - len(self.statistics))
        self._seen, self._seen_errors = int(state["seen"]), int(state["seen_errors"])
        self._next_fit = int(state["next_fit"])
        self.designs = [] if state["p0"] is None else self._design(float(state["p0"]))
        # A checkpoint from before priors, or taken after a signal, learns from live events.
        self._prior_in_use = self.prior is not None and bool(state.get("prior", False))

    def _design(self, p0: float) -> list[CusumDesign]:
        p0 = _on_grid(min(max(p0, _MIN_P0), 1.0 - _MIN_P0))
        out = []
        for ratio, share in zip(self.odds_ratios, self.shares, strict=True):
            odds = ratio * p0 / (1.0 - p0)
            p1 = min(round(odds / (1.0 + odds), 6), 1.0 - 1e-6)
            out.append(_cached_design(round(p0, 6), p1, float(f"{self.arl0 / share:.6g}")))
        return out

    def _estimate(self) -> float:
        """p0: a quantile of the Jeffreys posterior given the live events and the prior."""
        live = self._seen
        e, n = float(self._seen_errors), float(live)
        if self._prior_in_use and self.prior is not None:
            e, n = e + self.prior[0], n + self.prior[1]
        # Before the last refit the estimate is rougher: a more cautious quantile keeps its
        # error from spending the false-alarm budget while p0 is still being learned. The
        # phase is counted in live events, prior or not: a holdout narrows the posterior, but
        # may describe the live stream less well than its size says.
        q = self.p0_quantile if 2 * live > self.horizon else self.learning_quantile
        return float(stats.beta.ppf(q, e + 0.5, n - e + 0.5))

    def _refit(self) -> None:
        n = self._seen
        old, new = self.designs, self._design(self._estimate())
        if old:
            # Keep the evidence gathered so far, converted to the new step sizes.
            self.statistics = [
                min(d.limit - 1, round(x * o.step / d.step)) if x else 0
                for x, o, d in zip(self.statistics, old, new, strict=True)
            ]
        self.designs = new
        self._next_fit = 2 * n if 2 * n <= self.horizon else 0

    def update_many(self, errors: np.ndarray) -> list[int]:
        e = np.asarray(errors).astype(bool, copy=False).ravel()
        signals: list[int] = []
        i = 0
        while i < e.size:
            # The next chunk ends at the batch end, or where p0 is (re-)estimated.
            end = min(e.size, i + _CHUNK)
            if self._next_fit:
                end = min(end, i + self._next_fit - self._seen)
            chunk = e[i:end]
            hit = None
            ends = []
            for d, x in zip(self.designs, self.statistics, strict=False):  # none: warming up
                # Lindley recursion in closed form: S_t = C_t - min(0, min_{j<=t} C_j).
                c = x + np.cumsum(np.where(chunk, d.up, -d.down))
                s = c - np.minimum(np.minimum.accumulate(c), 0)
                hits = np.flatnonzero(s >= d.limit)
                if hits.size and (hit is None or hits[0] < hit):
                    hit = int(hits[0])
                ends.append(int(s[-1]))
            if hit is not None:
                chunk = chunk[: hit + 1]
            elif self.designs:
                self.statistics = ends
            self._seen += chunk.size
            self._seen_errors += int(chunk.sum())
            i += chunk.size
            if hit is not None:
                signals.append(i - 1)
                self.statistics = [0] * len(self.odds_ratios)
                if self.rewarm:
                    self._seen = self._seen_errors = 0
                    self.designs = []
                    self._next_fit = self.warmup
                    self._prior_in_use = False
            elif self._next_fit and self._seen >= self._next_fit:
                self._refit()
        return signals


# The monitor's detector: charts for a small rise of the error odds (x1.6), a large one (x4)
# and a model that stops working (x100), on the plain (median) estimate of p0 once it rests on
# 8,000+ events, and on its 99% quantile before. ``bench.detection`` measures it at an equal
# false-alarm rate against ADWIN and HDDM_A: with the plain estimate throughout, most of its
# false alarms came in the first few thousand events (p0 from 1,000 events is ±10% at p0 = 0.1),
# so that at the same measured rate its charts had to be designed for ~8x the run length;
# the cautious early estimate removes that waste and shortens every delay (SEA: −14%).
MONITOR_ODDS_RATIOS = (1.6, 4.0, 100.0)
MONITOR_P0_QUANTILE = 0.5
MONITOR_LEARNING_QUANTILE = 0.99


def monitor_detector(arl0: float, prior: tuple[float, float] | None = None) -> BernoulliCUSUM:
    """The concept-drift detector the monitor runs on each version's error stream; ``prior``
    is ``holdout_prior(card.metrics)``."""
    return BernoulliCUSUM(arl0=arl0, odds_ratio=MONITOR_ODDS_RATIOS,
                          p0_quantile=MONITOR_P0_QUANTILE,
                          learning_quantile=MONITOR_LEARNING_QUANTILE, prior=prior)


def holdout_prior(metrics: Mapping[str, float]) -> tuple[float, float] | None:
    """``(errors, rows)`` of a classifier's holdout, from its card's ``accuracy`` and
    ``holdout_rows``; None when the card lacks either (cards from before ``holdout_rows``).

    >>> holdout_prior({"accuracy": 0.9, "holdout_rows": 5000})
    (500.0, 5000.0)
    >>> holdout_prior({"accuracy": 0.9}) is None
    True
    """
    accuracy, rows = metrics.get("accuracy"), metrics.get("holdout_rows")
    if accuracy is None or rows is None or not rows >= 1 or not 0.0 <= accuracy <= 1.0:
        return None
    return float(round((1.0 - accuracy) * rows)), float(rows)


def _on_grid(p0: float) -> float:
    """p0 rounded up to a geometric grid (steps of 0.5%), so that the designs of nearby
    estimates are shared (a design costs milliseconds; an estimate's own error is larger)."""
    # The tolerance (a quarter step, ~0.1%) makes it idempotent: a design's p0 (rounded to 6
    # decimals), reloaded from a checkpoint, stays on its grid point.
    step = math.ceil(math.log(p0) / _GRID_STEP - 0.25)
    return min(round(math.exp(step * _GRID_STEP), 6), 1.0 - _MIN_P0)


@functools.lru_cache(maxsize=4096)
def _cached_design(p0: float, p1: float, arl0: float) -> CusumDesign:
    return design_bernoulli_cusum(p0, p1, arl0)
