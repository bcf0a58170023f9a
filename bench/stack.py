"""The broker, Valkey and demo model the benchmark runs on, and fresh topics per run.

By default the embedded broker and Valkey, started for the run. ``--kafka`` / ``--redis`` (or
``MODELSTREAM_BENCH_KAFKA`` / ``MODELSTREAM_BENCH_REDIS``) point it at running ones instead —
an Apache Kafka cluster, to measure latency on the broker production will use. Every
measurement makes topics (and Redis keys) under a prefix of its own and deletes them after.
Client settings beyond the address (SASL, TLS, replication factor) come from the usual
``MODELSTREAM_*`` variables.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services.models import ArtifactStore
from services.models.agrawal import ensure_demo_model
from services.runtime import kafka
from services.runtime.service import redis_client
from services.runtime.settings import Settings
from services.stack.embedded import EmbeddedServer, start_broker, start_valkey
from services.stack.processes import free_port

__all__ = ["BenchStack", "produce_all", "settings_env"]

log = logging.getLogger(__name__)


class BenchStack:
    """Broker and Valkey on free ports (or the given ones), in a temporary directory, with the
    demo model."""

    def __init__(self, kafka_bootstrap: str | None = None, redis_url: str | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="modelstream-bench-")
        self.root = Path(self._tmp.name)
        self.broker: EmbeddedServer | None = None
        self.valkey: EmbeddedServer | None = None
        self.kafka_url = kafka_bootstrap
        self.redis_url = redis_url
        self.store = ArtifactStore(self.root / "artifacts")
        self._count = itertools.count(1)
        self._producer: Producer | None = None

    def __enter__(self) -> BenchStack:
        try:
            if self.kafka_url is None:
                self.broker = start_broker(free_port(), self.root)
                self.kafka_url = self.broker.url
            if self.redis_url is None:
                self.valkey = start_valkey(free_port(), self.root)
                self.redis_url = self.valkey.url
            ensure_demo_model(self.store)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def producer(self, s: Settings) -> Producer:
        """One producer for writing every run's input: a new one takes ~0.5 s to get going."""
        if self._producer is None:
            self._producer = kafka.producer(s)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:  # its connections go before the broker does
            self._producer.flush(10)
            self._producer.close()
            self._producer = None
        for server in (self.broker, self.valkey):
            if server is not None:
                server.stop()
        self._tmp.cleanup()

    @property
    def external(self) -> bool:
        """The broker is one the bench did not start."""
        return self.broker is None and self.kafka_url is not None

    def describe(self) -> str:
        kafka_side = (f"the external broker at {self.kafka_url}" if self.external
                      else "the embedded broker")
        redis_side = "the embedded Valkey" if self.valkey is not None else "an external Redis"
        return f"{kafka_side} and {redis_side}"

    def settings(self, name: str, extra_topics: Sequence[str] = (), **overrides: Any) -> Settings:
        """Settings with a topic prefix of their own; every topic created, ``extra_topics`` too."""
        assert self.kafka_url is not None and self.redis_url is not None
        prefix = f"b{next(self._count)}-{name}-{uuid.uuid4().hex[:6]}."
        s = Settings(
            kafka_bootstrap=self.kafka_url,
            redis_url=self.redis_url,
            topic_prefix=prefix,
            data_dir=self.root / "data",
            artifact_dir=self.store.root,
            metrics_port=0,
            **overrides,
        )
        kafka.create_topics(s)
        if extra_topics:
            admin = AdminClient(s.kafka_config())
            new = [NewTopic(s.topics.name(t), num_partitions=s.partitions,
                            replication_factor=s.replication_factor) for t in extra_topics]
            for fut in admin.create_topics(new, request_timeout=10).values():
                fut.result()
        return s

    def drop_topics(self, s: Settings) -> None:
        """Free the broker's memory (its storage is RAM) once a measurement is done."""
        admin = AdminClient(s.kafka_config())
        names = [t for t in admin.list_topics(timeout=5).topics if t.startswith(s.topic_prefix)]
        if not names:
            return
        for name, fut in admin.delete_topics(names, request_timeout=10).items():
            try:
                fut.result()
            except Exception as exc:  # only memory is at stake
                log.debug("cannot delete %s: %s", name, exc)

    def drop_keys(self, s: Settings) -> None:
        """Delete the Redis keys of a measurement, so Valkey stays near empty for the next."""
        client = redis_client(s)
        batch: list[Any] = []
        for key in client.scan_iter(match=f"{s.topic_prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)


def settings_env(s: Settings) -> dict[str, str]:
    """The environment a ``modelstream run <service>`` child needs for these settings."""
    return {
        "MODELSTREAM_KAFKA_BOOTSTRAP": s.kafka_bootstrap or "",
        "MODELSTREAM_REDIS_URL": s.redis_url or "",
        "MODELSTREAM_TOPIC_PREFIX": s.topic_prefix,
        "MODELSTREAM_PARTITIONS": str(s.partitions),
        "MODELSTREAM_DATA_DIR": str(s.data_dir),
        "MODELSTREAM_ARTIFACT_DIR": str(s.artifacts),
        "MODELSTREAM_METRICS_PORT": "0",
        "MODELSTREAM_OUTPUT_FORMAT": s.output_format,
    }


def produce_all(
    s: Settings, topic: str, records: Sequence[tuple[bytes, bytes]],
    producer: Producer | None = None,
) -> None:
    """Write records to a topic and wait until the broker has every one.

    Pass a ``producer`` to reuse it (``BenchStack.producer``): a new one costs ~0.5 s.
    """
    producer = producer or kafka.producer(s)
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} records to {topic} were not acknowledged")

