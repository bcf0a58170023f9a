"""Detectors on a 0/1 error stream, and the pure logic of ``bench.detection``: delays, calibration.

Every detector is run the same way, ``signals(errors) -> sorted event indices``, the index being
that of the error whose arrival raised the signal. The production ones (the monitor's
``monitor_detector``, a multi-chart ``BernoulliCUSUM``, the
``ADWINDetector`` wrapper of river's ADWIN, and the monitor's windowed-accuracy alert rule) are
fed batches of ``batch`` events, as the monitor's consumer loop feeds them; river's ``HDDMA``
one event at a time (it has no batch interface). ``hddm_a_signals`` is a vectorised HDDM_A that
reproduces river's ``HDDMA`` signal for signal (``bench.detection`` checks this on every scenario
stream it runs); it makes calibrating HDDM_A on tens of millions of null events affordable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DetectorSpec",
    "always_signals",
    "calibrate_period",
    "detection_delay",
    "first_detection",
    "hddm_a_signals",
    "periodic_signals",
    "quantile",
    "run_detector",
]


def detection_delay(index: int, change_at: int, batch: int, label_delay: int = 0) -> int:
    """Events from the change to the end of the batch that raised a signal at ``index``.

    The service acts on a signal once its batch is processed, so the delay is counted at batch
    granularity; a label-based detector sees the error of event ``index`` only ``label_delay``
    events later, which is added. Batches are aligned on multiples of ``batch``.

    >>> detection_delay(20_010, 20_000, 250, 500)
    750
    """
    return (index // batch + 1) * batch + label_delay - change_at


def first_detection(
    signals: Sequence[int] | np.ndarray,
    change_at: int,
    *,
    batch: int,
    label_delay: int = 0,
    horizon: int | None = None,
) -> tuple[int | None, int | None, int]:
    """``(delay at batch granularity, delay at event resolution, signals before the change)``.

    The detection is the first signal raised by an event at or after ``change_at`` (earlier ones
    are false alarms, counted); its delay is None (a miss) if there is none, or if it comes later
    than ``horizon`` events after the change. The event-resolution delay (the signalling
    event's own index, plus the label delay) breaks ties between detectors that signal in the
    same batch.
    """
    s = np.asarray(signals, dtype=np.int64)
    pre = int(np.count_nonzero(s < change_at))
    after = s[s >= change_at]
    if after.size == 0:
        return None, None, pre
    index = int(after[0])
    delay = detection_delay(index, change_at, batch, label_delay)
    if horizon is not None and delay > horizon:
        return None, None, pre
    return delay, index + 1 + label_delay - change_at, pre


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (linear interpolation) with misses as +inf: a miss is a delay past all."""
    if not len(values):
        return math.nan
    xs = np.sort(np.asarray(values, dtype=np.float64))
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    if math.isinf(xs[hi]):
        return math.inf if pos > lo or math.isinf(xs[lo]) else float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def calibrate_period(lengths: Sequence[int], phases: Sequence[float], allowed: int) -> int:
    """The shortest period of a periodic detector raising at most ``allowed`` alarms in total.

    The detector on a stream of ``L`` events with phase ``u`` (in [0, 1)) fires at events
    ``u·P + k·P`` (k = 0, 1, ...) below ``L``; its alarm count only falls as the period P grows,
    so the shortest period within budget is found by bisection.

    >>> calibrate_period([1000, 1000], [0.0, 0.0], 4)
    500
    >>> calibrate_period([1000], [0.5], 0)
    2000
    """
    if len(lengths) != len(phases):
        raise ValueError("one phase per stream")

    def alarms(period: int) -> int:
        return sum(
            max(0, math.floor((length - 1 - math.floor(u * period)) / period) + 1)
            for length, u in zip(lengths, phases, strict=True)
        )

    lo, hi = 1, 2
    while alarms(hi) > allowed:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if alarms(mid) <= allowed:
            hi = mid
        else:
            lo = mid
    return hi if alarms(lo) > allowed else lo


def periodic_signals(n: int, period: int, phase: float) -> np.ndarray:
    """The events at which a periodic detector with ``period`` and ``phase`` fires.

    >>> periodic_signals(10, 4, 0.5).tolist()
    [2, 6]
    """
    return np.arange(math.floor(phase * period), n, period, dtype=np.int64)


def always_signals(n: int, batch: int) -> np.ndarray:
    """A detector that fires on every batch (the last event of each).

    >>> always_signals(10, 4).tolist()
    [3, 7, 9]
    """
    return np.unique(np.r_[np.arange(batch - 1, n, batch), n - 1]).astype(np.int64)


def hddm_a_signals(
    errors: np.ndarray, drift_confidence: float = 0.001, *, max_signals: int | None = None,
    chunk: int = 1 << 16,
) -> list[int]:
    """river's ``HDDMA(drift_confidence)`` (one-sided) on ``errors``, vectorised.

    river keeps the mean ``z`` of everything since its last reset and a cut point ``x``: a
    snapshot of ``z`` taken whenever ``mean + ε(n)`` (Hoeffding, ``ε(n) = sqrt(ln(1/c) / 2n)``)
    is at or below the snapshot's, i.e. the latest running minimum of ``g(t) = z_t + ε(t)``. It
    signals when ``z_t - z_s >= sqrt(m/2 · ln(2/c))``, ``m = (t - s) / (s·t)``, and resets on the
    next event. Here ``g`` and its running minimum are computed a chunk at a time.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    log1 = math.log(1.0 / drift_confidence)
    log2 = math.log(2.0 / drift_confidence)
    signals: list[int] = []
    n_before, sum_before = 0, 0.0
    g_min, s_n, s_mean = math.inf, 0, 0.0
    i = 0
    while i < e.size:
        part = e[i : i + chunk]
        t = n_before + np.arange(1, part.size + 1, dtype=np.float64)
        z = (sum_before + np.cumsum(part)) / t
        g = z + np.sqrt(log1 / (2.0 * t))
        # The cut moves at t when g(t) <= min(g before t): an inclusive running minimum.
        prior = np.minimum(np.minimum.accumulate(np.r_[g_min, g[:-1]]), g_min)
        moved = g <= prior
        idx = np.where(moved, np.arange(part.size), -1)
        last = np.maximum.accumulate(idx)
        cut_n = np.where(last >= 0, t[np.maximum(last, 0)], s_n)
        cut_mean = np.where(last >= 0, z[np.maximum(last, 0)], s_mean)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = (t - cut_n) / (cut_n * t)
            bound = np.sqrt(m / 2.0 * log2)
        hit = np.flatnonzero((cut_n != t) & (z - cut_mean >= bound))
        if hit.size:
            k = int(hit[0])
            signals.append(i + k)
            if max_signals is not None and len(signals) >= max_signals:
                return signals
            i += k + 1
            n_before, sum_before = 0, 0.0
            g_min, s_n, s_mean = math.inf, 0, 0.0
            continue
        n_before = int(t[-1])
        sum_before = float(sum_before + part.sum())
        g_min = float(min(g_min, g.min()))
        s_n, s_mean = int(cut_n[-1]), float(cut_mean[-1])
        i += part.size
    return signals


@dataclass(frozen=True)
class DetectorSpec:
    """One detector configuration: ``kind`` and its parameter (None where it has none)."""

    kind: str  # cusum, adwin, hddm (river), hddm_vec, accuracy, always, periodic
    param: float | None = None
    phase: float = 0.0  # periodic only
    accuracy: float = 1.0  # accuracy rule only: the card's accuracy
    prior: tuple[float, float] | None = None  # cusum only: the card's holdout (errors, rows)


def run_detector(
    spec: DetectorSpec,
    errors: np.ndarray,
    batch: int,
    *,
    max_signals: int | None = None,
    settings: dict[str, float] | None = None,
) -> np.ndarray:
    """The sorted indices at which ``spec`` signals on ``errors`` (fed in batches of ``batch``).

    ``max_signals`` stops early (calibration only needs to know a budget was exceeded).
    ``settings`` are the monitor's defaults (``monitor_window``, the accuracy drop, ...).
    """
    e = np.asarray(errors).astype(bool, copy=False)
    n = e.size
    if spec.kind == "always":
        return always_signals(n, batch)
    if spec.kind == "periodic":
        assert spec.param is not None
        return periodic_signals(n, int(spec.param), spec.phase)
    if spec.kind == "hddm_vec":
        assert spec.param is not None
        return np.asarray(hddm_a_signals(e, spec.param, max_signals=max_signals), dtype=np.int64)
    if spec.kind == "hddm":
        return _river_hddm(e, spec.param or 0.001, max_signals)
    if spec.kind == "accuracy":
        return _accuracy_rule(e, batch, spec.accuracy, settings or {})
    if spec.kind == "cusum":
        from services.monitor.concept import monitor_detector

        # Exactly what VersionMonitor runs, given the card's holdout_prior.
        det: object = monitor_detector(spec.param or 1e7, prior=spec.prior)
    elif spec.kind == "adwin":
        from services.monitor.concept import ADWINDetector

        det = ADWINDetector(delta=spec.param or 0.002)
    else:
        raise ValueError(f"unknown detector {spec.kind!r}")
    out: list[int] = []
    update = det.update_many  # type: ignore[attr-defined]
    for start in range(0, n, batch):
        out.extend(start + i for i in update(e[start : start + batch]))
        if max_signals is not None and len(out) >= max_signals:
            break
    return np.asarray(out, dtype=np.int64)


def _river_hddm(e: np.ndarray, confidence: float, max_signals: int | None) -> np.ndarray:
    from river.drift.binary import HDDMA

    det = HDDMA(drift_confidence=confidence)
    update = det.update
    out = []
    for i, v in enumerate(e.tolist()):
        update(v)
        if det.drift_detected:
            out.append(i)
            if max_signals is not None and len(out) >= max_signals:
                break
    return np.asarray(out, dtype=np.int64)


def _accuracy_rule(
    e: np.ndarray, batch: int, accuracy: float, settings: dict[str, float]
) -> np.ndarray:
    """The monitor's accuracy alert (``ModelMonitor._quality_alerts``), evaluated per batch.

    Accuracy over the last ``monitor_window`` labeled events against the card's accuracy less
    ``monitor_accuracy_warning_drop``; it fires after 2 evaluations below (debounce) and needs
    ``monitor_min_labeled`` events; the rule and its episodes are the service's ``AlertBook``.
    """
    from services.monitor.alerts import AlertBook, AlertKey, AlertRule

    window = int(settings.get("monitor_window", 2000))
    warn = float(settings.get("monitor_accuracy_warning_drop", 0.05))
    crit = float(settings.get("monitor_accuracy_critical_drop", 0.15))
    min_labeled = int(settings.get("monitor_min_labeled", 200))
    rule = AlertRule(kind="performance", direction="below", warning=accuracy - warn,
                     critical=accuracy - crit, margin=0.01, fire_after=2, resolve_after=2)
    key = AlertKey("bench", "1", "champion", "accuracy")
    book = AlertBook()
    cum = np.r_[0, np.cumsum(e, dtype=np.int64)]
    out = []
    seen: set[str] = set()
    for end in range(batch, e.size + batch, batch):
        end = min(end, e.size)
        lo = max(0, end - window)
        if end - lo < min_labeled:
            continue
        acc = 1.0 - (cum[end] - cum[lo]) / (end - lo)
        for ev in book.evaluate(key, acc, rule, 0, (0, end)):
            # A warning that escalates to critical fires again, with the same alert_id: one
            # episode is one alarm.
            if ev.state == "firing" and ev.alert_id not in seen:
                seen.add(ev.alert_id)
                out.append(end - 1)
    return np.asarray(out, dtype=np.int64)
