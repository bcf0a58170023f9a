"""Reading a service's ``/metrics``: the samples the dashboard uses, and quantiles of a
histogram from the change of its cumulative buckets between two scrapes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "histogram_quantile", "parse_samples"]

# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str, families: Iterable[str]) -> Samples:
    """The samples of the named metric families (``process_cpu_seconds``, not ``..._total``:
    family names as the parser reports them) in one exposition text."""
    wanted = set(families)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` maps upper bound (``inf`` included) to
    the cumulative count of observations in the interval; linear within a bucket."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the largest finite bound: that bound is all we know
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower
