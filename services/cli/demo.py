"""``modelstream demo``: the whole stack on this machine and the closed loop, by itself.

Feature events flow in at a steady rate; outcomes follow each prediction after a realistic
delay. After a normal phase the world changes for good (the label function switches and the
customers get older). What follows is the loop, with nobody touching it: the monitor raises a
drift or quality alert, the retrain service trains a candidate on the labeled predictions of the
new regime, stages it as a shadow, compares it live with the champion on the same events and
promotes it; accuracy comes back. The live view shows the pipeline's counts and latency,
accuracy per model version, the drift scores, the alerts, and the version timeline (every
``model.events`` transition and ``retrain.jobs`` step). Traffic stops ``tail_seconds`` after
accuracy has recovered (or when the loop has had ``max_seconds``), and the closing summary
reconciles every event and times each step of the loop from the drift's onset.

The demo runs from ``<data_dir>/demo`` (its ``stack.json``, logs and retrain state), so it may
run beside ``modelstream up``, which runs from ``<data_dir>``. Its story starts from the demo
model trained on the first concept, every time: its artifact store, ``<data_dir>/demo/artifacts``,
is emptied when it starts (the versions a demo retrains mean nothing to the next one, and a
champion retrained on the drifted concept would see drift from the first event); ``up``'s
store, ``<data_dir>/artifacts``, is never touched. An artifact store named in
``MODELSTREAM_ARTIFACT_DIR`` is used as it is.
"""

from __future__ import annotations

import heapq
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Producer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..runtime import kafka
from ..runtime.settings import Settings
from ..stack.stack import DEMO_DIR, Stack
from .traffic import BAD_KINDS, story_events
from .watch import PipelineWatcher, WatchCounts

__all__ = ["DEMO_SERVICE_ENV", "LoopMilestones", "demo_settings", "play_demo", "run_demo"]

MODEL = "agrawal"

# The demo's services work on its time scale, not production's: the monitor evaluates every
# second over short windows; the retrain service waits 12 s after an alert (the outcomes of the
# drifted events arrive 1–3 s late) and trains on the last 12 s of labeled predictions — the
# new regime — then decides the shadow on 500 shared labeled events, polling every second.
DEMO_SERVICE_ENV = {
    "MODELSTREAM_MONITOR_WINDOW": "1000",
    "MODELSTREAM_MONITOR_EVAL_SECONDS": "1",
    "MODELSTREAM_MONITOR_CHECKPOINT_SECONDS": "5",
    "MODELSTREAM_RETRAIN_ALERT_WAIT_SECONDS": "12",
    "MODELSTREAM_RETRAIN_WINDOW_SECONDS": "12",
    "MODELSTREAM_RETRAIN_MIN_EXAMPLES": "500",
    "MODELSTREAM_RETRAIN_SHADOW_MIN_LABELED": "500",
    "MODELSTREAM_RETRAIN_SHADOW_TIMEOUT_SECONDS": "120",
    "MODELSTREAM_RETRAIN_WATCH_SECONDS": "120",
    "MODELSTREAM_RETRAIN_POLL_SECONDS": "1",
}
OUTCOME_DELAY_S = (1.0, 3.0)
RECOVERY_TOLERANCE = 0.05  # accuracy back within this of its value before the drift
RECOVERY_MIN_LABELED = 300  # labeled predictions of the new champion before it counts


