"""The monitor's per-record path: duplicate ids, and the columns a batch of records becomes."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from services.models import ArtifactStore
from services.models.matrix import FeatureEncoder
from services.monitor import checkpoint
from services.monitor.drift import FalseAlarmBudget
from services.monitor.service import RecentIds, key
from services.monitor.version import VersionMonitor


def test_recent_ids_count_each_id_once_and_forget_the_oldest_first() -> None:
    ids = RecentIds(3)
    assert [ids.add(x) for x in "abcab"] == [True, True, True, False, False]
    assert ids.add("d") and ids.state().tolist() == [key("b"), key("c"), key("d")]
    assert ids.add("a")  # forgotten: counted again
    twin = RecentIds(2)
    twin.load(ids.state())
    assert twin.state().tolist() == [key("d"), key("a")] and not twin.add("a") and twin.add("c")


def test_recent_ids_stay_at_capacity_over_a_long_stream() -> None:
    ids = RecentIds(1000)
    new = [ids.add(f"p{i % 1500}") for i in range(30_000)]
    assert len(ids) == len(ids.state()) == len(ids._keys) == 1000
    # ids come back every 1,500: each has been forgotten by then, so each counts again
    assert all(new)
    assert not ids.add(f"p{29_999 % 1500}")  # the latest is remembered


def test_recent_ids_survive_a_checkpoint_and_read_an_older_one_of_strings() -> None:
    ids = RecentIds(5)
    for i in range(8):
        ids.add(f"p{i}")
    state = checkpoint.decode(checkpoint.encode({"seen": ids.state()}))["seen"]
    assert state.dtype == np.uint64 and len(state) == 5
    again = RecentIds(5)
    again.load(state)
    assert [again.add(f"p{i}") for i in (3, 7, 2, 8)] == [False, False, True, True]
    # A checkpoint written before ids were keyed holds the id strings, oldest first.
    old = RecentIds(3)
    old.load(["p1", "p2", "p3", "p4"])
    assert [old.add(x) for x in ("p2", "p4", "p1", "\ud800")] == [False, False, True, True]
    off = RecentIds(0)  # remembers nothing: every copy counts
    assert off.add("x") and off.add("x") and not off.state().size


def test_a_checkpoint_leaves_no_reference_cycle() -> None:
    # A cycle holding the encoded arrays lived until a full collection, which tune_gc makes
    # rare: the monitor's RSS grew by a checkpoint's size every checkpoint.
    state = {"windows": [np.zeros(2000), {"ids": np.arange(100, dtype=np.uint64)}], "n": 3}
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            checkpoint.encode(state)
        assert gc.collect() == 0
    finally:
        gc.enable()


def _monitor(store: ArtifactStore) -> VersionMonitor:
    return VersionMonitor(store.card("agrawal", "1"), "champion", window=100, max_age_s=None,
                          budget=FalseAlarmBudget(), concept_arl0=1e6)


def test_rows_gathered_by_itemgetter_equal_the_general_encoder(demo_store: ArtifactStore) -> None:
    vm = _monitor(demo_store)
    rng = np.random.default_rng(0)
    names = vm.encoder.names
    rows = [{n: float(rng.integers(0, 9)) for n in names} for _ in range(50)]
    rows[3]["age"] = None  # missing: NaN either way
    rows[4]["car"] = "7"  # a number in a string: 7 either way
    reference = FeatureEncoder(vm.card.features).encode(rows)
    np.testing.assert_array_equal(vm._matrix(rows), reference)
    # A feature absent from one row or a value that is no number: the general path, same result
    del rows[5]["salary"]
    rows[6]["zipcode"] = "nowhere"
    got = vm._matrix(rows)
    np.testing.assert_array_equal(got, FeatureEncoder(vm.card.features).encode(rows))
    assert np.isnan(got[5, names.index("salary")]) and np.isnan(got[6, names.index("zipcode")])


def test_a_batch_of_predictions_and_labels_becomes_the_windows_columns(
    demo_store: ArtifactStore,
) -> None:
    vm = _monitor(demo_store)
    names = vm.encoder.names
    preds = [{"features": dict.fromkeys(names, 1.0), "score": s, "label": lab, "event_time": t}
             for s, lab, t in ((0.9, "1", 30), (None, "0", 10), (0.2, "0", 20))]
    vm.add_predictions(preds)
    assert (vm.predictions, vm.first_ms, vm.last_ms) == (3, 10, 30)
    assert vm.drift.score_window.n == 3
    est = vm.estimate.estimate() if vm.estimate is not None else {}
    # a missing score counts as 0.0; the labels decide the predicted class
    assert est["expected_accuracy"] == pytest.approx((0.9 + 1.0 + 0.8) / 3)
    labeled = [{**p, "outcome_label": truth, "labeled_at": 1000 + i}
               for i, (p, truth) in enumerate(zip(preds, ("1", "1", "0"), strict=True))]
    assert vm.add_labeled(labeled) == 0
    m = vm.metrics(2000)
    assert (m["n"], m["accuracy"]) == (3.0, pytest.approx(2 / 3))
    assert (vm.first_ms, vm.last_ms) == (10, 30)
    # A version fed labeled records only: its alerts' window is their events'.
    only = _monitor(demo_store)
    only.add_labeled(labeled[1:])
    assert (only.first_ms, only.last_ms) == (10, 20)


def test_the_concept_detector_starts_from_the_cards_holdout(demo_store: ArtifactStore) -> None:
    from services.monitor.concept import holdout_prior, monitor_detector

    card = demo_store.card("agrawal", "1")
    assert _monitor(demo_store).concept.prior is None  # off unless configured
    vm = VersionMonitor(card, "champion", window=100, max_age_s=None,
                        budget=FalseAlarmBudget(), concept_arl0=1e6, holdout_prior=True)
    rows = card.metrics["holdout_rows"]
    assert vm.concept.prior == (round((1 - card.metrics["accuracy"]) * rows), rows)
    assert vm.concept.design is not None  # monitoring from the first labeled event
    # A card without the holdout's size (published before it was recorded): learned live.
    old = card.model_copy(update={"metrics": {"accuracy": card.metrics["accuracy"]}})
    vm_old = VersionMonitor(old, "champion", window=100, max_age_s=None,
                            budget=FalseAlarmBudget(), concept_arl0=1e6, holdout_prior=True)
    assert holdout_prior(old.metrics) is None and vm_old.concept.prior is None
    assert vm_old.concept.design is None
    errors = np.random.default_rng(1).random(30_000) < np.r_[np.full(20_000, 0.02),
                                                             np.full(10_000, 0.3)]
    names = vm_old.encoder.names
    labeled = [{"features": dict.fromkeys(names, 1.0), "score": 0.9, "label": "1",
                "outcome_label": "0" if e else "1", "labeled_at": i, "event_time": i}
               for i, e in enumerate(errors.tolist())]
    plain = monitor_detector(1e6)
    expected = sum(len(plain.update_many(errors[i:i + 500])) for i in range(0, 30_000, 500))
    got = sum(vm_old.add_labeled(labeled[i:i + 500]) for i in range(0, 30_000, 500))
    assert got == expected == 1
