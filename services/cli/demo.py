"""``modelstream demo``: the whole stack on this machine and a story streamed through it.

Feature events flow in; outcomes follow each prediction after a realistic delay; midway the
world changes (the label function switches and the customers get older), then changes back.
The live view shows the pipeline's counts and latency, accuracy per model version (from
labels, and estimated without them), the drift scores, and the alerts as they fire and
resolve. The closing summary reconciles every event.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Producer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..runtime import kafka
from ..runtime.settings import Settings
from ..stack.stack import Stack
from .traffic import BAD_KINDS, drifting_events
from .watch import PipelineWatcher, WatchCounts

__all__ = ["run_demo"]

# The monitor evaluates faster and over shorter windows in the demo, so a story of a few
# tens of seconds shows alerts firing and resolving.
DEMO_SERVICE_ENV = {
    "MODELSTREAM_MONITOR_WINDOW": "1000",
    "MODELSTREAM_MONITOR_EVAL_SECONDS": "1",
    "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "5",
}
OUTCOME_DELAY_S = (1.0, 3.0)


class DemoRun:
    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.kinds: Counter[str] = Counter()
        self.phase = ""
        self.phase_changes: list[tuple[float, str]] = []
        self.outcomes_sent = 0
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _pipeline(run: DemoRun, c: WatchCounts) -> Table:
    table = Table(title="modelstream demo — features → ingest → predict → join → monitor",
                  header_style="bold", expand=False)
    table.add_column("stage")
    table.add_column("count", justify="right")
    table.add_column("detail")
    pct = 100.0 * run.sent / run.total if run.total else 0.0
    bar = "█" * int(pct / 4) + "·" * (25 - int(pct / 4))
    rate = run.sent / max(run.elapsed(), 1e-9)
    table.add_row("produced to features", f"{run.sent:,}", f"{bar} {pct:5.1f}%  {rate:,.0f}/s")
    table.add_row("  phase", "", run.phase)
    table.add_row("  partial updates", f"{run.kinds['partial']:,}", "completed from Redis")
    bad = sum(run.kinds[k] for k in BAD_KINDS)
    table.add_row("  deliberately bad", f"{bad:,}", "must all reach features.dlq")
    table.add_row("features.valid", f"{c.valid:,}", "complete point-in-time vectors")
    reasons = ", ".join(f"{r} {n}" for r, n in c.rejected.most_common())
    table.add_row("features.dlq", f"{c.rejected_total:,}", reasons or "-")
    table.add_row("predictions", f"{c.predictions:,}",
                  f"p50 {c.latency(50):.0f} ms  p99 {c.latency(99):.0f} ms produce→prediction"
                  if c.e2e_ms else "-")
    table.add_row("outcomes sent", f"{run.outcomes_sent:,}",
                  f"{OUTCOME_DELAY_S[0]:.0f}–{OUTCOME_DELAY_S[1]:.0f} s after each event")
    table.add_row("predictions.labeled", f"{len(c.labeled_ids):,}", "joined on event id")
    return table


def _quality(c: WatchCounts) -> Table:
    table = Table(title="model quality and drift (monitor.metrics)", header_style="bold")
    for col in ("version", "role", "labeled", "accuracy", "expected acc.", "age PSI",
                "score KS"):
        table.add_column(col, justify="right" if col not in ("version", "role") else "left")
    for (model, version, role), snap in sorted(c.snapshots.items()):
        m, d = snap["metrics"], snap["feature_drift"]

        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.3f}"

        table.add_row(f"{model} v{version}", role, f"{snap['labeled']:,}",
                      fmt(m.get("accuracy")), fmt(m.get("expected_accuracy")),
                      fmt(d.get("age.psi")), fmt(d.get("__score__.ks")))
    return table


def _alerts(c: WatchCounts, started_wall_ms: int) -> Table:
    table = Table(title="alerts (monitor.alerts)", header_style="bold")
    for col in ("t", "state", "severity", "what"):
        table.add_column(col)
    for a in c.alerts[-8:]:
        t = (a["raised_at"] - started_wall_ms) / 1000
        style = "red" if a["state"] == "firing" else "green"
        table.add_row(f"{t:5.1f}s", f"[{style}]{a['state']}[/{style}]", a["severity"],
                      a["message"])
    return table


def _view(run: DemoRun, c: WatchCounts, started_wall_ms: int) -> Group:
    return Group(_pipeline(run, c), _quality(c), _alerts(c, started_wall_ms))


def run_demo(settings: Settings, *, events: int, rate: float, timeout: float = 120) -> int:
    console = Console()
    stack = Stack(settings.model_copy(update={"free_ports": True}), say=console.print,
                  service_env=DEMO_SERVICE_ENV)
    code = 1
    try:
        resolved = stack.start()
        console.print("waiting for the services to join their consumer groups …")
        if not stack.wait_ready(90):
            console.print("[red]services did not become ready; see the logs in var/logs[/red]")
            return 1
        watcher = PipelineWatcher(resolved).start()
        producer: Producer = kafka.producer(resolved)
        code = _stream(console, stack, watcher, producer, resolved, events, rate, timeout)
    except KeyboardInterrupt:
        console.print("interrupted: stopping the stack")
    finally:
        stack.stop()
        console.print("stack stopped; no process left behind")
    return code


def _stream(console: Console, stack: Stack, watcher: PipelineWatcher, producer: Producer,
            settings: Settings, events: int, rate: float, timeout: float) -> int:
    features, outcomes = settings.topics.features, settings.topics.outcomes
    run = DemoRun(events)
    started_wall_ms = int(time.time() * 1000)
    due: list[tuple[float, str, str]] = []  # (when, event id, label) of outcomes to send
    rng = random.Random(3)
    expected_labeled = 0

    def send_due_outcomes(now: float) -> None:
        while due and due[0][0] <= now:
            _, event_id, label = heapq.heappop(due)
            producer.produce(outcomes, orjson.dumps(
                {"event_id": event_id, "label": label,
                 "outcome_time": int(time.time() * 1000)}), event_id)
            run.outcomes_sent += 1

    with Live(console=console, refresh_per_second=4) as live:
        for phase, ev in drifting_events(events):
            if phase != run.phase:
                run.phase = phase
                run.phase_changes.append((run.elapsed(), phase))
            producer.produce(features, ev.value, ev.key)
            run.kinds[ev.kind] += 1
            run.sent += 1
            if ev.kind == "full" and ev.label is not None:
                heapq.heappush(due, (time.monotonic() + rng.uniform(*OUTCOME_DELAY_S),
                                     ev.event_id, str(ev.label)))
                expected_labeled += 1
            if run.sent % 200 == 0:
                producer.poll(0)
                send_due_outcomes(time.monotonic())
                ahead = run.sent / rate - run.elapsed()
                if ahead > 0:
                    time.sleep(ahead)
                with watcher.lock:
                    live.update(_view(run, watcher.counts, started_wall_ms))
                stack.check()
        produce_seconds = run.elapsed()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send_due_outcomes(time.monotonic())
            producer.poll(0)
            with watcher.lock:
                c = watcher.counts
                done = (not due and c.valid + c.rejected_total >= run.sent
                        and c.predictions >= c.valid
                        and len(c.labeled_ids) >= expected_labeled
                        and _alerts_settled(c))
                live.update(_view(run, c, started_wall_ms))
            if done:
                break
            stack.check()
            time.sleep(0.25)
        producer.flush(30)
    watcher.stop()
    return _summary(console, run, watcher.counts, produce_seconds, expected_labeled,
                    started_wall_ms)


def _alerts_settled(c: WatchCounts) -> bool:
    """Every alert episode that fired has resolved (the story ends back to normal)."""
    open_ids = set()
    for a in c.alerts:
        if a["state"] == "firing":
            open_ids.add(a["alert_id"])
        else:
            open_ids.discard(a["alert_id"])
    return bool(c.alerts) and not open_ids


def _summary(console: Console, run: DemoRun, c: WatchCounts, secs: float,
             expected_labeled: int, started_wall_ms: int) -> int:
    bad_sent = sum(run.kinds[k] for k in BAD_KINDS)
    expected = Counter({BAD_KINDS[k]: run.kinds[k] for k in BAD_KINDS if run.kinds[k]})
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("events in", f"{run.sent:,}")
    table.add_row("valid", f"{c.valid:,}")
    table.add_row("rejected", f"{c.rejected_total:,}")
    for reason, n in c.rejected.most_common():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("predictions", f"{c.predictions:,} ({len(c.prediction_ids):,} distinct ids)")
    table.add_row("outcomes sent / labeled", f"{run.outcomes_sent:,} / {len(c.labeled_ids):,}")
    table.add_row("throughput", f"{run.sent / secs:,.0f} events/s offered")
    table.add_row("latency p50 / p99 (produce → prediction)",
                  f"{c.latency(50):.1f} / {c.latency(99):.1f} ms")
    table.add_row("latency p50 / p99 (inside modelstream)",
                  f"{c.latency(50, 'svc'):.1f} / {c.latency(99, 'svc'):.1f} ms")
    for at, phase in run.phase_changes:
        table.add_row(f"phase at {at:5.1f}s", phase)
    fired = [a for a in c.alerts if a["state"] == "firing"]
    resolved = [a for a in c.alerts if a["state"] == "resolved"]
    table.add_row("alerts fired / resolved", f"{len(fired)} / {len(resolved)}")
    console.print(table)
    if c.alerts:
        console.print(_alerts(c, started_wall_ms))
    ok = (
        c.valid + c.rejected_total == run.sent
        and c.rejected_total == bad_sent
        and len(c.prediction_ids) == c.valid
        and c.rejected == expected
        and len(c.labeled_ids) >= expected_labeled
    )
    if ok:
        console.print(
            f"[green]reconciled: {run.sent:,} in = {c.valid:,} valid + {c.rejected_total:,} "
            f"rejected; every valid event has its prediction; every outcome was joined "
            f"({len(c.labeled_ids):,} labeled)[/green]"
        )
        return 0
    console.print(f"[red]not reconciled: in {run.sent}, valid {c.valid}, rejected "
                  f"{dict(c.rejected)} (expected {dict(expected)}), predictions "
                  f"{len(c.prediction_ids)}, labeled {len(c.labeled_ids)} of "
                  f"{expected_labeled}[/red]")
    return 1