@dataclass
class LoopMilestones:
    """Wall-clock times (ms) of each step of the loop, read from the topics."""

    onset: int | None = None
    accuracy_before: float | None = None
    accuracy_low: float | None = None
    alert: dict[str, Any] | None = None
    job_id: str | None = None
    steps: dict[str, int] = field(default_factory=dict)  # step -> updated_at
    new_version: str | None = None
    outcome: str | None = None  # promoted, rejected, failed, rolled_back
    outcome_reason: str | None = None
    recovered: int | None = None
    accuracy_after: float | None = None

    def update(self, c: WatchCounts) -> None:
        if self.onset is None:
            return
        champion = _champion_at(c, self.onset)
        if self.accuracy_before is None and champion is not None:
            before = [a for t, a, n in c.accuracy.get((MODEL, champion, "champion"), [])
                      if t <= self.onset and n >= RECOVERY_MIN_LABELED]
            self.accuracy_before = before[-1] if before else None
        if champion is not None:
            during = [a for t, a, _ in c.accuracy.get((MODEL, champion, "champion"), [])
                      if t > self.onset]
            self.accuracy_low = min(during) if during else None
        if self.alert is None:
            self.alert = next((a for a in c.alerts if a["state"] == "firing"
                               and a.get("model") == MODEL and a.get("role") == "champion"
                               and a["raised_at"] >= self.onset), None)
        for r in c.job_steps:
            if r.get("model") != MODEL or r["updated_at"] < self.onset:
                continue
            if self.job_id is None and r["step"] == "started":
                self.job_id = r["job_id"]
            if r["job_id"] != self.job_id:
                continue
            self.steps.setdefault(r["step"], int(r["updated_at"]))
            self.new_version = r.get("new_version") or self.new_version
            if r["step"] in ("promoted", "rejected", "failed", "rolled_back"):
                self.outcome, self.outcome_reason = r["step"], r.get("reason") or r.get("error")
        if self.outcome == "promoted" and self.recovered is None and self.new_version:
            target = (self.accuracy_before or 1.0) - RECOVERY_TOLERANCE
            for t, a, n in c.accuracy.get((MODEL, self.new_version, "champion"), []):
                if n >= RECOVERY_MIN_LABELED and a >= target:
                    self.recovered, self.accuracy_after = t, a
                    break

    @property
    def settled(self) -> bool:
        """The loop has played out: recovered, or the job ended without a promotion."""
        return self.recovered is not None or self.outcome in ("rejected", "failed",
                                                              "rolled_back")

    def timeline(self) -> list[tuple[str, int | None]]:
        return [
            ("drift onset", self.onset),
            ("alert", self.alert["raised_at"] if self.alert else None),
            ("job started", self.steps.get("started")),
            ("data gathered", self.steps.get("data_gathered")),
            ("trained", self.steps.get("trained")),
            ("shadow staged", self.steps.get("staged")),
            ("promoted", self.steps.get("promoted")),
            ("accuracy recovered", self.recovered),
        ]


def _champion_at(c: WatchCounts, at_ms: int) -> str | None:
    champion = None
    for e in c.model_events:
        if e.get("model") != MODEL or e["time"] > at_ms:
            continue
        if e["transition"] == "champion":
            champion = e["version"]
    return champion


class DemoRun:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sent = 0
        self.kinds: Counter[str] = Counter()
        self.phase = "normal"
        self.phase_changes: list[tuple[float, str]] = []
        self.outcomes_sent = 0
        self.started = time.monotonic()
        self.loop = LoopMilestones()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _pipeline(run: DemoRun, c: WatchCounts) -> Table:
    table = Table(title="modelstream demo — features → ingest → predict → join → monitor",
                  header_style="bold", expand=False)
    table.add_column("stage")
    table.add_column("count", justify="right")
    table.add_column("detail")
    rate = run.sent / max(run.elapsed(), 1e-9)
    table.add_row("produced to features", f"{run.sent:,}",
                  f"{run.elapsed():5.1f} s at {rate:,.0f}/s (offered {run.rate:,.0f}/s)")
    phase = ("normal" if run.phase == "normal"
             else "drift: concept switch + older customers (stays)")
    table.add_row("  phase", "", phase)
    table.add_row("  partial updates", f"{run.kinds['partial']:,}", "completed from Redis")
    bad = sum(run.kinds[k] for k in BAD_KINDS)
    table.add_row("  deliberately bad", f"{bad:,}", "must all reach features.dlq")
    table.add_row("features.valid", f"{c.valid:,}", "complete point-in-time vectors")
    reasons = ", ".join(f"{r} {n}" for r, n in c.rejected.most_common())
    table.add_row("features.dlq", f"{c.rejected_total:,}", reasons or "-")
    table.add_row("predictions served", f"{len(c.served_events):,}",
                  f"p50 {c.latency(50):.0f} ms  p99 {c.latency(99):.0f} ms produce→prediction"
                  if c.e2e_ms else "-")
    table.add_row("  shadow predictions", f"{c.challenger_predictions:,}",
                  "a challenger scoring the same events, not served")
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


def _timeline(c: WatchCounts, started_wall_ms: int, rows: int = 12) -> Table:
    """The version timeline: model.events transitions and retrain.jobs steps, in time order."""
    table = Table(title="version timeline (model.events, retrain.jobs)", header_style="bold")
    for col in ("t", "source", "what", "why"):
        table.add_column(col)
    items: list[tuple[int, str, str, str]] = []
    for e in c.model_events:
        what = f"{e['model']} v{e['version'] or '-'} {e['transition']}"
        items.append((e["time"], "model.events", what, e.get("reason") or e["actor"]))
    ignored: list[dict[str, Any]] = []  # requests turned away while a job runs: one row
    for r in c.job_steps:
        if r["step"] == "ignored":
            ignored.append(r)
            continue
        version = f" v{r['new_version']}" if r.get("new_version") else ""
        what = f"job {r['job_id']} {r['step']}{version}"
        items.append((r["updated_at"], "retrain.jobs", what, r.get("error") or r.get("reason")
                      or ""))
    if ignored:
        causes = Counter((r.get("reason") or "").split(":", 1)[0] for r in ignored)
        items.append((ignored[0]["updated_at"], "retrain.jobs",
                      f"{len(ignored)} more request(s) ignored",
                      ", ".join(f"{n} {k}" for k, n in causes.most_common())
                      + f" (last at {(ignored[-1]['updated_at'] - started_wall_ms) / 1000:.1f}s)"))
    for at, source, what, why in sorted(items, key=lambda i: i[0])[-rows:]:  # stable
        t = (at - started_wall_ms) / 1000
        style = "magenta" if source == "model.events" else "cyan"
        table.add_row(f"{t:6.1f}s", f"[{style}]{source}[/{style}]", what, _short(why, 70))
    return table


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _view(run: DemoRun, c: WatchCounts, started_wall_ms: int) -> Group:
    return Group(_pipeline(run, c), _quality(c), _alerts(c, started_wall_ms),
                 _timeline(c, started_wall_ms))


