"""The monitor's memory stays flat over a long stream: its windows and id memory are bounded,
and a checkpoint leaves nothing behind (the soak's +21 MB/min was a reference cycle holding
every checkpoint's arrays until the rare full collection ``tune_gc`` allows)."""

from __future__ import annotations

import gc
import tracemalloc

import orjson
import pytest
from confluent_kafka import Message

from services.models import ArtifactStore
from services.monitor.service import ModelMonitor, build
from services.runtime import topics
from services.runtime.service import redis_client
from tests.integration.test_monitor import scored

pytestmark = pytest.mark.integration


T_NOW = 1_763_900_000_000


@pytest.fixture
def monitor(settings):
    s = settings.model_copy(update={"monitor_window": 1000, "monitor_dedup_ids": 5000})
    loop = build(s)  # save() reads the loop's positions; the loop never runs here
    assert isinstance(loop.handler, ModelMonitor)
    yield loop.handler
    loop.consumer.close()


def test_monitor_memory_is_flat_over_batches_evaluations_and_checkpoints(monitor, demo_store):
    s = monitor.settings
    preds, labeled = scored(demo_store, 1000, seed=5)
    labeled_topic = s.topics.name(topics.PREDICTIONS_LABELED)

    def run(start: int, stop: int) -> None:
        for i in range(start, stop, 250):
            for topic, recs in ((s.topics.predictions, preds), (labeled_topic, labeled)):
                monitor([Message(topic=topic, value=orjson.dumps(
                    {**recs[j % 1000], "prediction_id": f"id{j}"})) for j in range(i, i + 250)])
            if i % 1000 == 0:
                monitor.evaluate(T_NOW)
                monitor.save()

    run(0, 8000)  # windows, id memory and caches full
    gc.collect()
    gc.disable()  # as rare as tune_gc makes a full collection: a cycle would stay
    tracemalloc.start()
    try:
        run(8000, 12_000)
        middle, _ = tracemalloc.get_traced_memory()
        run(12_000, 24_000)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert sum(vm.predictions for vm in monitor.versions.values()) == 24_000
    assert len(monitor.seen["predictions"]) == len(monitor.seen["labeled"]) == 5000
    # 12,000 more records of each stream and 12 checkpoints: a leak of even one checkpoint's
    # arrays each (~100 kB here) would be over a megabyte.
    assert end - middle < 300_000, f"grew {end - middle:,} bytes over 12 checkpoints"
    # The id memory is part of the checkpoint (the last one, at id 23,249): a restarted monitor
    # ignores the same copies.
    again = ModelMonitor(s, ArtifactStore(s.artifacts), redis_client(s))
    assert [again.seen["predictions"].add(f"id{i}") for i in (23_249, 18_250, 18_249)] == [
        False, False, True]
