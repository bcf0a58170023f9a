"""Latency under load: p50/p99/p999 from ``features`` produced to prediction readable, at offered
loads from 1,000 events/s up to saturation, beside the two-hop raw passthrough at the same loads.

Each point is a fresh chain (fresh topics: the in-memory broker slows as its topics grow), warmed
up, then offered a steady load for ``seconds``. A chain is saturated at a load when events are
still missing 10 s after the load stops or its p50 passes 1 s (a queue is building,
``chains.saturated``); its curve stops at the first saturated load. Also note where the
*driver* cannot offer more: the offered rate actually reached is what is plotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .chains import Events, LoadResult, ProcessChain, modelstream_path, passthrough_hops
from .stack import BenchStack

__all__ = ["FULL_LOADS", "QUICK_LOADS", "CurvePoint", "curve_table", "measure_curve", "plot"]

FULL_LOADS = (1_000, 2_000, 4_000, 8_000, 12_000, 16_000, 24_000, 32_000)
QUICK_LOADS = (1_000, 4_000, 8_000, 16_000)
CHAINS = ("passthrough", "modelstream")


@dataclass
class CurvePoint:
    chain: str
    load: float  # the load asked for
    result: LoadResult | None  # None: the chain failed at this load
    error: str = ""

    @property
    def saturated(self) -> bool:
        return self.result is None or self.result.saturated


def measure_curve(
    stack: BenchStack, events: Events, warmup: Events, loads: Sequence[float], seconds: float,
    warm_seconds: float, on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    points = []
    for chain in CHAINS:
        for load in loads:
            point = _point(stack, chain, events, warmup, load, seconds, warm_seconds)
            points.append(point)
            if on_point is not None:
                on_point(point)
            if point.saturated:
                break
    return points


def _point(
    stack: BenchStack, chain: str, events: Events, warmup: Events, load: float, seconds: float,
    warm_seconds: float,
) -> CurvePoint:
    launch, sink, extra = (
        (modelstream_path, lambda s: s.topics.predictions, ())
        if chain == "modelstream"
        else (passthrough_hops, lambda s: s.topics.name("hop2"), ("hop", "hop2"))
    )
    try:
        with ProcessChain(stack, f"curve-{chain[:3]}", launch, lambda s: s.topics.features,
                          sink, extra_topics=extra) as c:
            c.warm(warmup, load, warm_seconds)
            return CurvePoint(chain, load, c.load(events, load, seconds))
    except Exception as exc:  # one failed point ends that chain's curve, not the bench
        return CurvePoint(chain, load, None, repr(exc))


def curve_table(points: Sequence[CurvePoint]) -> str:
    """A Markdown table: one row per load, both chains side by side."""
    loads = sorted({p.load for p in points})
    by = {(p.chain, p.load): p for p in points}
    lines = ["| offered ev/s | modelstream p50 / p99 / p999 ms | passthrough p50 / p99 / p999 ms "
             "| p99 vs passthrough |", "|---|---|---|---|"]
    for load in loads:
        cells = []
        for chain in ("modelstream", "passthrough"):
            p = by.get((chain, load))
            cells.append(_cell(p))
        ms, raw = by.get(("modelstream", load)), by.get(("passthrough", load))
        ratio = "n/a"
        if ms and raw and ms.result and raw.result and raw.result.p99 > 0:
            ratio = f"{ms.result.p99 / raw.result.p99:.2f}×"
        lines.append(f"| {load:,.0f} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def _cell(p: CurvePoint | None) -> str:
    if p is None:
        return "not run (saturated below)"
    if p.result is None:
        return f"failed: {p.error[:80]}"
    r = p.result
    text = f"{r.p50:,.0f} / {r.p99:,.0f} / {r.p999:,.0f}"
    if r.saturated:
        text += f" saturated ({r.received:,}/{r.sent:,} out)"
    if r.offered < 0.95 * p.load:
        text += f" (offered only {r.offered:,.0f})"
    return text


def plot(points: Sequence[CurvePoint], path: Path) -> Path:
    """The curve as a PNG: latency (log scale) against the offered load, both chains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    styles = {"modelstream": "-", "passthrough": "--"}
    colours = {"p50": "tab:blue", "p99": "tab:orange", "p999": "tab:red"}
    for chain in CHAINS:
        measured = [p for p in points if p.chain == chain and p.result is not None]
        if not measured:
            continue
        xs = [p.result.offered for p in measured if p.result]
        for q, colour in colours.items():
            ys = [getattr(p.result, q) for p in measured]
            ax.plot(xs, ys, styles[chain], color=colour, marker="o", label=f"{chain} {q}")
        for p in measured:
            if p.saturated and p.result is not None and not math.isnan(p.result.p99):
                ax.annotate("saturated", (p.result.offered, p.result.p99), fontsize=8)
    ax.set_xlabel("offered load, events/s")
    ax.set_ylabel("features produced → prediction readable, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("modelstream (ingest → predict) vs 2 raw passthrough hops, same broker")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
