"""Where batch scoring reads rows from: CSV, JSON lines, Parquet, or a time range of a topic.

Every source yields ``RowBatch`` es of up to ``batch_size`` rows as columns (one list or array
per field), so the encoder can check a whole feature at once. Rows that cannot even be read
(a line that is not JSON, a CSV line with the wrong number of cells) come back as rejections
with their line number, so every input row is either scored or reported.

A row's features are either its columns (CSV, Parquet, flat JSON objects) or, in JSON, its
``features`` object — the shape of the ``features``, ``features.valid`` and ``predictions``
topics, so their records can be scored as they are. ``event_id``, ``entity_id`` and
``event_time`` are carried through to the output when present.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ..runtime.errors import ConfigError

__all__ = [
    "FORMATS",
    "PASSTHROUGH",
    "Rejection",
    "RowBatch",
    "detect_format",
    "read_file",
]

FileFormat = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
PASSTHROUGH: tuple[str, ...] = ("event_id", "entity_id", "event_time")
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(slots=True)
class Rejection:
    """A row that was not scored: where it was, and why (a stable reason code)."""

    row: int
    reason: str
    detail: str
    where: dict[str, int] = field(default_factory=dict)  # partition/offset for topic rows

    def record(self) -> dict[str, Any]:
        return {"row": self.row, **self.where, "reason": self.reason, "detail": self.detail}


@dataclass(slots=True)
class RowBatch:
    """Up to ``batch_size`` input rows as columns, plus the rows that could not be read."""

    rows: list[int]  # line number (CSV, JSON lines), row number (Parquet), ordinal (topic)
    columns: dict[str, Any]  # feature name -> list or numpy array, len(rows) long
    extras: dict[str, list[Any]]  # pass-through fields, len(rows) long
    rejected: list[Rejection] = field(default_factory=list)
    progress: int = 0  # units of work done: bytes of a file, records of a topic
    skipped: int = 0  # topic records of another model, or not served: not input rows

    def __len__(self) -> int:
        return len(self.rows)


def detect_format(path: str, given: str | None) -> FileFormat:
    if given:
        if given not in FORMATS:
            raise ConfigError(f"unknown format {given!r}; choose one of {', '.join(FORMATS)}")
        return given  # type: ignore[return-value]
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {path!r} from its name; pass --format "
            f"({', '.join(FORMATS)})"
        )
    return found


def read_file(
    path: Path, fmt: FileFormat, features: Sequence[str], batch_size: int
) -> Iterator[RowBatch]:
    """Batches of ``path``; ``features`` are the model's feature names, in any order."""
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    if fmt == "jsonl":
        return _json_lines(path, features, batch_size)
    if fmt == "csv":
        return _csv(path, features, batch_size)
    return _parquet(path, features, batch_size)


# JSON lines ---------------------------------------------------------------------------------


def _json_lines(path: Path, features: Sequence[str], batch_size: int) -> Iterator[RowBatch]:
    with open(path, "rb") as fh:
        rows: list[int] = []
        objects: list[dict[str, Any]] = []
        rejected: list[Rejection] = []
        done = 0
        for number, line in enumerate(fh, start=1):
            done += len(line)
            if not line.strip():
                continue  # blank lines are not rows
            obj = _json_row(number, line, rejected)
            if obj is not None:
                rows.append(number)
                objects.append(obj)
            if len(rows) >= batch_size or len(rejected) >= batch_size:
                yield _from_objects(rows, objects, rejected, features, done)
                rows, objects, rejected, done = [], [], [], 0
        if rows or rejected or done:
            yield _from_objects(rows, objects, rejected, features, done)


def _json_row(number: int, line: bytes, rejected: list[Rejection]) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        rejected.append(Rejection(number, "not_json", str(exc)[:200]))
        return None
    if type(obj) is not dict:
        rejected.append(Rejection(number, "not_an_object", f"JSON {type(obj).__name__}"))
        return None
    inner = obj.get("features")
    if inner is not None and type(inner) is not dict:
        rejected.append(Rejection(number, "bad_features", "features must be an object"))
        return None
    return obj


