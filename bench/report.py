"""The pure half of the benchmark: medians, percentiles, ratios to a baseline, bars, tables.

A :class:`Figure` is one measured quantity (a rate such as events/s, a latency in ms, or a size
in bytes) with the value of each run; its value is the median of the runs. A figure may name
the baseline figure it is compared with, and carry :class:`Bar` s — the targets an issue set —
each judged PASS or FAIL.

>>> median([3.0, 1.0, 2.0])
2.0
>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Bar",
    "Figure",
    "format_ratio",
    "format_value",
    "is_rate",
    "markdown_report",
    "median",
    "percentile",
    "ratio",
    "results_json",
    "table",
]

BarKind = Literal["min_ratio", "max_ratio", "min_value", "max_value"]
Unit = Literal["ev/s", "outcomes/s", "rows/s", "keys/s", "ms", "s", "B", "µs/ev", "%", "events"]


def is_rate(unit: str) -> bool:
    """Rates compare as a share of their baseline; latencies and sizes as a multiple of it."""
    return unit.endswith("/s")


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (a measurement that never completed)."""
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(value: float, baseline: float) -> float:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline


@dataclass(frozen=True)
class Bar:
    """A target: at least ``threshold`` × baseline, at least ``threshold``, or at most it."""

    kind: BarKind
    threshold: float

    def passed(self, value: float, vs_baseline: float) -> bool:
        if self.kind == "min_ratio":
            return not math.isnan(vs_baseline) and vs_baseline >= self.threshold
        if self.kind == "max_ratio":
            return not math.isnan(vs_baseline) and vs_baseline <= self.threshold
        if math.isnan(value):
            return False
        if self.kind == "min_value":
            return value >= self.threshold
        return value <= self.threshold

    def describe(self, unit: str) -> str:
        if self.kind == "min_ratio":
            if self.threshold >= 2:
                return f"≥ {self.threshold:g}× baseline"
            return f"≥ {self.threshold:.0%} of baseline"
        if self.kind == "max_ratio":
            return f"≤ {self.threshold:.2f}× baseline"
        sign = "≥" if self.kind == "min_value" else "≤"
        return f"{sign} {format_value(self.threshold, unit)}"


@dataclass
class Figure:
    key: str
    label: str
    unit: Unit
    runs: list[float] = field(default_factory=list)
    baseline: str | None = None  # key of the figure this one is compared with
    bars: tuple[Bar, ...] = ()
    notes: list[str] = field(default_factory=list)  # per-run details (counts, losses)

    @property
    def value(self) -> float:
        return median(self.runs)


def format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit == "µs/ev":
        return f"{value:,.1f} µs/ev" if value < 100 else f"{value:,.0f} µs/ev"
    return f"{value:,.0f} {unit}"


def format_ratio(r: float, unit: str) -> str:
    """Throughput as a share of the baseline; latency as a multiple of it."""
    if math.isnan(r):
        return "n/a"
    if is_rate(unit) and r >= 2:
        return f"{r:.1f}×"
    if not is_rate(unit) and 0 < r < 0.01:
        return f"1/{1 / r:,.0f}"
    return f"{r:.0%}" if is_rate(unit) else f"{r:.2f}×"


def _runs_text(fig: Figure) -> str:
    if fig.unit in ("ms", "s", "µs/ev", "%"):
        return " ".join(f"{v:.1f}" for v in fig.runs)
    if fig.unit in ("B", "events"):
        return " ".join(f"{v:,.0f}" for v in fig.runs)
    return " ".join(f"{v / 1000:.1f}k" for v in fig.runs)


def _rows(figures: Sequence[Figure]) -> list[list[str]]:
    by_key = {f.key: f for f in figures}
    baselines = {f.baseline for f in figures}
    rows = []
    for fig in figures:
        base = by_key.get(fig.baseline) if fig.baseline else None
        r = ratio(fig.value, base.value) if base else math.nan
        verdicts = [
            f"{'PASS' if bar.passed(fig.value, r) else 'FAIL'} {bar.describe(fig.unit)}"
            for bar in fig.bars
        ]
        if fig.baseline is not None:
            versus = format_ratio(r, fig.unit)
        else:  # a figure nothing is compared with is reported, not a baseline
            versus = "baseline" if fig.key in baselines else ""
        rows.append([
            fig.label,
            format_value(fig.value, fig.unit),
            _runs_text(fig),
            versus,
            "; ".join(verdicts),
        ])
    return rows


HEADER = ["measurement", "median", "runs", "vs baseline", "bars"]


def table(figures: Sequence[Figure], *, markdown: bool = False) -> str:
    """The figures as an aligned text table, or a Markdown one."""
    rows = _rows(figures)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    right = {1, 3}  # numbers read best right-aligned

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, rows)])


def results_json(figures: Iterable[Figure], machine: Mapping[str, Any]) -> dict[str, Any]:
    figs = list(figures)
    by_key = {f.key: f for f in figs}
    out: dict[str, Any] = {"machine": dict(machine), "figures": {}}
    for fig in figs:
        base = by_key.get(fig.baseline) if fig.baseline else None
        r = ratio(fig.value, base.value) if base else math.nan
        out["figures"][fig.key] = {
            "label": fig.label,
            "unit": fig.unit,
            "median": _num(fig.value),
            "runs": [_num(v) for v in fig.runs],
            "baseline": fig.baseline,
            "ratio": _num(r),
            "bars": [
                {"bar": bar.describe(fig.unit), "pass": bar.passed(fig.value, r)}
                for bar in fig.bars
            ],
            "notes": fig.notes,
        }
    return out


def _num(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 3)


def markdown_report(
    figures: Sequence[Figure], machine: Mapping[str, Any], method: Sequence[str],
    sections: Sequence[str] = (),
) -> str:
    """The report; ``sections`` (Markdown, each with its own heading) follow the results."""
    lines = ["# modelstream benchmark", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines += ["", "## Results", "", table(figures, markdown=True), ""]
    lines += ["Each figure is the median of the runs listed. Ratios compare medians measured "
              "in the same invocation, on the same embedded broker.", ""]
    lines += [section.rstrip() + "\n" for section in sections]
    lines += ["## Method", ""] + [f"- {m}" for m in method] + [""]
    lines += ["## Per-run details", ""]
    for fig in figures:
        if fig.notes:
            lines.append(f"- {fig.label}: " + "; ".join(fig.notes))
    return "\n".join(lines) + "\n"
