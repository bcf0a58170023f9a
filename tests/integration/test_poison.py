"""Poison pills at scale: 10% malformed records of every kind mixed into a 20,000-event stream
through ingest and predict. Every bad one is dead-lettered with its reason, and the counts
reconcile exactly: in = valid + rejected, one prediction per valid event. (The throughput of
the valid part next to a clean run is measured by ``make bench`` ``--only poison``.)"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.poison import POISON_VALID, poison_stream
from bench.throughput import feature_events
from services.ingest.service import build as build_ingest
from services.predict.service import build as build_predict
from tests.helpers import produce, read

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_poisoned_stream_reconciles_through_ingest_and_predict(settings, run_loop):
    good = feature_events(18_000, partial=False, seed=21)
    stream, reasons = poison_stream(good, 0.10)
    assert len(stream) == 20_000 and len(reasons) == 2_000
    valid_poison, by_pos = poison_stream(good[:1800], 0.10, kinds=POISON_VALID)
    injected = [rec for pos, rec in enumerate(valid_poison) if pos in by_pos]
    valid_reasons = Counter(by_pos.values())
    produce(settings, "features", stream)
    produce(settings, "features.valid", injected)  # what a foreign producer might write there
    run_loop(build_ingest(settings))
    run_loop(build_predict(settings))

    n_valid = len(good)
    valid = read(settings, "features.valid", n_valid + len(injected), timeout=120, decode=False)
    dlq = read(settings, "features.dlq", len(reasons) + len(injected), timeout=120)
    predictions = read(settings, "predictions", n_valid, timeout=120)

    from_ingest = [d for d in dlq if d["service"] == "ingest"]
    from_predict = [d for d in dlq if d["service"] == "predict"]
    assert len(valid) - len(injected) + len(from_ingest) == len(stream)  # in = valid + rejected
    assert Counter(d["reason"] for d in from_ingest) == Counter(reasons.values())
    assert len({(d["partition"], d["offset"]) for d in from_ingest}) == len(reasons)
    assert Counter(d["reason"] for d in from_predict) == valid_reasons
    ids = Counter(p["event_id"] for p in predictions)
    assert len(ids) == n_valid and set(ids.values()) == {1}
