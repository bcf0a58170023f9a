"""Batch scoring: column-wise checks with ingest's reason codes, exact line numbers for bad
rows, counts that reconcile, the same scores as the model in every format, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from services.batch import BatchScorer, ColumnEncoder, detect_format, open_sink, read_file
from services.batch.score import score_all
from services.cli.score import parse_time
from services.models import ArtifactStore, OnnxModel
from services.models.agrawal import AGRAWAL_FEATURES, generate
from services.models.card import FeatureSpec
from services.runtime.errors import ConfigError

NAMES = [f.name for f in AGRAWAL_FEATURES]


def rows(n: int, seed: int = 5) -> list[dict[str, Any]]:
    x, _ = generate(n, seed)
    return [{name: (int(v) if spec.type != "float" else v)
             for name, spec, v in zip(NAMES, AGRAWAL_FEATURES, r, strict=True)}
            for r in x.tolist()]


def test_columns_are_checked_with_ingest_reason_codes() -> None:
    specs = [FeatureSpec(name="a", type="float", min=0, max=10),
             FeatureSpec(name="n", type="int", required=False),
             FeatureSpec(name="c", type="category", categories=["x", "y"])]
    columns = {
        "a": [1.0, "2.5", None, float("inf"), 11, True, 3.0, 4.0, 5.0],
        "n": [1, 2, 3, 4, 5, 6, 1.5, None, 7],
        "c": ["x", "y", "x", "x", "x", "x", "x", "z", ["x"]],
    }
    encoded = ColumnEncoder(specs).encode(columns, 9)
    assert encoded.ok.tolist() == [True, True, False, False, False, False, False, False, False]
    assert {i: r for i, (r, _) in encoded.reasons.items()} == {
        2: "missing_feature", 3: "non_finite", 4: "out_of_range", 5: "wrong_type",
        6: "wrong_type", 7: "unknown_category", 8: "wrong_type"}
    assert encoded.matrix.tolist() == [[1.0, 1.0, 0.0], [2.5, 2.0, 1.0]]


def test_numeric_arrays_take_the_fast_path_with_the_same_answers() -> None:
    specs = [FeatureSpec(name="car", type="category", categories=[1, 2, 3]),
             FeatureSpec(name="age", type="int", min=20, max=80)]
    as_arrays = ColumnEncoder(specs).encode(
        {"car": np.array([1.0, 3.0, 7.0, np.nan]), "age": np.array([30, 90, 40, 50])}, 4)
    as_lists = ColumnEncoder(specs).encode({"car": [1, "3", 7, None], "age": [30, 90, 40, 50]}, 4)
    for e in (as_arrays, as_lists):
        assert e.ok.tolist() == [True, False, False, False]
        assert {i: r for i, (r, _) in e.reasons.items()} == {
            1: "out_of_range", 2: "unknown_category", 3: "missing_feature"}
        assert e.matrix.tolist() == [[1.0, 30.0]]


@pytest.fixture
def model(demo_store: ArtifactStore) -> OnnxModel:
    return OnnxModel.load(demo_store, "agrawal", "1")


def write_csv(path: Path, data: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", *NAMES])
        for i, r in enumerate(data):
            w.writerow([f"e-{i}", *[r[n] for n in NAMES]])


def score_file(model: OnnxModel, src: Path, out: Path, batch: int = 64) -> Any:
    sink = open_sink(str(out), detect_format(str(out), None))
    try:
        return score_all(BatchScorer(model), read_file(src, detect_format(str(src), None),
                                                       model.card.feature_names, batch), sink)
    finally:
        sink.close()


def test_csv_bad_rows_are_reported_by_line_and_the_rest_scored(
    model: OnnxModel, tmp_path: Path
) -> None:
    data = rows(300)
    src = tmp_path / "in.csv"
    write_csv(src, data)
    lines = src.read_text().splitlines()
    lines[10] = lines[10].replace(",", ",,", 1)  # line 11: one cell too many
    lines[20] = ""  # line 21: blank, not a row
    lines[30] = lines[30].rsplit(",", 1)[0] + ",lots"  # line 31: loan is text
    lines[40] = lines[40].replace(lines[40].split(",")[3], "250", 1)  # line 41: age 250
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    summary = score_file(model, src, out)
    assert summary.rows == 299 and summary.rejected == 3 and summary.reconciles
    bad = {r.row: r.reason for r in summary.examples}
    assert bad == {11: "malformed_row", 31: "wrong_type", 41: "out_of_range"}

    scored = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(scored) == summary.scored == 296
    kept = [i for i in range(300) if i + 2 not in (11, 21, 31, 41)]
    assert [s["row"] for s in scored] == [i + 2 for i in kept]
    assert [s["event_id"] for s in scored] == [f"e-{i}" for i in kept]
    labels, scores = model.predict(model_matrix(model, [data[i] for i in kept]))
    assert [s["label"] for s in scored] == labels
    assert np.allclose([s["score"] for s in scored], scores, atol=1e-6)
    assert all(abs(sum(s["scores"].values()) - 1) < 1e-5 for s in scored)


def model_matrix(model: OnnxModel, data: list[dict[str, Any]]) -> np.ndarray:
    from services.models import feature_matrix

    return feature_matrix(data, model.card.features)


def test_every_format_gives_the_same_scores(model: OnnxModel, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = rows(500, seed=9)
    write_csv(tmp_path / "in.csv", data)
    with open(tmp_path / "in.jsonl", "wb") as fh:
        for i, r in enumerate(data):  # nested like the features topic, and flat, mixed
            record = {"event_id": f"e-{i}", "features": r} if i % 2 else {"event_id": f"e-{i}",
                                                                          **r}
            fh.write(orjson.dumps(record) + b"\n")
        fh.write(b"{not json\n[1, 2]\n")
    pq.write_table(pa.table({"event_id": [f"e-{i}" for i in range(500)],
                             **{n: [r[n] for r in data] for n in NAMES}}), tmp_path / "in.pq")
    results = {}
    for src, out in (("in.csv", "o1.parquet"), ("in.jsonl", "o2.csv"), ("in.pq", "o3.jsonl")):
        summary = score_file(model, tmp_path / src, tmp_path / out, batch=128)
        assert summary.scored == 500 and summary.reconciles
        results[src] = summary
    assert results["in.jsonl"].reasons == {"not_json": 1, "not_an_object": 1}
    assert {r.row for r in results["in.jsonl"].examples} == {501, 502}
    from_parquet = pq.read_table(tmp_path / "o1.parquet").to_pydict()
    with open(tmp_path / "o2.csv") as fh:
        from_csv = list(csv.DictReader(fh))
    from_json = [orjson.loads(line) for line in (tmp_path / "o3.jsonl").read_bytes().split()]
    _, expected = model.predict(model_matrix(model, data))
    assert np.allclose(from_parquet["score"], expected, atol=1e-6)
    assert np.allclose([float(r["score_1"]) for r in from_csv], expected, atol=1e-5)
    assert np.allclose([r["score"] for r in from_json], expected, atol=1e-6)
    assert from_parquet["event_id"] == [f"e-{i}" for i in range(500)]
    assert [r["row"] for r in from_json] == list(range(1, 501))


def test_formats_and_times_are_understood() -> None:
    assert detect_format("x.ndjson", None) == "jsonl"
    assert detect_format("x.data", "csv") == "csv"
    with pytest.raises(ConfigError, match="pass --format"):
        detect_format("x.data", None)
    assert parse_time("2025-11-23T12:00:00") == 1763899200000
    assert parse_time("2025-11-23T13:00:00+01:00") == 1763899200000
    assert parse_time("1763899200000") == 1763899200000
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday")


def test_cli_scores_a_file_and_reconciles(demo_store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"event_id": f"e-{i}", "features": r}) + b"\n"
                             for i, r in enumerate(rows(50))) + b'{"features": {"age": 30}}\n')
    out, rejects = tmp_path / "out.parquet", tmp_path / "rejects.jsonl"
    env = {"MODELSTREAM_ARTIFACT_DIR": str(demo_store.root), "PATH": "/usr/bin:/bin",
           "MODELSTREAM_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "score", str(src), "-o", str(out),
         "--rejects", str(rejects), "--json"], env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stderr)
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (51, 50, 1)
    assert summary["model_version"] == "1"
    assert orjson.loads(rejects.read_bytes()) == {
        "row": 51, "reason": "missing_feature", "detail": "salary is required"}
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 50
