"""``modelstream demo``: the whole stack on this machine, demo traffic through it, a live view
and a closing summary that reconciles every event."""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import Producer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..runtime import kafka
from ..runtime.settings import Settings
from ..stack.stack import Stack
from .traffic import BAD_KINDS, agrawal_events
from .watch import PipelineWatcher, WatchCounts

__all__ = ["run_demo"]


def _view(sent: int, total: int, kinds: Counter[str], c: WatchCounts, elapsed: float) -> Table:
    table = Table(title="modelstream demo — features → ingest → predict → predictions",
                  show_header=True, header_style="bold")
    table.add_column("stage")
    table.add_column("count", justify="right")
    table.add_column("detail")
    pct = 100.0 * sent / total if total else 0.0
    bar = "█" * int(pct / 4) + "·" * (25 - int(pct / 4))
    rate = sent / max(elapsed, 1e-9)
    table.add_row("produced to features", f"{sent:,}", f"{bar} {pct:5.1f}%  {rate:,.0f}/s")
    table.add_row("  of which partial updates", f"{kinds['partial']:,}", "completed from Redis")
    bad = sum(kinds[k] for k in BAD_KINDS)
    table.add_row("  of which deliberately bad", f"{bad:,}", "must all reach features.dlq")
    table.add_row("features.valid", f"{c.valid:,}", "complete point-in-time vectors")
    reasons = ", ".join(f"{r} {n}" for r, n in c.rejected.most_common())
    table.add_row("features.dlq", f"{c.rejected_total:,}", reasons or "-")
    labels = ", ".join(f"label {k}: {v}" for k, v in sorted(c.labels.items()))
    table.add_row("predictions", f"{c.predictions:,}", labels or "-")
    table.add_row(
        "latency produce→prediction", "",
        f"p50 {c.latency(50):.1f} ms  p99 {c.latency(99):.1f} ms" if c.e2e_ms else "-",
    )
    return table


def run_demo(settings: Settings, *, events: int, rate: float, timeout: float = 120) -> int:
    console = Console()
    stack = Stack(settings.model_copy(update={"free_ports": True}), say=console.print)
    code = 1
    try:
        resolved = stack.start()
        console.print("waiting for the services to join their consumer groups …")
        if not stack.wait_ready(60):
            console.print("[red]services did not become ready; see the logs in var/logs[/red]")
            return 1
        watcher = PipelineWatcher(resolved).start()
        producer: Producer = kafka.producer(resolved)
        topic = resolved.topics.features
        kinds: Counter[str] = Counter()
        started = time.monotonic()
        sent = 0
        stream = agrawal_events(events)
        with Live(console=console, refresh_per_second=8) as live:
            for ev in stream:
                producer.produce(topic, ev.value, ev.key)
                kinds[ev.kind] += 1
                sent += 1
                if sent % 200 == 0:
                    producer.poll(0)
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                    with watcher.lock:
                        elapsed = time.monotonic() - started
                        live.update(_view(sent, events, kinds, watcher.counts, elapsed))
                    stack.check()
            producer.flush(30)
            produce_seconds = time.monotonic() - started
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with watcher.lock:
                    c = watcher.counts
                    done = c.valid + c.rejected_total >= sent and c.predictions >= c.valid
                    live.update(_view(sent, events, kinds, c, produce_seconds))
                if done:
                    break
                stack.check()
                time.sleep(0.2)
        watcher.stop()
        code = _summary(console, sent, kinds, watcher.counts, produce_seconds)
    except KeyboardInterrupt:
        console.print("interrupted: stopping the stack")
    finally:
        stack.stop()
        console.print("stack stopped; no process left behind")
    return code


def _summary(console: Console, sent: int, kinds: Counter[str], c: WatchCounts, secs: float) -> int:
    bad_sent = sum(kinds[k] for k in BAD_KINDS)
    expected = Counter({BAD_KINDS[k]: kinds[k] for k in BAD_KINDS if kinds[k]})
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("events in", f"{sent:,}")
    table.add_row("valid", f"{c.valid:,}")
    table.add_row("rejected", f"{c.rejected_total:,}")
    for reason, n in c.rejected.most_common():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("predictions", f"{c.predictions:,} ({len(c.prediction_ids):,} distinct ids)")
    table.add_row("throughput", f"{sent / secs:,.0f} events/s offered")
    table.add_row("latency p50 / p99 (produce → prediction)",
                  f"{c.latency(50):.1f} / {c.latency(99):.1f} ms")
    table.add_row("latency p50 / p99 (inside modelstream)",
                  f"{c.latency(50, 'svc'):.1f} / {c.latency(99, 'svc'):.1f} ms")
    console.print(table)
    ok = (
        c.valid + c.rejected_total == sent
        and c.rejected_total == bad_sent
        and len(c.prediction_ids) == c.valid
        and c.rejected == expected
    )
    if ok:
        console.print(
            f"[green]reconciled: {sent:,} in = {c.valid:,} valid + {c.rejected_total:,} "
            "rejected; every valid event has its prediction[/green]"
        )
        return 0
    console.print(f"[red]not reconciled: in {sent}, valid {c.valid}, rejected {dict(c.rejected)} "
                  f"(expected {dict(expected)}), predictions {len(c.prediction_ids)}[/red]")
    return 1
