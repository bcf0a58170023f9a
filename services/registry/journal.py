"""Reading and appending ``model.events``: replay to the end, follow live, publish durably.

The topic has one partition, so every reader sees one total order of every model's events; it is
read by assignment (no consumer group), always from the first record, because the fold needs all
of it. A record that is not a model event is skipped with a warning: the registry is not a place
for dead letters, and skipping keeps every reader's fold identical.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from ..runtime import kafka, topics
from ..runtime.errors import DecodeError
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.settings import Settings
from .events import ModelEvent, now_ms
from .exceptions import RegistryError
from .state import RegistryState

__all__ = ["RegistryFollower", "publish_events", "replay"]

log = logging.getLogger(__name__)

_MAX_RECORD_BYTES = 16 << 20  # a card with a large reference profile still fits


def publish_events(
    settings: Settings, events: list[ModelEvent], producer: Producer | None = None
) -> None:
    """Append ``events`` in order and wait for the broker to acknowledge every one.

    Raises ``RegistryError`` when any record is not acknowledged: a transition that is not on the
    topic did not happen.
    """
    encoder = EventEncoder(
        topics.MODEL_EVENTS, settings.output_format, settings.schema_registry_url,
        topic=settings.topics.model_events,
    )
    own = producer is None
    # Not idempotent: its set-up costs a broker round trip of ~0.5 s per CLI call, and the fold
    # already ignores a repeated transition; one request in flight keeps the order on retries.
    producer = producer or kafka.producer(settings, **{
        "linger.ms": 0, "enable.idempotence": False, "max.in.flight.requests.per.connection": 1,
    })
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for e in events:
        producer.produce(
            settings.topics.model_events, encoder.encode(e.to_record()), e.key,
            on_delivery=delivered,
        )
    left = producer.flush(30)
    if own:
        del producer
    if failures or left:
        detail = "; ".join(failures) or f"{left} records unacknowledged after 30 s"
        raise RegistryError(f"model.events: append failed: {detail}")


class RegistryFollower:
    """Reads ``model.events`` from the start and folds it into :attr:`state`.

    :meth:`catch_up` reads to the end as it is now (what a starting service does);
    :meth:`poll` returns whatever arrived since, already applied to :attr:`state`.
    """

    def __init__(self, settings: Settings, state: RegistryState | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.model_events
        self.state = state or RegistryState()
        self._decoder = EventDecoder(
            topics.MODEL_EVENTS, max_bytes=_MAX_RECORD_BYTES,
            registry_url=settings.schema_registry_url,
        )
        self._consumer = Consumer(settings.kafka_config(**{
            **kafka.CONSUMER_DEFAULTS,
            # Never committed: the fold always starts from the first record.
            "group.id": f"modelstream-registry-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "statistics.interval.ms": 0,
        }))
        self._assigned = False
        self._at_end = False

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RegistryFollower:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def catch_up(self, timeout: float = 15.0) -> RegistryState:
        """Read every record up to the current end of the topic."""
        _, high = self._watermarks(timeout)
        deadline = time.monotonic() + timeout
        # Done at the fetch's end of partition, and not before the high watermark: some brokers
        # (the embedded tansu) answer ListOffsets with the last batch's base offset, so the
        # watermark alone can stop a replay inside the last batch.
        self._at_end = False
        while not (self._at_end and self.state.offset >= high):
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"{self.topic}: replay stopped at offset {self.state.offset} of {high}"
                    f" after {timeout:.0f} s"
                )
            self.poll(0.5)
        return self.state

    def poll(self, timeout: float = 0.0, limit: int = 500) -> list[ModelEvent]:
        """New events since the last call (applied to :attr:`state`): what is already fetched, up
        to ``limit``, or else the first to arrive within ``timeout``."""
        applied: list[ModelEvent] = []
        if not self._assigned:
            self._watermarks(max(timeout, 5.0))
        msgs = self._consumer.consume(limit, 0)
        if not msgs and timeout > 0:
            first = self._consumer.poll(timeout)  # returns as soon as anything arrives
            msgs = [first] if first is not None else []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end = True
                    continue
                if err.fatal():
                    raise RegistryError(f"{self.topic}: {err}")
                log.warning("%s: %s", self.topic, err)
                continue
            self._at_end = False
            self.state.offset = (msg.offset() or 0) + 1
            try:
                event = ModelEvent.from_record(self._decoder.decode(msg.value()))
            except (DecodeError, RegistryError) as exc:
                log.warning("%s offset %s skipped: %s", self.topic, msg.offset(), exc)
                continue
            entry = self.state.apply(event)
            if not entry.applied:
                log.info("model.events: %s not applied: %s", event.describe(), entry.note)
            applied.append(event)
        return applied

    def read_up_to(self, timeout: float = 5.0) -> int | None:
        """A time (epoch ms) up to which every record of the topic has been read, or ``None``.

        Asks the broker for the end of the topic (a round trip, ListOffsets) and compares it with
        what is read: when nothing is left, every record appended before the question was asked
        is in :attr:`state`. The high watermark of the last fetch response counts too (some
        brokers, the embedded tansu among them, answer ListOffsets with the last batch's base
        offset). Safe to call from another thread than :meth:`poll`'s."""
        if not self._assigned:
            return None
        asked = now_ms()
        tp = TopicPartition(self.topic, 0)
        try:
            _, high = self._consumer.get_watermark_offsets(tp, timeout=timeout)
            _, fetched = self._consumer.get_watermark_offsets(tp, cached=True)
        except Exception as exc:  # KafkaException: broker down; the caller asks again
            log.debug("%s: no watermark: %s", self.topic, exc)
            return None
        return asked if high >= 0 and self.state.offset >= max(high, fetched) else None

    def _watermarks(self, timeout: float) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=timeout
            )
        except Exception as exc:  # KafkaException: unknown topic, broker down
            raise RegistryError(f"cannot read {self.topic}: {exc}") from exc
        if not self._assigned:
            # An explicit offset: OFFSET_BEGINNING costs librdkafka an extra ~0.5 s lookup.
            self._consumer.assign([TopicPartition(self.topic, 0, max(low, 0))])
            self._assigned = True
        return int(low), int(high)


def replay(settings: Settings, timeout: float = 15.0) -> RegistryState:
    """The registry state now: ``model.events`` replayed from the first record to the end."""
    with RegistryFollower(settings) as follower:
        return follower.catch_up(timeout)
