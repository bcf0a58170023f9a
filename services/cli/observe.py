"""``modelstream metrics`` and ``modelstream alerts``: the monitor's view, from its topics."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from ..runtime import topics
from ..runtime.errors import DecodeError
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings

__all__ = ["latest_alerts", "latest_snapshots", "print_alerts", "print_metrics"]


def _read_tail(settings: Settings, base: str, last: int, timeout: float = 5.0) -> list[dict]:
    """Up to the last ``last`` records of each partition, decoded, in time order."""
    topic = settings.topics.name(base)
    decoder = EventDecoder(base, max_bytes=1 << 24, registry_url=settings.schema_registry_url)
    consumer = Consumer(settings.kafka_config(**{"group.id": "modelstream-observe",
                                                 "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        parts = []
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            parts.append(TopicPartition(topic, p, max(low, high - last)))
        consumer.assign(parts)
        out: list[dict] = []
        idle_until = time.monotonic() + 1.0
        while time.monotonic() < idle_until:
            msgs = consumer.consume(1000, 0.2)
            for m in msgs:
                if m.error():
                    continue
                try:
                    out.append(decoder.decode(m.value()))
                except DecodeError:
                    continue
            if msgs:
                idle_until = time.monotonic() + 0.5
        return out
    finally:
        consumer.close()


def latest_snapshots(settings: Settings) -> dict[tuple[str, str, str], dict[str, Any]]:
    snaps: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in sorted(_read_tail(settings, topics.MONITOR_METRICS, 500),
                    key=lambda r: r["emitted_at"]):
        snaps[(s["model"], s["model_version"], s.get("role") or "")] = s
    return snaps


def latest_alerts(settings: Settings) -> tuple[list[dict], list[dict]]:
    """(alerts firing now, every alert event in time order)."""
    events = sorted(_read_tail(settings, topics.MONITOR_ALERTS, 5000),
                    key=lambda a: a["raised_at"])
    state: dict[str, dict] = {}
    for a in events:
        if a["state"] == "firing":
            state[a["alert_id"]] = a
        else:
            state.pop(a["alert_id"], None)
    return list(state.values()), events


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def print_metrics(settings: Settings, console: Console) -> dict[str, Any]:
    snaps = latest_snapshots(settings)
    if not snaps:
        console.print("no monitor snapshots yet (is the monitor running, and traffic flowing?)")
    for (model, version, role), s in sorted(snaps.items()):
        table = Table(title=f"{model} v{version} ({role}) — {s['predictions']:,} predictions, "
                      f"{s['labeled']:,} labeled", header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in sorted(s["metrics"].items()):
            table.add_row(name, _fmt(value))
        console.print(table)
        drift = Table(title="drift against the training reference", header_style="bold")
        drift.add_column("feature")
        stats = sorted({k.split(".", 1)[1] for k in s["feature_drift"]})
        for st in stats:
            drift.add_column(st, justify="right")
        features = sorted({k.split(".", 1)[0] for k in s["feature_drift"]})
        for f in features:
            drift.add_row(f, *(_fmt(s["feature_drift"].get(f"{f}.{st}")) for st in stats))
        if features:
            console.print(drift)
    return {"|".join(k): v for k, v in snaps.items()}


def print_alerts(settings: Settings, console: Console, history: bool) -> list[dict]:
    firing, events = latest_alerts(settings)
    shown = events if history else firing
    title = "alert events" if history else "alerts firing now"
    table = Table(title=f"{title} ({len(shown)})", header_style="bold")
    for col in ("raised", "state", "severity", "kind", "message"):
        table.add_column(col)
    for a in shown[-200:]:
        raised = time.strftime("%H:%M:%S", time.localtime(a["raised_at"] / 1000))
        table.add_row(raised, a["state"], a["severity"], a["kind"], a["message"])
    console.print(table)
    return shown
