"""The ring behind every window, checkpoints of the monitor's state, and the docstring examples."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from services.models.profile import numeric_profile
from services.monitor.concept import BernoulliCUSUM
from services.monitor.drift import FeatureDriftWindow
from services.monitor.estimate import ConfidenceEstimate
from services.monitor.quality import QualityWindow
from services.monitor.ring import RingBuffer

MODULES = ["alerts", "concept", "drift", "estimate", "quality", "ring"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"services.monitor.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_ring_returns_what_each_push_overwrote() -> None:
    ring = RingBuffer(5, {"x": (np.int64, -1), "p": (np.float64, np.nan, 2)})
    pushed: list[int] = []
    for size in [2, 2, 3, 9, 1, 5, 4]:
        values = np.arange(len(pushed), len(pushed) + size)
        before = ring.ordered("x").tolist() if len(ring) else []
        old = ring.push(x=values, p=np.zeros((size, 2)))["x"]
        pushed += values.tolist()
        # "after = before + pushed - evicted", as multisets of real (non-fill) rows
        evicted = [v for v in old.tolist() if v != -1]
        assert sorted(before + values.tolist()) == sorted(ring.ordered("x").tolist() + evicted)
        assert ring.ordered("x").tolist() == pushed[-5:]
    ring.clear()
    assert len(ring) == 0 and ring.push(x=np.array([7]), p=np.zeros((1, 2)))["x"].tolist() == [-1]


def test_windows_survive_a_checkpoint() -> None:
    rng = np.random.default_rng(0)
    drift = FeatureDriftWindow(numeric_profile(rng.normal(size=2000)), capacity=300)
    quality = QualityWindow("binary", ["0", "1"], capacity=300, max_age_s=60)
    estimate = ConfidenceEstimate(capacity=300)
    cusum = BernoulliCUSUM(arl0=1e5, warmup=100)
    for i in range(5):
        drift.add(rng.normal(size=170))
        p = rng.random(170)
        quality.add(
            (rng.random(170) < p).astype(int), (p > 0.5).astype(int), p, 1000 * i + np.arange(170)
        )
        estimate.add(p)
        cusum.update_many(rng.random(170) < 0.2)

    twins = (
        FeatureDriftWindow(drift.profile, capacity=300),
        QualityWindow("binary", ["0", "1"], capacity=300, max_age_s=60),
        ConfidenceEstimate(capacity=300),
        BernoulliCUSUM(arl0=1e5, warmup=100),
    )
    for original, twin in zip((drift, quality, estimate, cusum), twins, strict=True):
        twin.load(original.state())  # type: ignore[attr-defined]
    assert twins[0].stats() == drift.stats()
    assert twins[1].metrics() == quality.metrics()
    assert twins[2].estimate() == estimate.estimate()
    tail = rng.random(3000) < 0.35
    assert twins[3].update_many(tail) == cusum.update_many(tail)
