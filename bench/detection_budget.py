"""Error-stream detectors at an equal false-alarm budget: null streams and calibration.

A fair delay comparison needs every detector at the same false-alarm rate, measured the same
way. Here the budget is a rate, ``rate`` alarms per null event (default 1 per 1,000,000), and
each detector's one parameter (ADWIN's δ, HDDM_A's drift confidence, the service detector's
designed ``arl0``) is set by bisection to the most sensitive value whose alarm count on a common
set of null streams is at most ``floor(rate · events)``.

The null streams are many short independent streams, not one long one: each is as long as a
scenario stream (its change point plus horizon) and every detector starts fresh on it, so the
count includes what happens while a detector learns its in-control rate (the service's
detector estimates p0 from its first 1,000 events; ADWIN's window is short at first), which is
the regime in which a scenario's change arrives. A detector keeps running after an alarm (each
restarts as it does in service), so the count is alarms per event, not only first alarms.

The errors of a fixed model on a stationary stream of independent events are independent
Bernoulli(p0) draws, so a null error stream is simulated exactly by Bernoulli(p0) with the p0 of
each concept-drift family: the pre-change error rate each seed's model has on its scenario
stream (Agrawal, SEA, Hyperplane; a Hyperplane model is fitted per seed). The streams are
spread evenly over those rates. The service's detector also reads the model card's holdout
(errors on ``rows`` held-out training rows): a holdout of the same model on the same concept
is ``rows`` more such draws, so each null stream comes with its own simulated holdout,
Binomial(rows, p0) errors (``holdout_errors``), which carries the holdout's sampling error
(an underestimate of p0 included) into the count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from services.monitor.concept import holdout_prior

from .detection_detectors import DetectorSpec, run_detector

__all__ = ["BUDGET_RATE", "Tuning", "TUNINGS", "bisect_parameter", "holdout_errors",
           "null_stream"]

BUDGET_RATE = 1e-6  # false alarms per null event


@dataclass(frozen=True)
class Tuning:
    """How a detector's parameter trades sensitivity for false alarms, for the bisection.

    ``sensitive`` and ``safe`` bound the search (on a log scale); the alarm count falls from the
    one to the other.
    """

    kind: str
    sensitive: float
    safe: float
    steps: int = 9


TUNINGS = {
    "adwin": Tuning("adwin", 0.5, 1e-12),
    "hddm": Tuning("hddm_vec", 0.5, 1e-14),
    "cusum": Tuning("cusum", 1e3, 1e9, steps=8),
}


def null_stream(p0: float, length: int, seed: int) -> np.ndarray:
    """One null error stream: ``length`` independent Bernoulli(p0) errors.

    >>> null_stream(0.1, 5, 0).dtype
    dtype('bool')
    """
    return np.random.default_rng([seed, 7919]).random(length) < p0


def holdout_errors(p0: float, rows: int, seed: int) -> int:
    """The errors of a simulated holdout of ``rows`` rows for the null stream of ``seed``.

    >>> holdout_errors(0.0, 5000, 1), holdout_errors(1.0, 5000, 1)
    (0, 5000)
    """
    return int(np.random.default_rng([seed, 7927]).binomial(rows, p0))


def bisect_parameter(
    tuning: Tuning, allowed: int, count: Callable[[float, int], int]
) -> tuple[float, int, list[tuple[float, int]]]:
    """The most sensitive parameter (to ``tuning.steps`` halvings of the log range) whose alarm
    count is at most ``allowed``; ``count(value, cap)`` may stop counting past ``cap``.

    Returns ``(value, its alarm count, every (value, count) tried)``.

    >>> bisect_parameter(Tuning("x", 1.0, 1e-8, steps=20), 3,
    ...                  lambda v, cap: min(cap, int(-1 / math.log(v) * 40)))[1] <= 3
    True
    """
    lo, hi = math.log(tuning.sensitive), math.log(tuning.safe)
    tried: list[tuple[float, int]] = []

    def alarms(x: float) -> int:
        value = math.exp(x)
        n = count(value, allowed + 1)
        tried.append((value, n))
        return n

    safe_alarms = alarms(hi)
    if safe_alarms > allowed:
        return math.exp(hi), safe_alarms, tried
    best = (math.exp(hi), safe_alarms)
    for _ in range(tuning.steps):
        mid = (lo + hi) / 2
        n = alarms(mid)
        if n <= allowed:
            hi, best = mid, (math.exp(mid), n)
        else:
            lo = mid
    return best[0], best[1], tried


def count_alarms(
    spec: DetectorSpec, p0s: Sequence[float], length: int, seeds: Sequence[int], batch: int,
    cap: int, holdout_rows: Sequence[int] | None = None,
) -> int:
    """Alarms of ``spec`` on the null streams ``(p0s[i], seeds[i])``, stopping past ``cap``;
    with ``holdout_rows`` (one per stream), the service's detector gets each stream's
    simulated holdout as its prior, read by ``holdout_prior`` from the accuracy and rows a
    card would carry."""
    total = 0
    rows_ = [0] * len(seeds) if holdout_rows is None else holdout_rows
    for p0, seed, rows in zip(p0s, seeds, rows_, strict=True):
        left = cap - total
        s = spec
        if spec.kind == "cusum" and rows > 0:
            errors = holdout_errors(p0, rows, seed)
            s = replace(spec, prior=holdout_prior({"accuracy": 1.0 - errors / rows,
                                                   "holdout_rows": float(rows)}))
        total += len(run_detector(s, null_stream(p0, length, seed), batch, max_signals=left))
        if total >= cap:
            break
    return total
