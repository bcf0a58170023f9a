"""``modelstream score``: batch predictions for a file or a time range of a topic."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..batch import BatchScorer, ScoreSummary, detect_format, open_sink, read_file, score_all
from ..batch.sinks import RejectsFile
from ..batch.sources import FORMATS, RowBatch
from ..batch.topic import SCORABLE_TOPICS, plan_range, read_topic
from ..models import ArtifactStore, OnnxModel
from ..runtime.errors import ConfigError
from ..runtime.settings import Settings

__all__ = ["add_score_parser", "parse_time", "run_score"]


def add_score_parser(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score a file (CSV, JSON lines, Parquet) or a time range of a topic in batches",
        description="Batch predictions with any stored model version. Every input row is scored "
        "or rejected with its line number and reason: rows = scored + rejected.",
    )
    p.add_argument("input", nargs="?", type=Path, help="CSV, JSON-lines or Parquet file")
    p.add_argument("--topic", choices=SCORABLE_TOPICS, help="score a topic's records instead")
    p.add_argument("--from", dest="from_time", metavar="TIME",
                   help="topic range start: ISO time (UTC unless it has an offset) or epoch ms")
    p.add_argument("--to", dest="to_time", metavar="TIME", help="topic range end (exclusive)")
    p.add_argument("--model", help="model name (default: $MODELSTREAM_DEFAULT_MODEL)")
    p.add_argument("--version", help="stored version (default: the newest); 'champion' asks "
                   "the registry on model.events")
    p.add_argument("-o", "--output", default="-",
                   help="output file (.jsonl, .csv, .parquet); default: JSON lines on stdout")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the name)")
    p.add_argument("--output-format", choices=FORMATS, help="default: from the output name")
    p.add_argument("--rejects", type=Path, help="write rejected rows here as JSON lines")
    p.add_argument("--batch-size", type=int, default=8192, help="rows per model call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def parse_time(text: str | None) -> int | None:
    """Epoch milliseconds from ISO 8601 (naive means UTC) or from a number of milliseconds."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a time: {text!r} (use ISO 8601 or epoch milliseconds)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def run_score(settings: Settings, args: argparse.Namespace) -> int:
    if (args.input is None) == (args.topic is None):
        raise ConfigError("score a file (INPUT) or a topic (--topic), one of the two")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    model = _load_model(settings, args.model or settings.default_model, args.version)
    names = model.card.feature_names
    err = Console(stderr=True)
    if args.input is not None:
        if args.from_time or args.to_time:
            raise ConfigError("--from and --to apply to --topic only")
        fmt = detect_format(str(args.input), args.format)
        total = args.input.stat().st_size if args.input.is_file() else 0
        batches: Iterator[RowBatch] = read_file(args.input, fmt, names, args.batch_size)
        unit, source = "bytes", str(args.input)
    else:
        plan = plan_range(settings, args.topic, parse_time(args.from_time),
                          parse_time(args.to_time))
        total = plan.total
        batches = read_topic(settings, plan, model.name, names, args.batch_size)
        unit, source = "records", f"{plan.topic} ({total:,} records in range)"
    out_fmt = "jsonl" if args.output == "-" else detect_format(args.output, args.output_format)
    sink = open_sink(args.output, out_fmt)
    rejects = RejectsFile(args.rejects) if args.rejects else None
    show = not args.no_progress and err.is_terminal
    progress = _progress(err, unit) if show else None
    task = progress.add_task(f"{model.name} v{model.version}", total=total) if progress else None

    def advance(done: int, summary: ScoreSummary) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=done,
                            description=f"{model.name} v{model.version}: {summary.scored:,} scored"
                            f", {summary.rejected:,} rejected")

    context: AbstractContextManager[Any] = progress if progress is not None else nullcontext()
    try:
        with context:
            summary = score_all(BatchScorer(model), batches, sink, rejects, advance)
    finally:
        sink.close()
        if rejects is not None:
            rejects.close()
    _report(err, summary, source, model, args)
    return 0


def _load_model(settings: Settings, name: str, version: str | None) -> OnnxModel:
    store = ArtifactStore.from_settings(settings)
    if version == "champion":
        from ..registry import load_version, read_state

        record = read_state(settings).model(name)
        if record is None or record.champion is None:
            raise ConfigError(f"the registry has no champion for {name}")
        return load_version(store, record.versions[record.champion])
    return OnnxModel.load(store, name, version)  # sha256 verified against the card


def _progress(console: Console, unit: str) -> Progress:
    speed = TransferSpeedColumn() if unit == "bytes" else MofNCompleteColumn()
    return Progress(TextColumn("{task.description}"), BarColumn(), speed,
                    TimeRemainingColumn(), console=console, transient=True)


def _is_parquet(args: argparse.Namespace) -> bool:
    return args.input is not None and args.input.suffix.lower() in (".parquet", ".pq")


def _report(
    err: Console, summary: ScoreSummary, source: str, model: OnnxModel, args: argparse.Namespace
) -> None:
    if args.json:
        result = {"source": source, "model": model.name, "model_version": model.version,
                  "output": args.output, **summary.as_dict(),
                  "examples": [r.record() for r in summary.examples]}
        sys.stderr.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    rate = f"{summary.rows / summary.seconds:,.0f} rows/s" if summary.seconds else ""
    err.print(f"{model.name} v{model.version}: {summary.rows:,} rows = {summary.scored:,} scored"
              f" + {summary.rejected:,} rejected, in {summary.seconds:.2f} s ({rate})"
              + (f"; {summary.skipped:,} records of other models or shadows skipped"
                 if summary.skipped else ""), highlight=False, soft_wrap=True)
    for reason, count in summary.reasons.most_common():
        err.print(f"  {reason:<18} {count:>10,}", highlight=False)
    for r in summary.examples:
        if r.where:
            where = f"partition {r.where['partition']} offset {r.where['offset']}"
        else:
            where = f"{'row' if args.format == 'parquet' or _is_parquet(args) else 'line'} {r.row}"
        err.print(f"  {where}: {r.reason}: {r.detail}", highlight=False, markup=False,
                  soft_wrap=True)
    if summary.rejected and not args.rejects:
        err.print("  (--rejects FILE lists every rejected row)", highlight=False)
