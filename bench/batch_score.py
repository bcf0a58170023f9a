"""Batch scoring speed: ``modelstream score`` end to end beside onnxruntime alone.

    python -m bench.batch_score [--rows N] [--repeats R] [--batch-size B]

For each input format (Parquet, CSV, JSON lines) the whole path is timed — read, check and
encode every column, score, write the same format — next to a bare ``session.run`` over the
same rows in the same batches (already a float32 matrix: the floor no scorer can go under).
Both run in this process, interleaved, ``R`` times; medians and their ratio are reported, so a
noisy shared machine moves both sides alike.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from services.batch import BatchScorer, open_sink, read_file, score_all
from services.models import ArtifactStore, OnnxModel
from services.models.agrawal import AGRAWAL_FEATURES, ensure_demo_model, generate

NAMES = [f.name for f in AGRAWAL_FEATURES]


def write_inputs(root: Path, n: int) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, _ = generate(n, seed=17)
    cols = {name: (x[:, j].astype(np.int64) if spec.type != "float" else x[:, j].astype(float))
            for j, (name, spec) in enumerate(zip(NAMES, AGRAWAL_FEATURES, strict=True))}
    ids = [f"e-{i}" for i in range(n)]
    pq.write_table(pa.table({"event_id": ids, **cols}), root / "in.parquet")
    pydata = {k: v.tolist() for k, v in cols.items()}
    with open(root / "in.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", *NAMES])
        w.writerows(zip(ids, *pydata.values(), strict=True))
    with open(root / "in.jsonl", "wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps({"event_id": ids[i],
                                   "features": {k: pydata[k][i] for k in NAMES}}) + b"\n")
    return x


def onnx_alone(model: OnnxModel, x: np.ndarray, batch: int) -> float:
    session = model._session  # the same session and options modelstream uses
    name, output = model.card.input_name, model.card.score_output
    started = time.perf_counter()
    for i in range(0, len(x), batch):
        session.run([output], {name: x[i:i + batch]})
    return time.perf_counter() - started


def end_to_end(model: OnnxModel, root: Path, fmt: str, batch: int) -> tuple[float, float]:
    suffix = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}[fmt]
    sink = open_sink(str(root / f"out.{suffix}"), fmt)  # type: ignore[arg-type]
    started = time.perf_counter()
    summary = score_all(BatchScorer(model), read_file(root / f"in.{suffix}", fmt,  # type: ignore[arg-type]
                                                      model.card.feature_names, batch), sink)
    sink.close()
    assert summary.reconciles and summary.rejected == 0
    return time.perf_counter() - started, summary.model_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8192)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ArtifactStore(root / "artifacts")
        ensure_demo_model(store)
        model = OnnxModel.load(store, "agrawal")
        x = write_inputs(root, args.rows)
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        print(f"{args.rows:,} rows, batches of {args.batch_size}, {args.repeats} runs, medians")
        print(f"{'format':<8} {'score rows/s':>13} {'onnx alone':>12} {'ratio':>6} "
              f"{'model share':>11}")
        for fmt in ("parquet", "csv", "jsonl"):
            full, alone, model_part = [], [], []
            for _ in range(args.repeats):
                alone.append(onnx_alone(model, x32, args.batch_size))
                seconds, model_seconds = end_to_end(model, root, fmt, args.batch_size)
                full.append(seconds)
                model_part.append(model_seconds / seconds)
            rate = args.rows / statistics.median(full)
            floor = args.rows / statistics.median(alone)
            print(f"{fmt:<8} {rate:>13,.0f} {floor:>12,.0f} {rate / floor:>6.2f} "
                  f"{statistics.median(model_part):>11.0%}")


if __name__ == "__main__":
    main()
