"""Model changes under load (``--only swaps``) and the closed loop's time (``--only loop``).

- ``swaps``: one ``modelstream run predict`` process at a sustained offered load of complete
  feature vectors; after a steady spell, the champion changes again and again through the
  registry's API — ``transition(v2, "champion")``, then ``rollback()`` back to v1, and so on,
  every ``SWAP_EVERY_S``. Every prediction is read back from the predictions topic: events sent
  without a served prediction (dropped), prediction ids seen twice (one version scoring one
  event twice), events served by two versions, the latency (produce → prediction read back) of
  the steady spell beside that of the swapping spell, and how long after each transition the
  new champion served its first prediction.
- ``loop``: the demo's story (``services.cli.demo.play_demo``) on a stack of its own — drift
  that stays, alert, retraining, shadow, promotion — and the time from the drift's onset to
  the promotion and to the new champion's accuracy being back.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console

from services.models import ArtifactStore
from services.models.agrawal import AGRAWAL_FEATURES, generate
from services.registry import adopt_store, register, rollback, transition
from services.runtime.settings import Settings
from services.stack.processes import terminate

from .chains import service_process
from .report import Bar, Figure, percentile
from .stack import BenchStack

__all__ = [
    "GROUPS",
    "figures",
    "measure_loop",
    "measure_swaps",
    "method",
    "run_loop",
    "run_round",
]

GROUPS = ("swaps", "loop")
MODEL = "agrawal"
SWAP_RATE = {"quick": 1_000.0, "full": 2_000.0}  # offered events/s
STEADY_S = {"quick": 4.0, "full": 8.0}
SWAPS = {"quick": 8, "full": 20}
SWAP_EVERY_S = 0.75
AFTER_S = 2.0  # traffic after the last swap
# The demo's story for ``loop``, shortened (its services' settings are the demo's own).
LOOP = {"quick": {"rate": 1_000.0, "normal_seconds": 10.0},
        "full": {"rate": 1_500.0, "normal_seconds": 20.0}}


def figures() -> list[Figure]:
    zero = (Bar("max_value", 0.0),)
    return [
        Figure("swap_p99_steady", "predict p99 at steady load, no swaps", "ms"),
        Figure("swap_p99", "predict p99 while the champion changes", "ms",
               baseline="swap_p99_steady"),
        Figure("swap_first", "transition → first prediction of the new champion, median", "ms"),
        Figure("swap_dropped", "events without a served prediction across swaps", "events",
               bars=zero),
        Figure("swap_twice", "events scored twice by one version across swaps", "events",
               bars=zero),
        Figure("loop_promoted", "drift onset → retrained model promoted", "s"),
        Figure("loop_recovered", "drift onset → accuracy recovered", "s"),
    ]


@dataclass
class _Seen:
    """Predictions read back: per prediction (event id, version, served, event time,
    predicted at, read at)."""

    rows: list[tuple[str, str, bool, int, int, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


def _read_predictions(s: Settings, seen: _Seen) -> None:
    topic = s.topics.predictions
    consumer = Consumer(s.kafka_config(**{"group.id": "bench-swaps", "enable.auto.commit": False,
                                          "fetch.wait.max.ms": 5}))
    try:
        md = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                         for p in md.topics[topic].partitions])
        while not seen.done:
            msgs = consumer.consume(2000, 0.1)
            now = time.time() * 1000
            rows = []
            for m in msgs:
                if m.error():
                    continue
                r = orjson.loads(m.value() or b"{}")
                rows.append((r["event_id"], r["model_version"], bool(r.get("served", True)),
                             int(r["event_time"]), int(r["predicted_at"]), now,
                             r["prediction_id"]))
            with seen.lock:
                seen.rows += rows
    finally:
        consumer.close()


def _events(n: int) -> list[tuple[bytes, dict[str, Any]]]:
    x, _ = generate(n, seed=17, classification_function=0)
    out = []
    for i, row in enumerate(x.tolist()):
        features = {f.name: (int(v) if f.type != "float" else v)
                    for f, v in zip(AGRAWAL_FEATURES, row, strict=True)}
        entity = f"c-{i % 5000}"
        out.append((entity.encode(), {"entity_id": entity, "model": MODEL,
                                      "features": features}))
    return out


def measure_swaps(stack: BenchStack, quick: bool) -> tuple[dict[str, float], str]:
    mode = "quick" if quick else "full"
    rate, steady_s, swaps = SWAP_RATE[mode], STEADY_S[mode], SWAPS[mode]
    s = stack.settings("swaps")
    store = ArtifactStore(stack.root / f"{s.topic_prefix}artifacts")
    s = s.model_copy(update={"artifact_dir": store.root})
    onnx = stack.store.load_bytes(MODEL, "1")
    card = stack.store.card(MODEL, "1")
    store.publish(onnx, card)
    adopt_store(s, store, actor="bench", reason="swaps: v1 champion")
    v2 = register(s, onnx, card, actor="bench", reason="swaps: the other version", store=store)
    assert v2.transition == "registered", v2.reason
    seen = _Seen()
    reader = threading.Thread(target=_read_predictions, args=(s, seen), daemon=True)
    reader.start()
    logs = stack.root / "logs" / s.topic_prefix.rstrip(".")
    child = service_process("predict", s, logs)
    producer = stack.producer(s)
    topic = s.topics.features_valid
    total = int(rate * (steady_s + swaps * SWAP_EVERY_S + AFTER_S)) + 400
    events = _events(total)
    sent: list[str] = []
    swap_log: list[tuple[int, str]] = []  # (wall ms just before the transition, new champion)

    def send(prefix: str, i: int) -> None:
        key, ev = events[i]
        event_id = f"{prefix}-{i}"
        producer.produce(topic, orjson.dumps({**ev, "event_id": event_id,
                                               "event_time": int(time.time() * 1000)}), key)
        sent.append(event_id)

    def swapper() -> None:
        for k in range(swaps):
            at = int(time.time() * 1000)
            if k % 2 == 0:
                transition(s, MODEL, v2.version, "champion", actor="bench", reason="swap",
                           store=store)
                swap_log.append((at, v2.version))
            else:
                rollback(s, MODEL, actor="bench", reason="swap back")
                swap_log.append((at, "1"))
            time.sleep(max(0.0, SWAP_EVERY_S - (time.time() * 1000 - at) / 1000))

    try:
        # Warm: until predict has joined and answers (its group join and model load excluded).
        deadline = time.monotonic() + 90
        i = 0
        while not _served_any(seen) and time.monotonic() < deadline:
            send("w", i)
            i += 1
            producer.poll(0)
            time.sleep(0.01)
        if not _served_any(seen):
            raise RuntimeError(f"predict never answered; see {child.log}")
        start_i = i
        t0 = time.monotonic()
        swap_thread = threading.Thread(target=swapper, daemon=True)
        steady_end_ms = 0
        while i < total:
            elapsed = time.monotonic() - t0
            if not steady_end_ms and elapsed >= steady_s:
                steady_end_ms = int(time.time() * 1000)
                swap_thread.start()
            if steady_end_ms and not swap_thread.is_alive() and swap_log \
                    and time.time() * 1000 - swap_log[-1][0] > AFTER_S * 1000:
                break
            send("s" if not steady_end_ms else "x", i)
            i += 1
            if (i - start_i) % 50 == 0:
                producer.poll(0)
                ahead = (i - start_i) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(30)
        swap_thread.join(30)
        deadline = time.monotonic() + 60
        want = set(sent)
        while time.monotonic() < deadline:
            with seen.lock:
                served = {r[0] for r in seen.rows if r[2]}
            if want <= served:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # a prediction scored twice would come now
    finally:
        seen.done = True
        reader.join(10)
        terminate(child.proc)
        stack.drop_topics(s)
    return _verdict(seen.rows, sent, swap_log, steady_end_ms, rate)


def _served_any(seen: _Seen) -> bool:
    with seen.lock:
        return any(r[2] for r in seen.rows)


def _verdict(rows: list[tuple[str, str, bool, int, int, float, str]], sent: list[str],
             swap_log: list[tuple[int, str]], steady_end_ms: int,
             rate: float) -> tuple[dict[str, float], str]:
    served: dict[str, set[str]] = {}
    ids: dict[str, int] = {}
    for event_id, version, is_served, *_rest, prediction_id in rows:
        ids[prediction_id] = ids.get(prediction_id, 0) + 1
        if is_served:
            served.setdefault(event_id, set()).add(version)
    measured = [e for e in sent if not e.startswith("w-")]
    dropped = sum(1 for e in measured if e not in served)
    twice = sum(n - 1 for n in ids.values() if n > 1)
    two_versions = sum(1 for e in measured if len(served.get(e, ())) > 1)
    first, last = swap_log[0][0], swap_log[-1][0]
    steady = [read - et for e, _, ok, et, _, read, _ in rows if ok and e.startswith("s-")]
    during = [read - et for e, _, ok, et, _, read, _ in rows
              if ok and e.startswith("x-") and first <= et <= last + 1000]
    delays = []
    for at, version in swap_log:
        after = [p for _, v, ok, _, p, _, _ in rows if ok and v == version and p >= at]
        if after:
            delays.append(min(after) - at)
    by_version: dict[str, int] = {}
    for versions in served.values():
        for v in versions:
            by_version[v] = by_version.get(v, 0) + 1
    values = {
        "swap_p99_steady": percentile(steady, 99),
        "swap_p99": percentile(during, 99),
        "swap_first": statistics.median(delays) if delays else float("nan"),
        "swap_dropped": float(dropped),
        "swap_twice": float(twice + two_versions),
    }
    note = (f"{len(measured):,} events at {rate:,.0f}/s, {len(swap_log)} champion changes "
            f"every {SWAP_EVERY_S:g} s; served by v1/v2 {by_version.get('1', 0):,}/"
            f"{by_version.get('2', 0):,}; p50 steady {percentile(steady, 50):.1f} ms, "
            f"during swaps {percentile(during, 50):.1f} ms; first prediction of the new "
            f"champion after {min(delays, default=float('nan')):.0f}–"
            f"{max(delays, default=float('nan')):.0f} ms; dropped {dropped}, a prediction id "
            f"twice {twice}, served by two versions {two_versions}")
    return values, note


def measure_loop(quick: bool) -> tuple[dict[str, float], str]:
    """The demo's loop on a stack of its own (run when the bench's own stack is down)."""
    from services.cli.demo import play_demo

    with tempfile.TemporaryDirectory(prefix="modelstream-bench-loop-") as tmp:
        settings = Settings(data_dir=Path(tmp), free_ports=True, metrics_port=0)
        console = Console(file=io.StringIO(), width=160)
        code, loop = play_demo(settings, console=console, tail_seconds=1.0, max_seconds=120,
                               **LOOP["quick" if quick else "full"])
    promoted = loop.steps.get("promoted")
    if loop.onset is None or promoted is None or loop.recovered is None:
        text = console.file.getvalue()  # type: ignore[attr-defined]
        raise RuntimeError(f"the loop did not close (exit {code}): {text[-1500:]}")
    values = {"loop_promoted": (promoted - loop.onset) / 1000,
              "loop_recovered": (loop.recovered - loop.onset) / 1000}
    steps = ", ".join(f"{name} +{(at - loop.onset) / 1000:.1f} s" for name, at in loop.timeline()
                      if at is not None and name != "drift onset")
    note = (f"{steps}; accuracy {loop.accuracy_before or float('nan'):.3f} → "
            f"{loop.accuracy_low or float('nan'):.3f} → {loop.accuracy_after or float('nan'):.3f}")
    return values, note


def method(quick: bool) -> list[str]:
    mode = "quick" if quick else "full"
    return [
        f"swaps: one predict process; {SWAP_RATE[mode]:,.0f} complete feature vectors/s offered "
        f"to features.valid; {STEADY_S[mode]:g} s steady, then {SWAPS[mode]} champion changes "
        f"every {SWAP_EVERY_S:g} s through the registry API (transition to champion, rollback), "
        f"then {AFTER_S:g} s more. Latency is produce → prediction read back from the "
        "predictions topic by a consumer in the bench process; 'while the champion changes' "
        "counts events sent from the first change to 1 s after the last. Every sent event must "
        "have exactly one served prediction; a prediction id seen twice or an event served by "
        "two versions counts in 'scored twice'.",
        "loop: the demo's story (services.cli.demo) on a stack of its own with the demo's "
        f"service settings, at {LOOP[mode]['rate']:,.0f} events/s, the drift after "
        f"{LOOP[mode]['normal_seconds']:g} s; times from the drift's onset (wall clock, read "
        "from monitor.alerts, retrain.jobs, model.events and monitor.metrics). Recovered: the "
        "new champion's windowed accuracy over at least 300 labeled events within 0.05 of the "
        "old champion's before the drift.",
    ]


def run_round(stack: BenchStack, plan: Any, figs: dict[str, Figure], round_no: int,
              progress: Any) -> None:
    """One ``swaps`` measurement, recorded as run ``round_no`` of its figures."""
    from .suite import _attempt, _record

    keys = ("swap_p99_steady", "swap_p99", "swap_first", "swap_dropped", "swap_twice")
    values, note = _attempt(lambda: measure_swaps(stack, plan.quick), keys)
    _record(figs, values, note, round_no, progress, "swaps: p99 steady", plan.runs)


def run_loop(plan: Any, figs: dict[str, Figure], progress: Any) -> None:
    """The ``loop`` measurement, once (a stack of its own: run it when the bench's is down)."""
    from .suite import _attempt, _record

    values, note = _attempt(lambda: measure_loop(plan.quick), ("loop_promoted",
                                                               "loop_recovered"))
    _record(figs, values, note, 1, progress, "loop: drift onset → promoted", 1)
