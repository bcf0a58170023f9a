"""The measurements of ``make bench`` beyond the services' own loops, and their report sections.

- ``limits``: onnxruntime alone per batch size, Redis round trips alone (``bench.limits``);
- ``path``: the whole path features → predictions through ingest and predict processes;
- ``alternatives``: per-event REST serving (FastAPI + uvicorn + onnxruntime behind a
  confluent-kafka consumer), a faust-streaming agent, each on the same broker and model; the
  whole path's p99 beside REST's at the same offered load (half what REST sustains);
- ``drift``: Evidently's batch drift report every N events against the online drift detector;
- ``scaleout``: 1, 2, 4 predict replicas in one group;
- ``curve``: latency under load up to saturation (a table and a PNG);
- ``memory``: RSS of each service at steady state and after the run.

CPU per event of each in-process service measurement comes from ``bench.throughput``'s timing
(process CPU over the timed window); of process chains, from ``/proc`` (``bench.chains``).
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from . import curve, drift_batch, limits, memory, scaleout
from .chains import BurstResult, Events, ProcessChain, faust_agent, modelstream_path, rest_serving
from .latency import load_events
from .report import Bar, Figure, format_value
from .stack import BenchStack
from .throughput import Records, as_valid

__all__ = ["GROUPS", "Extra", "figures", "method", "run_once", "run_round"]

GROUPS = ("limits", "path", "alternatives", "drift", "scaleout", "curve", "memory")
CURVE_PNG = "latency_curve.png"  # written next to the report
DRIFT_EVERY = 5_000  # events per Evidently report, and the unit the costs are quoted in
# (seconds, steady after): steady once every bounded memory is full — the monitor's duplicate-id
# memory (monitor_dedup_ids, 200,000 per stream) fills after 200 s at MEMORY_RATE — and the full
# run goes on 10 minutes past it.
MEMORY = {"quick": (60.0, 20.0), "full": (840.0, 240.0)}
MEMORY_RATE = 1_000.0
REST_EVENTS = {"quick": 2_000, "full": 5_000}
FAUST_EVENTS = {"quick": 4_000, "full": 10_000}
CPU_KEYS = ("raw", "predict_json", "predict_avro", "ingest_full", "ingest_partial", "join_pf",
            "join_of", "join_hw_pf", "join_hw_of", "monitor")


class Plan(Protocol):
    runs: int
    events: int
    e2e_seconds: float
    warm_seconds: float
    quick: bool

    def wants(self, group: str) -> bool: ...


class Data(Protocol):
    full: Records
    valid: Records
    warmup: Records
    truth: list[str]


class Progress(Protocol):
    def line(self, text: str) -> None: ...


def figures() -> list[Figure]:
    rate = (Bar("min_ratio", 10.0),)
    figs = [
        Figure("onnx_b1", "onnxruntime alone, batch 1", "rows/s"),
        Figure("onnx_b10", "onnxruntime alone, batch 10", "rows/s"),
        Figure("onnx_b100", "onnxruntime alone, batch 100", "rows/s"),
        Figure("onnx_b1000", "onnxruntime alone, batch 1000", "rows/s"),
        Figure("redis_get", "Redis GET, one round trip per key", "keys/s"),
        Figure("redis_mget", f"Redis MGET of {limits.REDIS_BATCH}", "keys/s",
               baseline="redis_get"),
        Figure("redis_pipeline", f"Redis pipeline of {limits.REDIS_BATCH} GETs", "keys/s",
               baseline="redis_get"),
        Figure("rest", "per-event REST serving (FastAPI+uvicorn) behind a consumer", "ev/s"),
        Figure("path", "whole path features → predictions (ingest+predict)", "ev/s",
               baseline="rest", bars=rate),
        Figure("rest_p99", "per-event REST serving p99, same load", "ms"),
        Figure("path_p99", "whole path p99, same load", "ms", baseline="rest_p99",
               bars=(Bar("max_ratio", 1.0),)),
        Figure("faust", "faust-streaming agent, event by event", "ev/s",
               baseline="predict_json"),
        Figure("cpu_rest", "CPU per event, REST (consumer + server)", "µs/ev",
               baseline="cpu_path"),
        Figure("cpu_path", "CPU per event, whole path (ingest + predict)", "µs/ev"),
        Figure("cpu_faust", "CPU per event, faust agent", "µs/ev", baseline="cpu_predict_json"),
    ]
    labels = {"raw": "raw passthrough", "predict_json": "predict, JSON out",
              "predict_avro": "predict, Avro out", "ingest_full": "ingest, full events",
              "ingest_partial": "ingest, 20% partial", "join_pf": "join, predictions first",
              "join_of": "join, outcomes first", "join_hw_pf": "hand-wired join, predictions first",
              "join_hw_of": "hand-wired join, outcomes first", "monitor": "monitor"}
    figs += [Figure(f"cpu_{k}", f"CPU per record, {labels[k]}", "µs/ev",
                    baseline=None if k == "raw" else "cpu_raw") for k in CPU_KEYS]
    figs += [
        Figure("drift_evidently_ms", f"Evidently drift report, per {DRIFT_EVERY:,} events",
               "ms"),
        Figure("drift_online_ms", f"online drift detector, per {DRIFT_EVERY:,} events", "ms",
               baseline="drift_evidently_ms"),
        Figure("drift_evidently_delay", "Evidently detection delay", "events"),
        Figure("drift_online_delay", "online detector detection delay", "events",
               baseline="drift_evidently_delay"),
    ]
    figs += [Figure(f"scale_{k}", f"predict, {k} replica(s), 4 partitions", "ev/s",
                    baseline=None if k == 1 else "scale_1") for k in scaleout.REPLICAS]
    figs += [Figure(f"rss_growth_{s}", f"RSS growth, {s}", "%", bars=(Bar("max_value", 10.0),))
             for s in memory.SERVICES]
    return figs


@dataclass
class Extra:
    """What the report gets besides the figures: sections and method lines."""

    sections: list[str] = field(default_factory=list)
    scale_notes: list[str] = field(default_factory=list)


def jobs_per_round(plan: Plan) -> int:
    return (plan.wants("limits") + plan.wants("path") + 3 * plan.wants("alternatives")
            + len(scaleout.REPLICAS) * plan.wants("scaleout") + plan.wants("drift"))


def _record(figs: dict[str, Figure], values: dict[str, float], note: str, round_no: int,
            progress: Progress, label: str, runs: int) -> None:
    for key, value in values.items():
        figs[key].runs.append(value)
        figs[key].notes.append(f"run {round_no}: {note}")
    first = next(iter(values), None)
    shown = "failed" if first is None or math.isnan(values[first]) else format_value(
        values[first], figs[first].unit)
    progress.line(f"{label:<44} run {round_no}/{runs}  {shown:>18}   {note}")


def _attempt(fn: Callable[[], tuple[dict[str, float], str]], keys: tuple[str, ...]
             ) -> tuple[dict[str, float], str]:
    try:
        return fn()
    except Exception as exc:  # one failed measurement must not lose the others
        traceback.print_exc(file=sys.stderr)
        return dict.fromkeys(keys, math.nan), f"failed: {exc!r}"


def run_round(stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure],
              round_no: int, progress: Progress, extra: Extra) -> None:
    mode = "quick" if plan.quick else "full"
    full, valid = load_events(data.full), load_events(data.valid)
    warm_raw, warm_valid = load_events(data.warmup), load_events(as_valid(data.warmup))

    def step(label: str, keys: tuple[str, ...],
             fn: Callable[[], tuple[dict[str, float], str]]) -> dict[str, float]:
        values, note = _attempt(fn, keys)
        _record(figs, values, note, round_no, progress, label, plan.runs)
        return values

    if plan.wants("limits"):
        step("onnxruntime alone, Redis round trips", ("onnx_b1",), lambda: _limits(stack, data))
    if plan.wants("path"):
        step("whole path features → predictions", ("path", "cpu_path"), lambda: _burst(
            stack, "path", modelstream_path, full, warm_raw, plan.events, "path", "cpu_path",
            lambda s: s.topics.features))
    rest_rate = math.nan
    if plan.wants("alternatives"):
        got = step("per-event REST serving", ("rest", "cpu_rest"), lambda: _burst(
            stack, "rest", rest_serving, full, warm_raw, REST_EVENTS[mode], "rest", "cpu_rest",
            lambda s: s.topics.features))
        rest_rate = got.get("rest", math.nan)
        load = max(50.0, math.floor(rest_rate / 2 / 50) * 50) if rest_rate == rest_rate else 200.0
        step(f"p99 at {load:,.0f} ev/s, REST then whole path", ("rest_p99", "path_p99"),
             lambda: _same_load_p99(stack, full, warm_raw, load, plan.e2e_seconds))
        step("faust-streaming agent", ("faust", "cpu_faust"), lambda: _burst(
            stack, "faust", faust_agent, valid, warm_valid, FAUST_EVENTS[mode], "faust",
            "cpu_faust", lambda s: s.topics.features_valid))
    if plan.wants("scaleout") and (round_no == 1 or not plan.quick):
        results: list[tuple[int, BurstResult]] = []
        for k in scaleout.REPLICAS:
            def one(k: int = k) -> tuple[dict[str, float], str]:
                r = scaleout.measure_replicas(stack, valid, warm_valid, k, plan.events)
                results.append((k, r))
                return {f"scale_{k}": r.rate}, f"{r.note()}; {r.cores_busy:.2f} cores busy"
            step(f"predict, {k} replica(s)", (f"scale_{k}",), one)
        extra.scale_notes += [f"run {round_no}: {line}" for line in scaleout.cores_note(results)]
    if plan.wants("drift") and round_no == 1:
        step("drift: Evidently every 5,000 vs online", ("drift_evidently_ms",),
             lambda: _drift(stack))


def _limits(stack: BenchStack, data: Data) -> tuple[dict[str, float], str]:
    rows = np.array([[e["features"][n] for n in drift_batch.NAMES]
                     for e in (orjson.loads(v) for _, v in data.full[:5000])], dtype=np.float32)
    onnx = limits.onnx_rows_per_second(stack.store, rows)
    s = stack.settings("limits")
    try:
        redis = limits.redis_keys_per_second(s)
    finally:
        stack.drop_topics(s)
    values = {f"onnx_b{b}": v for b, v in onnx.items()}
    values |= {f"redis_{k}": v for k, v in redis.items()}
    note = ", ".join(f"batch {b}: {v:,.0f} rows/s" for b, v in onnx.items()) + "; " + ", ".join(
        f"{k} {v:,.0f} keys/s" for k, v in redis.items())
    return values, note


def _burst(stack: BenchStack, name: str, launch: Any, events: Events, warmup: Events, n: int,
           key: str, cpu_key: str, source: Callable[[Any], str]) -> tuple[dict[str, float], str]:
    with ProcessChain(stack, name, launch, source, lambda s: s.topics.predictions) as c:
        c.warm(warmup, 200.0, 1.0)
        r = c.burst(events, n)
    return {key: r.rate, cpu_key: r.cpu_per_event_us}, r.note()


def _same_load_p99(stack: BenchStack, events: Events, warmup: Events, rate: float,
                   seconds: float) -> tuple[dict[str, float], str]:
    values, notes = {}, []
    for key, name, launch in (("rest_p99", "rest", rest_serving),
                              ("path_p99", "path", modelstream_path)):
        with ProcessChain(stack, f"{name}-lat", launch, lambda s: s.topics.features,
                          lambda s: s.topics.predictions) as c:
            c.warm(warmup, rate, 1.0)
            r = c.load(events, rate, seconds)
        values[key] = r.p99 if not r.saturated else math.nan
        notes.append(f"{name}: {r.note()}" + (" SATURATED" if r.saturated else ""))
    return values, "; ".join(notes)


def _drift(stack: BenchStack) -> tuple[dict[str, float], str]:
    s = stack.settings("drift")
    stack.drop_topics(s)
    stream = drift_batch.make_stream(stack.store, 15_000, 15_000)
    online = drift_batch.online_drift(stack.store, s, stream)
    batch = drift_batch.evidently_drift(stream, DRIFT_EVERY)
    nan = math.nan
    values = {
        "drift_evidently_ms": batch.ms_per(DRIFT_EVERY),
        "drift_online_ms": online.ms_per(DRIFT_EVERY),
        "drift_evidently_delay": nan if batch.delay is None else float(batch.delay),
        "drift_online_delay": nan if online.delay is None else float(online.delay),
    }
    return values, f"{batch.note()}; {online.note()}"


def run_once(stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure],
             progress: Progress, extra: Extra, report_dir: Path) -> None:
    """The single-run measurements: the latency curve (its PNG in ``report_dir``), then the
    memory run."""
    mode = "quick" if plan.quick else "full"
    full, warm_raw = load_events(data.full), load_events(data.warmup)
    if plan.wants("curve"):
        def point(p: curve.CurvePoint) -> None:
            text = p.result.note() if p.result else f"failed: {p.error}"
            progress.line(f"latency curve, {p.chain:<12} at {p.load:>7,.0f} ev/s   {text}")

        loads = curve.QUICK_LOADS if plan.quick else curve.FULL_LOADS
        points = curve.measure_curve(stack, full, warm_raw, loads, plan.e2e_seconds,
                                     plan.warm_seconds, on_point=point)
        section = ["## Latency under load", "",
                   "features produced → prediction readable, through ingest and predict "
                   "processes, beside two raw passthrough hops at the same offered load; each "
                   "load on fresh topics; a curve stops at its first saturated load.", "",
                   curve.curve_table(points), ""]
        try:
            png = curve.plot(points, report_dir / CURVE_PNG)
            section += [f"![latency under load]({png.name})", ""]
        except ImportError:
            section += ["(no plot: matplotlib is in the `bench` extra, "
                        "`pip install -e '.[bench]'`)", ""]
        extra.sections.append("\n".join(section))
    if plan.wants("memory"):
        seconds, steady = MEMORY[mode]

        def sample(t: float, rss: dict[str, int]) -> None:
            if int(t) % 60 < 5:
                mib = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in rss.items())
                print(f"  memory at {t:4.0f} s: {mib} MiB", file=sys.stderr, flush=True)

        try:
            run = memory.measure_memory(stack, full, data.truth, rate=MEMORY_RATE,
                                        seconds=seconds, steady_after=steady, on_sample=sample)
            growth = run.growth()
            for name, g in growth.items():
                figs[f"rss_growth_{name}"].runs.append(g * 100.0)
                figs[f"rss_growth_{name}"].notes.append(run.note())
            extra.sections.append("\n".join([
                "## Memory", "", run.note() + ".", "", memory.memory_table(run), ""]))
            progress.line(f"memory over {seconds:.0f} s: " + ", ".join(
                f"{k} {g:+.1%}" for k, g in growth.items()))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            extra.sections.append(f"## Memory\n\nfailed: {exc!r}\n")


def finish(extra: Extra, figs: dict[str, Figure]) -> None:
    """Sections that sum up the rounds: limits next to the services, the scale-out ceiling."""
    if extra.scale_notes:
        extra.sections.insert(0, "\n".join([
            "## Scale-out", "",
            "1, 2 and 4 `modelstream run predict` processes in one consumer group on a "
            "4-partition features.valid, each count on fresh topics, timed over a burst. This "
            "machine has 2 cores, shared by the replicas, the broker (tansu) and the bench's "
            "driver (producing the burst, reading the predictions). The CPU seconds of each "
            "over the burst's wall time show where the ceiling is: once they add up to ~2 "
            "cores, more replicas only share the same cores (and add consumer overhead); on a "
            "machine with a core per replica, and a broker of its own, the rate grows with the "
            "partitions instead.", "", *[f"- {n}" for n in extra.scale_notes], ""]))
    predict, onnx = figs["predict_json"].value, figs["onnx_b1000"].value
    if not math.isnan(predict) and not math.isnan(onnx):
        extra.sections.insert(0, "\n".join([
            "## Against the limits", "",
            f"- predict (JSON out) runs at {predict / onnx:.0%} of onnxruntime alone at batch "
            "1000 (the ONNX call is a small share of its work: decoding, ids, encoding, Kafka "
            "are the rest).",
            f"- Redis: an MGET of {limits.REDIS_BATCH} keys reads "
            f"{figs['redis_mget'].value / figs['redis_get'].value:.0f}× as many keys per "
            "second as one GET per round trip; ingest merges each batch with one MGET and one "
            "write script.", ""]))


def method(plan: Plan) -> list[str]:
    mode = "quick" if plan.quick else "full"
    seconds, steady = MEMORY[mode]
    return [
        "limits: onnxruntime alone — a plain InferenceSession as predict configures its own "
        "(1 intra-op thread), `run` on ready float32 batches of the same feature vectors, "
        "0.5 s per batch size; Redis alone — GET per key, MGET and a non-transactional "
        f"pipeline of {limits.REDIS_BATCH} keys, over 10,000 keys of a feature-store-sized "
        "JSON value, on the embedded Valkey.",
        "CPU per record: process CPU time (every thread) over the timed window of each "
        "in-process measurement / records handled; for process chains, the CPU time of each "
        "process from /proc over the burst (the broker's and Valkey's not included).",
        "In-process service runs call services.runtime.service.tune_gc (freeze the start-up "
        "heap, collector thresholds 50,000/50/100) as run_service does in production.",
        f"whole path: ingest and predict as `modelstream run` processes; after a warm-up, "
        f"{plan.events:,} complete events are handed to the producer at once; events/s = "
        "events / (first hand-over → last prediction readable).",
        f"per-event REST: bench.rest_server (FastAPI + uvicorn, 1 worker, uvloop/httptools, "
        "onnxruntime, 1 intra-op thread) and bench.rest_consumer (confluent-kafka consumer, "
        "one keep-alive requests.Session POST per event, prediction produced, commit after "
        f"flush), over {REST_EVENTS[mode]:,} events as the whole path. p99: both at the same "
        "steady load, half of REST's measured rate (rounded down to 50 ev/s), "
        f"{plan.e2e_seconds:g} s.",
        f"faust: bench.faust_agent, one agent, `async for` over features.valid, one "
        f"onnxruntime call and one `await send()` per event, over {FAUST_EVENTS[mode]:,} "
        "events; compared with predict in one process over the same records.",
        f"drift: bench.drift_batch — 15,000 events like the training data, then 15,000 older "
        f"customers (age ≥ 50); Evidently DataDriftPreset report of each {DRIFT_EVERY:,} "
        "events against the 15,000 training rows vs DriftDetector as the monitor configures "
        "it, batches of 1,000 evaluated each; delay = events from the change to the end of "
        "the window flagging age.",
        "scale-out: see its section.",
        f"memory: ingest, predict, join, monitor as processes, {MEMORY_RATE:,.0f} features/s "
        f"and their outcomes 1 s later for {seconds:.0f} s; RSS every 5 s; growth from the "
        f"sample at {steady:.0f} s to the end.",
        "Absolute figures move with whatever else the machine runs; the ratios are measured "
        "in the same run.",
    ]


def jobs_once(plan: Plan) -> int:
    """Progress lines of ``run_once``, at most: every load of both curves, and the memory run."""
    loads = curve.QUICK_LOADS if plan.quick else curve.FULL_LOADS
    return 2 * len(loads) * plan.wants("curve") + plan.wants("memory")