def _from_objects(
    rows: list[int],
    objects: list[dict[str, Any]],
    rejected: list[Rejection],
    features: Sequence[str],
    done: int,
) -> RowBatch:
    # Nested rows ({"features": {...}}) and flat rows may be mixed in one file.
    vectors = [o["features"] if type(o.get("features")) is dict else o for o in objects]
    columns = {name: [v.get(name) for v in vectors] for name in features}
    extras = {name: [o.get(name) for o in objects] for name in PASSTHROUGH}
    return RowBatch(rows, columns, _present(extras), rejected, done)


def _present(extras: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Only the pass-through fields that some row has."""
    return {k: v for k, v in extras.items() if any(x is not None for x in v)}


# CSV ----------------------------------------------------------------------------------------


def _csv(path: Path, features: Sequence[str], batch_size: int) -> Iterator[RowBatch]:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ConfigError(f"{path}: empty CSV file (no header line)")
    malformed: dict[int, Rejection] = {}

    def on_invalid(row: Any) -> str:
        number = row.number if row.number is not None else -1 - len(malformed)
        malformed[number] = Rejection(
            number, "malformed_row",
            f"{row.actual_columns} cells where the header has {row.expected_columns}",
        )
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
        # Blank lines stay rows (of nulls, dropped below) so that line numbers stay exact.
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        # Every column as text: a type inferred from the first block would make a later block
        # with one odd cell fail as a whole; the encoder parses each column as a whole instead.
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )
    wanted = set(features)
    reported: set[int] = set()
    size, done, block = path.stat().st_size, 0, 1 << 20
    line = 2  # the first line after the header
    for record_batch in reader:
        # Malformed lines are skipped by the parser: number the rows around them.
        numbers = []
        for _ in range(record_batch.num_rows):
            while line in malformed:
                line += 1
            numbers.append(line)
            line += 1
        blank = functools.reduce(pc.and_, [pc.is_null(c) for c in record_batch.columns])
        if pc.any(blank).as_py():
            keep = pc.invert(blank)
            numbers = [n for n, b in zip(numbers, blank.to_pylist(), strict=True) if not b]
            record_batch = record_batch.filter(keep)
        rejected = [r for n, r in malformed.items() if n not in reported and n < line]
        reported.update(r.row for r in rejected)
        progress = min(block, size - done)  # a block is about block_size bytes of the file
        done += progress
        for start in range(0, max(record_batch.num_rows, 1), batch_size):
            part = record_batch.slice(start, batch_size)
            columns = {name: _text_column(part.column(name))
                       for name in part.column_names if name in wanted}
            extras = {name: part.column(name).to_pylist()
                      for name in part.column_names if name in PASSTHROUGH}
            yield RowBatch(numbers[start:start + batch_size], columns, extras, rejected, progress)
            rejected, progress = [], 0
    rest = [r for n, r in sorted(malformed.items()) if n not in reported]
    yield RowBatch([], {}, {}, rest, size - done)


def _text_column(column: Any) -> Any:
    """A text column as float64 when every cell parses as a number, else its Python values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column.to_pylist()


# Parquet ------------------------------------------------------------------------------------


def _parquet(path: Path, features: Sequence[str], batch_size: int) -> Iterator[RowBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path}: not a Parquet file ({exc})") from exc
    present = set(pf.schema_arrow.names)
    wanted = [n for n in (*features, *PASSTHROUGH) if n in present]
    total = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    row = 0
    for record_batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
        n = record_batch.num_rows
        rows = list(range(row + 1, row + 1 + n))
        row += n
        columns = {}
        for name in record_batch.column_names:
            if name in features:
                columns[name] = _arrow_column(record_batch.column(name))
        extras = {name: record_batch.column(name).to_pylist()
                  for name in record_batch.column_names if name in PASSTHROUGH}
        yield RowBatch(rows, columns, extras, [], size * n // total)


def _arrow_column(column: Any) -> Any:
    import pyarrow as pa

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy(zero_copy_only=False)  # nulls become NaN
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column.to_pylist()

