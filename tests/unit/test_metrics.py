"""The batch histogram observation gives exactly what per-value observe() gives."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.runtime.metrics import observe_many


def test_observe_many_matches_observe():
    values = np.random.default_rng(1).exponential(0.02, 5000)
    values[:3] = [0.001, 0.005, 10.0]  # on a bound, and beyond the last
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.005, 0.01, 0.05, 0.1, 1.0)
    a = Histogram("lat", "x", buckets=buckets, registry=reg_a)
    b = Histogram("lat", "x", buckets=buckets, registry=reg_b)
    observe_many(a, values)
    for v in values:
        b.observe(v)

    def lines(reg: CollectorRegistry) -> list[str]:
        return [ln for ln in generate_latest(reg).decode().splitlines()
                if ln.startswith("lat_") and "created" not in ln and "sum" not in ln]

    assert lines(reg_a) == lines(reg_b)
    assert a._sum.get() == b._sum.get() or abs(a._sum.get() - b._sum.get()) < 1e-9
