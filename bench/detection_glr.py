"""A candidate, not a production detector: a window-limited Bernoulli GLR on the error stream.

``BernoulliCUSUM`` is tuned to one alternative (the error odds doubled); a change of another
size, or a slow one, is caught later than an optimally tuned test would catch it. The
generalised likelihood-ratio test (Willsky & Jones 1976; window-limited, Lai 1995) maximises
the log-likelihood ratio over the change point *and* the post-change rate:

    S_t = max_{t - W <= k < t, p̂ > p0}  x·ln(p̂ / p0) + (n - x)·ln((1 - p̂) / (1 - p0)),

with n = t - k events since the candidate change point, x errors among them, p̂ = x / n; it
signals when S_t >= h. Here it is evaluated at the end of every batch (as the monitor would),
over a geometric grid of window lengths, with p0 estimated exactly as ``BernoulliCUSUM`` does
(after ``warmup`` events, refitted as the events double up to ``horizon``, Jeffreys quantile
0.75) and a fresh start after a signal. ``h`` is calibrated on null streams by the bench, like
the baselines. It lives in the bench to show what the suggested improvement would buy.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = ["GLR_THRESHOLDS", "GLR_WINDOWS", "glr_signals"]

GLR_WINDOWS = np.unique(np.round(np.geomspace(25, 20_000, 48))).astype(np.int64)
GLR_THRESHOLDS = tuple(float(h) for h in np.arange(8.0, 40.01, 0.5))
_MIN_P0 = 1e-3


def glr_signals(
    errors: np.ndarray,
    h: float,
    batch: int,
    *,
    windows: np.ndarray = GLR_WINDOWS,
    warmup: int = 1000,
    horizon: int = 16_000,
    p0_quantile: float = 0.75,
    max_signals: int | None = None,
) -> list[int]:
    """Signal indices (the last event of the signalling batch) of the GLR on ``errors``.

    >>> e = np.r_[np.zeros(5_000, bool), np.ones(100, bool)]
    >>> glr_signals(e, 10.0, 50)
    [5049]
    """
    e = np.asarray(errors).astype(bool, copy=False).ravel()
    n = e.size
    cum = np.r_[0, np.cumsum(e, dtype=np.int64)]
    ends = np.unique(np.minimum(np.arange(batch, n + batch, batch), n))
    m = np.asarray(windows, dtype=np.int64)[None, :]
    signals: list[int] = []
    start = 0
    while True:
        sel = ends[ends - start >= warmup]
        if sel.size == 0:
            return signals
        elapsed = sel - start
        fitted = np.minimum(elapsed, horizon)
        fit = warmup * 2 ** np.floor(np.log2(fitted / warmup)).astype(np.int64)
        fit_errors = cum[start + fit] - cum[start]
        p0 = stats.beta.ppf(p0_quantile, fit_errors + 0.5, fit - fit_errors + 0.5)
        p0 = np.clip(p0, _MIN_P0, 1.0 - _MIN_P0)[:, None]
        lo = np.maximum(sel[:, None] - m, start)
        k = (sel[:, None] - lo).astype(np.float64)
        x = (cum[sel][:, None] - cum[lo]).astype(np.float64)
        p = x / k
        llr = (special.xlogy(x, p) - x * np.log(p0)
               + special.xlogy(k - x, 1.0 - p) - (k - x) * np.log1p(-p0))
        s = np.where(p > p0, llr, 0.0).max(axis=1)
        hit = np.flatnonzero(s >= h)
        if hit.size == 0:
            return signals
        end = int(sel[hit[0]])
        signals.append(end - 1)
        if max_signals is not None and len(signals) >= max_signals:
            return signals
        start = end
