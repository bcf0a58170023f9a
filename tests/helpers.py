"""Reading and writing topics in tests, the way a user's client would."""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from services.runtime.serde import EventDecoder
from services.runtime.settings import Settings


def produce(settings: Settings, base: str, records: list[tuple[bytes | str | None, bytes]]) -> None:
    p = Producer(settings.kafka_config())
    topic = settings.topics.name(base)
    for key, value in records:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def event(event_id: str, entity: str, features: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "entity_id": entity, "event_time": 1_763_900_000_000,
         "model": "agrawal", "features": features, **extra}
    )


FULL = {"salary": 52000.0, "commission": 0.0, "age": 41, "elevel": 2, "car": 3,
        "zipcode": 1, "hvalue": 150000.0, "hyears": 12, "loan": 20000.0}


def read(settings: Settings, base: str, n: int, timeout: float = 30.0,
         decode: bool = True) -> list[Any]:
    """Read at least n records (from the beginning); returns as soon as n have arrived,
    then waits 0.5 s more so that extra (unexpected) records are seen too."""
    topic = settings.topics.name(base)
    c = Consumer(settings.kafka_config(**{"group.id": "test-reader", "enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    decoder = EventDecoder(base, max_bytes=1 << 24)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    settle: float | None = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error():
                    continue
                out.append(decoder.decode(m.value()) if decode else m)
            if len(out) >= n:
                settle = settle or time.monotonic() + 0.5
                if time.monotonic() >= settle:
                    break
        return out
    finally:
        c.close()
