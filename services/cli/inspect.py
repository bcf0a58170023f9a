"""What ``status`` and ``topics`` read off a running stack: topics, offsets, lag, health."""

from __future__ import annotations

import urllib.request
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from ..runtime.settings import Settings
from ..stack.stack import DATA_PLANE, read_state

__all__ = ["group_lag", "service_health", "status_report", "topic_offsets"]

# The consumer group of each service and the topic it consumes (base name).
GROUPS: dict[str, tuple[str, ...]] = {
    "ingest": ("features",),
    "predict": ("features.valid",),
    "join": ("predictions", "outcomes"),
    "monitor": ("predictions", "predictions.labeled"),
}


def topic_offsets(settings: Settings, timeout: float = 5.0) -> dict[str, dict[int, int]]:
    """Topic → partition → high watermark (messages written so far, per partition)."""
    names = settings.topics.all()
    probe = Consumer(settings.kafka_config(**{"group.id": "modelstream-inspect"}))
    try:
        md = probe.list_topics(timeout=timeout)
        out: dict[str, dict[int, int]] = {}
        for name in names:
            if name not in md.topics:
                continue
            out[name] = {
                p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)[1]
                for p in md.topics[name].partitions
            }
        return out
    finally:
        probe.close()


def group_lag(
    settings: Settings, offsets: dict[str, dict[int, int]], timeout: float = 5.0
) -> dict[str, dict[str, Any]]:
    admin = AdminClient(settings.kafka_config())
    report: dict[str, dict[str, Any]] = {}
    for service, bases in GROUPS.items():
        group = f"{settings.topic_prefix}modelstream-{service}"
        names = [settings.topics.name(b) for b in bases]
        highs = {(t, p): h for t in names for p, h in offsets.get(t, {}).items()}
        request = [ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p) for t, p in highs])]
        committed: dict[tuple[str, int], int] = {}
        try:
            fut = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
            for tp in fut.result().topic_partitions:
                committed[(tp.topic, tp.partition)] = max(tp.offset, 0)
        except Exception:  # the group has not committed yet
            committed = {}
        lag = sum(max(h - committed.get(tp, 0), 0) for tp, h in highs.items())
        report[service] = {"group": group, "topic": ", ".join(names), "lag": lag,
                           "committed": sum(committed.values())}
    return report


def service_health(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, ep in state.get("services", {}).items():
        try:
            with urllib.request.urlopen(ep["ready"], timeout=2) as resp:
                body = orjson.loads(resp.read())
                out[name] = {"status": "ready", **ep, **body}
        except urllib.error.HTTPError as exc:
            out[name] = {"status": "starting" if exc.code == 503 else f"http {exc.code}", **ep}
        except OSError:
            out[name] = {"status": "down", **ep}
    return out


def status_report(settings: Settings) -> dict[str, Any]:
    state = read_state(settings) or {}
    offsets = topic_offsets(settings)
    return {
        "broker": settings.kafka_bootstrap,
        "redis": state.get("redis", "external" if settings.redis_url else None),
        "embedded": state.get("embedded", {}),
        "topics": {t: {"partitions": len(p), "messages": sum(p.values())}
                   for t, p in offsets.items()},
        "consumer_groups": group_lag(settings, offsets),
        "services": service_health(state) if state else {
            name: {"status": "unknown (not started by modelstream up)"} for name in DATA_PLANE
        },
    }
