"""``modelstream produce`` and ``modelstream tail``: JSON lines in and out of a topic."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO

import orjson
from confluent_kafka import Consumer, TopicPartition

from ..runtime import kafka
from ..runtime.errors import DecodeError
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.settings import Settings

__all__ = ["produce_lines", "tail"]


def produce_lines(
    settings: Settings, topic_base: str, lines: Iterable[str], key_field: str | None
) -> tuple[int, int]:
    """Produce each JSON line, keyed by ``key_field``; returns (sent, skipped blank/invalid)."""
    producer = kafka.producer(settings)
    topic = settings.topics.name(topic_base)
    sent = skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        key = None
        if key_field:
            try:
                value = orjson.loads(line).get(key_field)
                key = str(value) if value is not None else None
            except (orjson.JSONDecodeError, AttributeError):
                skipped += 1  # still sent: ingest dead-letters it with a reason
        producer.produce(topic, line.encode(), key)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return sent, skipped


def tail(
    settings: Settings, topic_base: str, *, count: int | None, from_beginning: bool,
    follow: bool, out: IO[str] = sys.stdout, idle_seconds: float = 2.0,
) -> int:
    """Print records as JSON lines (Avro decoded); returns how many were printed."""
    topic = settings.topics.name(topic_base)
    decoder = EventDecoder(topic_base, max_bytes=1 << 24, registry_url=settings.schema_registry_url)
    as_json = EventEncoder(topic_base, "json").encode  # bytes fields print as base64
    consumer = Consumer(settings.kafka_config(**{"group.id": "modelstream-tail",
                                                 "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = []
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            start = low if from_beginning else high
            if count is not None and not from_beginning:
                start = max(low, high - count)
            parts.append(TopicPartition(topic, p, start))
        consumer.assign(parts)
        printed = 0
        last = time.monotonic()
        while count is None or printed < count:
            msg = consumer.poll(0.2)
            if msg is None:
                if not follow and time.monotonic() - last > idle_seconds:
                    break
                continue
            if msg.error():
                continue
            last = time.monotonic()
            try:
                record = decoder.decode(msg.value())
            except DecodeError as exc:
                record = {"undecodable": exc.reason, "detail": exc.detail}
            line = as_json(record) if "undecodable" not in record else orjson.dumps(record)
            out.write(line.decode() + "\n")
            out.flush()
            printed += 1
        return printed
    finally:
        consumer.close()
