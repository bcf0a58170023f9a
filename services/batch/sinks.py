"""Where batch scoring writes: JSON lines, CSV or Parquet, one output row per scored input row.

Columns: ``row`` (the input's line or row number; for a topic, its ordinal beside ``partition``
and ``offset``), the pass-through ``event_id``, ``entity_id``, ``event_time`` when the input has
them, ``model``, ``model_version``, ``label``, ``score`` and the per-label probabilities —
``scores`` as an object in JSON lines, ``score_<label>`` columns in CSV and Parquet. The table
columns are fixed by the first batch written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import orjson

from .sources import FileFormat, Rejection

__all__ = ["RejectsFile", "ScoredRows", "Sink", "open_sink"]


@dataclass(slots=True)
class ScoredRows:
    """The scored rows of one batch, as columns."""

    rows: list[int]
    extras: dict[str, list[Any]]
    labels: list[str]  # predicted label; the value as text for regression
    score: np.ndarray  # P(positive) (binary), top probability (multiclass), value (regression)
    proba: np.ndarray | None  # (n, k) probabilities of a classifier
    label_names: list[str]
    model: str
    version: str


class Sink(Protocol):
    def write(self, scored: ScoredRows) -> None: ...

    def close(self) -> None: ...


def open_sink(path: str, fmt: FileFormat) -> Sink:
    """A writer for ``path`` (``-``: JSON lines on stdout)."""
    if path == "-":
        return JsonLinesSink(sys.stdout.buffer, owned=False)
    if fmt == "csv":
        return CsvSink(Path(path))
    if fmt == "parquet":
        return ParquetSink(Path(path))
    return JsonLinesSink(open(path, "wb"))  # noqa: SIM115 - closed by close()


class JsonLinesSink:
    def __init__(self, fh: IO[bytes], owned: bool = True) -> None:
        self._fh = fh
        self._owned = owned

    def write(self, scored: ScoredRows) -> None:
        names = list(scored.extras)
        extra_rows = zip(*scored.extras.values(), strict=True) if names else None
        proba = scored.proba.tolist() if scored.proba is not None else None
        label_names = scored.label_names
        model, version = scored.model, scored.version
        lines = []
        for i, (row, label, score) in enumerate(
            zip(scored.rows, scored.labels, scored.score.tolist(), strict=True)
        ):
            record: dict[str, Any] = {"row": row}
            if extra_rows is not None:
                record.update(zip(names, next(extra_rows), strict=True))
            record.update(model=model, model_version=version, label=label, score=score)
            if proba is not None:
                record["scores"] = dict(zip(label_names, proba[i], strict=True))
            lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self._fh.write(b"".join(lines))

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()


def _columns(scored: ScoredRows, extras: list[str]) -> tuple[list[str], list[Any]]:
    """Header and column values of a table output; missing pass-through fields are empty."""
    n = len(scored.rows)
    names = ["row", *extras, "model", "model_version", "label", "score"]
    values: list[Any] = [scored.rows, *(scored.extras.get(e, [None] * n) for e in extras),
                         [scored.model] * n, [scored.version] * n, scored.labels, scored.score]
    if scored.proba is not None:
        for j, label in enumerate(scored.label_names):
            names.append(f"score_{label}")
            values.append(scored.proba[:, j])
    return names, values


class CsvSink:
    """CSV through Arrow's writer: numbers formatted in C, not one ``repr`` per cell."""

    def __init__(self, path: Path) -> None:
        self._table = _TableWriter(path, "csv")

    def write(self, scored: ScoredRows) -> None:
        self._table.write(scored)

    def close(self) -> None:
        self._table.close()


_ARROW_TYPES = {"event_time": "int64", "partition": "int32", "offset": "int64"}


class ParquetSink:
    def __init__(self, path: Path) -> None:
        self._table = _TableWriter(path, "parquet")

    def write(self, scored: ScoredRows) -> None:
        self._table.write(scored)

    def close(self) -> None:
        self._table.close()


class _TableWriter:
    """Scored batches as Arrow tables, appended to one CSV or Parquet file."""

    def __init__(self, path: Path, kind: str) -> None:
        self._path = path
        self._kind = kind
        self._writer: Any = None
        self._extras: list[str] = []

    def write(self, scored: ScoredRows) -> None:
        import pyarrow as pa

        if self._writer is None:
            self._extras = list(scored.extras)
        names, values = _columns(scored, self._extras)
        arrays = [_arrow(name, v) for name, v in zip(names, values, strict=True)]
        table = pa.Table.from_arrays(arrays, names=names)
        if self._writer is None:
            self._writer = self._open(table.schema)
        self._writer.write_table(table)

    def _open(self, schema: Any) -> Any:
        if self._kind == "csv":
            from pyarrow import csv as pacsv

            return pacsv.CSVWriter(self._path, schema)
        import pyarrow.parquet as pq

        return pq.ParquetWriter(self._path, schema)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            return
        # Nothing scored: still leave a valid file behind.
        import pyarrow as pa

        empty = pa.table({"row": pa.array([], pa.int64())})
        if self._kind == "csv":
            from pyarrow import csv as pacsv

            pacsv.write_csv(empty, self._path)
        else:
            import pyarrow.parquet as pq

            pq.write_table(empty, self._path)


def _arrow(name: str, values: Any) -> Any:
    import pyarrow as pa

    if isinstance(values, np.ndarray):
        return pa.array(values)
    if name == "row":
        return pa.array(values, pa.int64())
    kind = _ARROW_TYPES.get(name)
    if kind is not None:
        return pa.array([v if isinstance(v, int) and not isinstance(v, bool) else None
                         for v in values], kind)
    return pa.array([None if v is None else str(v) for v in values], pa.string())


class RejectsFile:
    """Rejected rows as JSON lines: ``row`` (``partition``, ``offset``), ``reason``, ``detail``."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115

    def write(self, rejected: list[Rejection]) -> None:
        self._fh.write(b"".join(orjson.dumps(r.record(), option=orjson.OPT_APPEND_NEWLINE)
                                for r in rejected))

    def close(self) -> None:
        self._fh.close()
