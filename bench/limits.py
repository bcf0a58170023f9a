"""The limits under the services: onnxruntime alone, and Redis round trips alone.

- onnxruntime: the demo model's ONNX file in a plain ``InferenceSession`` configured as predict
  configures its own (one intra-op thread, sequential), ``run`` on ready float32 matrices of
  the same feature vectors, for each batch size; rows/s. Nothing else happens per call: this is
  the ceiling predict's scoring could reach.
- Redis (the embedded Valkey, over loopback with redis-py and hiredis as the services use it):
  keys read per second one ``GET`` per round trip, by ``MGET`` of a batch, and by a pipeline of
  ``GET`` s, over keys holding a feature-store-sized JSON value.

Each is timed for at least ``seconds`` of repeated calls, in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import orjson

from services.models import ArtifactStore
from services.models.agrawal import DEMO_MODEL
from services.runtime.service import redis_client
from services.runtime.settings import Settings

__all__ = ["BATCH_SIZES", "REDIS_BATCH", "onnx_rows_per_second", "redis_keys_per_second"]

BATCH_SIZES = (1, 10, 100, 1000)
REDIS_BATCH = 100  # keys per MGET or pipeline: ingest merges a batch with one MGET


@dataclass
class Rate:
    items: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


def timed(call: Callable[[], int], seconds: float) -> Rate:
    """Call repeatedly (each call returns the items it did) for at least ``seconds``.

    >>> timed(lambda: 10, 0.01).items >= 10
    True
    """
    items = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        items += call()
        now = time.perf_counter()
        if now >= deadline:
            return Rate(items, now - started)


def onnx_rows_per_second(
    store: ArtifactStore, rows: np.ndarray, batch_sizes: Sequence[int] = BATCH_SIZES,
    seconds: float = 0.5,
) -> dict[int, float]:
    """rows/s of ``session.run`` per batch size, on slices of ``rows`` (n, features) float32."""
    version = store.latest(DEMO_MODEL)
    if version is None:
        raise RuntimeError(f"no {DEMO_MODEL} model in {store.root}")
    card = store.card(DEMO_MODEL, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(store.load_bytes(DEMO_MODEL, version), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    outputs, name = [card.score_output], card.input_name
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = {}
    for size in batch_sizes:
        batches = [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)] or [rows[:size]]
        it = iter(range(1 << 62))

        def run(batches: list[np.ndarray] = batches, it: object = it) -> int:
            x = batches[next(it) % len(batches)]  # type: ignore[call-overload]
            session.run(outputs, {name: x})
            return len(x)

        run()  # first call allocates
        out[size] = timed(run, seconds).per_second
    return out


def redis_keys_per_second(
    s: Settings, keys: int = 10_000, batch: int = REDIS_BATCH, seconds: float = 0.5
) -> dict[str, float]:
    """Keys read per second: ``get`` (one round trip each), ``mget`` and ``pipeline`` (batched)."""
    client = redis_client(s)
    names = [f"{s.topic_prefix}limit:{i}" for i in range(keys)]
    value = orjson.dumps({"v": {f"f{j}": 12345.67 for j in range(9)},
                          "t": {f"f{j}": 1763900000000 for j in range(9)}, "m": 1763900000000})
    try:
        for i in range(0, keys, 1000):
            client.mset(dict.fromkeys(names[i:i + 1000], value))
        counter = iter(range(1 << 62))

        def one() -> int:
            client.get(names[next(counter) % keys])
            return 1

        def chunk() -> list[str]:
            start = next(counter) * batch % keys
            return names[start:start + batch] or names[:batch]

        def mget() -> int:
            return len(client.mget(chunk()))

        def pipeline() -> int:
            pipe = client.pipeline(transaction=False)
            for key in chunk():
                pipe.get(key)
            return len(pipe.execute())

        return {name: timed(fn, seconds).per_second
                for name, fn in (("get", one), ("mget", mget), ("pipeline", pipeline))}
    finally:
        for i in range(0, keys, 1000):
            client.unlink(*names[i:i + 1000])
        client.close()