def run_demo(settings: Settings, *, rate: float = 1500, normal_seconds: float = 30,
             max_seconds: float = 150, tail_seconds: float = 8,
             drain_timeout: float = 60) -> int:
    """Start a stack, stream the story through it, print the summary; 0 when every event is
    reconciled and the loop closed (a retrained model promoted and accuracy recovered)."""
    code, _ = play_demo(settings, console=Console(), rate=rate, normal_seconds=normal_seconds,
                        max_seconds=max_seconds, tail_seconds=tail_seconds,
                        drain_timeout=drain_timeout)
    return code


def demo_settings(settings: Settings) -> Settings:
    """``settings`` for a demo: free ports when the default ones are taken, the demo's own
    directory, and its artifact store emptied (see the module's doc) unless ``artifact_dir``
    names one."""
    data_dir = settings.data_dir / DEMO_DIR
    update: dict[str, Any] = {"free_ports": True, "data_dir": data_dir}
    if settings.artifact_dir is None:
        store = data_dir / "artifacts"
        shutil.rmtree(store, ignore_errors=True)
        update["artifact_dir"] = store
    return settings.model_copy(update=update)


def play_demo(settings: Settings, *, console: Console, rate: float = 1500,
              normal_seconds: float = 30, max_seconds: float = 150, tail_seconds: float = 8,
              drain_timeout: float = 60) -> tuple[int, LoopMilestones]:
    """:func:`run_demo` on ``console``, with the loop's milestones (for ``bench.swaps``)."""
    # A setting given in the environment wins over the demo's own.
    env = {k: v for k, v in DEMO_SERVICE_ENV.items() if k not in os.environ}
    settings = demo_settings(settings)
    stack = Stack(settings, say=console.print, service_env=env)
    code, run = 1, DemoRun(rate)
    try:
        console.print(f"state   {settings.data_dir} (stack.json, logs; `modelstream status` "
                      "finds it)")
        resolved = stack.start()
        console.print("waiting for the services to join their consumer groups …")
        if not stack.wait_ready(90):
            console.print("[red]services did not become ready; see the logs in "
                          f"{stack.log_dir}[/red]")
            return 1, run.loop
        watcher = PipelineWatcher(resolved).start()
        producer: Producer = kafka.producer(resolved)
        try:
            code = _stream(console, stack, watcher, producer, resolved, run, normal_seconds,
                           max_seconds, tail_seconds, drain_timeout)
        finally:
            watcher.stop()
            producer.flush(10)
            producer.close()  # before the broker stops: no reconnect attempts in the output
    except KeyboardInterrupt:
        console.print("interrupted: stopping the stack")
    finally:
        stack.stop()
        console.print("stack stopped; no process left behind")
    return code, run.loop


