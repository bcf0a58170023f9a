"""Kafka clients and topic administration, configured once from :class:`Settings`."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .errors import StackError
from .settings import Settings
from .topics import ALL_TOPICS

__all__ = [
    "THROUGHPUT_CONSUMER",
    "THROUGHPUT_PRODUCER",
    "consumer",
    "create_topics",
    "producer",
    "topic_partitions",
]

log = logging.getLogger(__name__)

# Consumer-group joins take ~23 s with librdkafka's default session timeout on some brokers;
# 6 s keeps restarts and rebalances quick while tolerating a busy 2-core machine.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 20,
    "statistics.interval.ms": 5000,
    "log.connection.close": False,  # a broker closing idle connections is not news
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # Retries after a lost ack then never write a record twice into a partition.
    "enable.idempotence": True,
    "linger.ms": 2,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 500000,
    "log.connection.close": False,
}


# For services off the latency-critical path — join (its outcomes come seconds to days after
# the prediction) and monitor (its windows are seconds long): fewer, larger fetches and produce
# requests, traded for up to ~0.1 s per hop. Fetches are most of a broker's work at a steady
# load: on the embedded broker, each costs it CPU in proportion to the topics' size.
THROUGHPUT_CONSUMER: dict[str, Any] = {"fetch.wait.max.ms": 100, "fetch.min.bytes": 65536}
THROUGHPUT_PRODUCER: dict[str, Any] = {"linger.ms": 20}


def producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(settings.kafka_config(**{**PRODUCER_DEFAULTS, **overrides}))


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    conf = {**CONSUMER_DEFAULTS, "group.id": group_id, **overrides}
    return Consumer(settings.kafka_config(**conf))


def topic_partitions(settings: Settings, timeout: float = 5.0) -> dict[str, int]:
    admin = AdminClient(settings.kafka_config())
    md = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items() if not name.startswith("__")}


def create_topics(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Create every modelstream topic that does not exist yet; return name → partitions."""
    admin = AdminClient(settings.kafka_config())
    existing = topic_partitions(settings, timeout)
    topics = settings.topics
    wanted = [
        NewTopic(
            topics.name(base),
            num_partitions=topics.partitions_for(base, settings.partitions),
            replication_factor=settings.replication_factor,
            config=topics.config_for(base),
        )
        for base in ALL_TOPICS
        if topics.name(base) not in existing
    ]
    if wanted:
        for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
            try:
                fut.result()
                log.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a racing replica made it
                    raise StackError(f"cannot create topic {name}: {exc}") from exc
    return {t: n for t, n in topic_partitions(settings, timeout).items() if t in topics.all()}