def _stream(console: Console, stack: Stack, watcher: PipelineWatcher, producer: Producer,
            settings: Settings, run: DemoRun, normal_seconds: float, max_seconds: float,
            tail_seconds: float, drain_timeout: float) -> int:
    features, outcomes = settings.topics.features, settings.topics.outcomes
    rate = run.rate
    loop = run.loop
    run.started = time.monotonic()
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

    def story_over() -> bool:
        if loop.onset is None:
            return False
        since_onset = (time.time() * 1000 - loop.onset) / 1000
        if loop.recovered is not None:
            return (time.time() * 1000 - loop.recovered) / 1000 >= tail_seconds
        return loop.settled or since_onset >= max_seconds

    with Live(console=console, refresh_per_second=4) as live:
        for _, ev in story_events(lambda: run.phase):
            producer.produce(features, ev.value, ev.key)
            run.kinds[ev.kind] += 1
            run.sent += 1
            if ev.kind == "full" and ev.label is not None:
                heapq.heappush(due, (time.monotonic() + rng.uniform(*OUTCOME_DELAY_S),
                                     ev.event_id, str(ev.label)))
                expected_labeled += 1
            if run.sent % 100:
                continue
            producer.poll(0)
            send_due_outcomes(time.monotonic())
            ahead = run.sent / rate - run.elapsed()
            if ahead > 0:
                time.sleep(ahead)
            if run.phase == "normal" and run.elapsed() >= normal_seconds:
                run.phase = "drift"
                run.phase_changes.append((run.elapsed(), "drift"))
                loop.onset = int(time.time() * 1000)
            if run.sent % 500 == 0:
                with watcher.lock:
                    loop.update(watcher.counts)
                    live.update(_view(run, watcher.counts, started_wall_ms))
                stack.check()
                if story_over():
                    break
        produce_seconds = run.elapsed()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            send_due_outcomes(time.monotonic())
            producer.poll(0)
            with watcher.lock:
                c = watcher.counts
                loop.update(c)
                done = (not due and c.valid + c.rejected_total >= run.sent
                        and len(c.served_events) >= c.valid
                        and len(c.labeled_served) >= expected_labeled)
                live.update(_view(run, c, started_wall_ms))
            if done:
                break
            stack.check()
            time.sleep(0.25)
        producer.flush(30)
        time.sleep(0.5)  # the last records the watcher has in flight
    with watcher.lock:
        loop.update(watcher.counts)
        return _summary(console, run, watcher.counts, produce_seconds, expected_labeled,
                        started_wall_ms)


def _loop_table(loop: LoopMilestones, started_wall_ms: int) -> Table:
    table = Table(title="the loop, step by step", header_style="bold")
    for col in ("step", "at", "after onset", "after previous step"):
        table.add_column(col, justify="left" if col == "step" else "right")
    previous: int | None = None
    for name, at in loop.timeline():
        if at is None:
            table.add_row(name, "-", "-", "-")
            continue
        since_onset = f"{(at - loop.onset) / 1000:+.1f} s" if loop.onset else "-"
        step = f"{(at - previous) / 1000:.1f} s" if previous is not None else "-"
        table.add_row(name, f"{(at - started_wall_ms) / 1000:.1f} s", since_onset, step)
        previous = at
    return table


def _summary(console: Console, run: DemoRun, c: WatchCounts, secs: float,
             expected_labeled: int, started_wall_ms: int) -> int:
    loop = run.loop
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
    table.add_row("predictions served", f"{len(c.served_events):,} events")
    table.add_row("shadow predictions", f"{c.challenger_predictions:,}")
    table.add_row("scored twice by one version", f"{c.scored_twice:,}")
    table.add_row("outcomes sent / served predictions labeled",
                  f"{run.outcomes_sent:,} / {len(c.labeled_served):,}")
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

    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    table.add_row("accuracy before drift / lowest / after the new champion",
                  f"{acc(loop.accuracy_before)} / {acc(loop.accuracy_low)} / "
                  f"{acc(loop.accuracy_after)}")
    console.print(table)
    console.print(_timeline(c, started_wall_ms, rows=40))
    console.print(_loop_table(loop, started_wall_ms))
    reconciled = (
        c.valid + c.rejected_total == run.sent
        and c.rejected_total == bad_sent
        and len(c.served_events) == c.valid
        and c.scored_twice == 0
        and c.rejected == expected
        and len(c.labeled_served) >= expected_labeled
    )
    if reconciled:
        console.print(
            f"[green]reconciled: {run.sent:,} in = {c.valid:,} valid + {c.rejected_total:,} "
            f"rejected; every valid event has one served prediction, none scored twice by one "
            f"version; every outcome was joined ({len(c.labeled_served):,} labeled)[/green]"
        )
    else:
        console.print(f"[red]not reconciled: in {run.sent}, valid {c.valid}, rejected "
                      f"{dict(c.rejected)} (expected {dict(expected)}), served "
                      f"{len(c.served_events)}, scored twice {c.scored_twice}, labeled "
                      f"{len(c.labeled_served)} of {expected_labeled}[/red]")
    if loop.recovered is not None and loop.onset is not None:
        console.print(
            f"[green]loop closed: {MODEL} v{loop.new_version} promoted "
            f"{(loop.steps['promoted'] - loop.onset) / 1000:.1f} s after the drift began; "
            f"accuracy recovered {(loop.recovered - loop.onset) / 1000:.1f} s after it "
            f"({acc(loop.accuracy_before)} → {acc(loop.accuracy_low)} → "
            f"{acc(loop.accuracy_after)})[/green]")
    else:
        console.print(f"[red]loop not closed: job {loop.job_id or '-'} "
                      f"{loop.outcome or 'still running'}"
                      f"{': ' + loop.outcome_reason if loop.outcome_reason else ''}[/red]")
    return 0 if reconciled and loop.recovered is not None else 1
