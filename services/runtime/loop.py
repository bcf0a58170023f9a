"""The consume-batch → process → produce → commit loop every data-plane service runs.

Delivery is at-least-once: offsets of a batch are committed only after every record the batch
produced has been acknowledged by the broker. A record that fails delivery stops the service
(the supervisor or Kubernetes restarts it, and the batch is consumed again). SIGTERM finishes
the batch in hand, flushes, commits and leaves the group.

Batches adapt to load: the loop blocks for the first record, then drains whatever else is
already fetched, up to ``batch_size``. At low load a batch is one record (low latency); at
high load batches fill up (high throughput).
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, TopicPartition

from . import kafka, metrics
from .errors import ModelstreamError
from .settings import Settings

__all__ = ["DeliveryFailed", "Output", "Outputs", "StreamLoop"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Output:
    topic: str
    value: bytes
    key: bytes | str | None = None
    timestamp: int = 0  # epoch ms of the record; 0: now (a copy of a source record keeps its own)


class Outputs(list[Output]):
    """A handler's outputs and what to do once the broker has acknowledged every one of them:
    ``on_delivered`` runs then, before the batch's offsets are committed (never, if the
    process dies first). A handler may return a plain list instead."""

    __slots__ = ("on_delivered",)

    def __init__(self, outputs: Sequence[Output] = (),
                 on_delivered: Callable[[], None] | None = None) -> None:
        super().__init__(outputs)
        self.on_delivered = on_delivered


class DeliveryFailed(ModelstreamError):
    """The broker did not acknowledge a record: the batch is not committed."""


MAX_IN_FLIGHT = 2  # batches produced but not yet fully acknowledged


class _Pending:
    """A batch whose outputs are on their way: its offsets wait for every acknowledgement."""

    __slots__ = ("after", "counts", "failures", "offsets", "remaining")

    def __init__(self, offsets: dict[tuple[str, int], int], remaining: int,
                 after: Callable[[], None] | None) -> None:
        self.offsets = offsets
        self.remaining = remaining
        self.after = after
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}

    def delivered(self, err: KafkaError | None, _msg: Message) -> None:
        self.remaining -= 1
        if err is not None:
            self.failures.append(str(err))


Handler = Callable[[list[Message]], Sequence[Output]]


class StreamLoop:
    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        group_id: str,
        topics: list[str],
        handler: Handler,
        on_idle: Callable[[], Sequence[Output] | None] | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        producer_overrides: dict[str, Any] | None = None,
        commit_each_batch: bool = True,
        on_close: Callable[[], None] | None = None,
        start_offsets: Callable[[str, int], int | None] | None = None,
        on_exit: Callable[[], None] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        batch_size: int | None = None,
    ) -> None:
        """``on_idle`` runs between batches and may return records to publish (flushed before
        the next batch). A service that checkpoints its own state turns ``commit_each_batch``
        off, commits :meth:`positions` when it checkpoints, and passes ``start_offsets`` to
        resume each assigned partition where its checkpoint says. ``on_exit`` runs when the
        loop ends, cleanly or not (a service stops its threads there). Up to ``max_in_flight``
        batches may wait for their acknowledgements while the next ones are processed.
        ``batch_size``: the largest batch, if not the settings' ``batch_size``.
        ``consumer_overrides`` and ``producer_overrides`` change the clients' defaults (the
        user's ``kafka_options`` still win)."""
        self.settings = settings
        self.service = service
        self.topics = topics
        self.handler = handler
        self.on_idle = on_idle
        self.commit_each_batch = commit_each_batch
        self.on_close = on_close
        self.start_offsets = start_offsets
        self.on_exit = on_exit
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size or settings.batch_size
        self.assigned: list[tuple[str, int]] = []
        self._running = False
        self._in_flight: deque[_Pending] = deque()
        self._committed: dict[tuple[str, int], int] = {}
        self.consumer = kafka.consumer(
            settings, group_id, stats_cb=self._on_stats, **(consumer_overrides or {})
        )
        self.producer = kafka.producer(settings, **(producer_overrides or {}))
        self._in = {t: metrics.EVENTS_IN.labels(service, t) for t in topics}
        self._out: dict[str, Any] = {}
        self._batch_seconds = metrics.BATCH_SECONDS.labels(service)

    # -- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def stop(self) -> None:
        self._running = False

    def ready(self) -> dict[str, object]:
        return {"ready": self._running and bool(self.assigned), "assigned": len(self.assigned)}

    def run(self, max_idle_seconds: float | None = None) -> None:
        """Process until :meth:`stop` (or, for tests and benchmarks, until idle that long)."""
        self.consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._running = True
        last_data = time.monotonic()
        clean = False
        try:
            while self._running:
                batch = self._next_batch()
                if batch:
                    self._process(batch)
                    last_data = time.monotonic()
                else:
                    self.producer.poll(0)
                    self._settle()
                    if max_idle_seconds is not None and (
                        time.monotonic() - last_data > max_idle_seconds
                    ):
                        break
                if self.on_idle is not None:
                    extra = self.on_idle()
                    if extra:
                        self._send(extra, {})
            clean = True
        finally:
            self._close(clean)

    # -- the loop body ---------------------------------------------------------------------

    def _next_batch(self) -> list[Message]:
        size = self.batch_size
        batch = self.consumer.consume(size, timeout=0)
        if not batch:
            first = self.consumer.poll(0.2)
            if first is None:
                return []
            batch = [first, *self.consumer.consume(size - 1, timeout=0)]
        records = []
        for msg in batch:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise ModelstreamError(f"fatal consumer error: {err}")
            else:
                log.warning("consumer error: %s", err)
        return records

    def _process(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        for topic, n in Counter(msg.topic() or "" for msg in batch).items():
            self._in[topic].inc(n)
        self._send(self.handler(batch), offsets)
        self._batch_seconds.observe(time.perf_counter() - started)

    def _send(self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int]) -> None:
        """Produce a batch's outputs without waiting for them: the acknowledgements of up to
        ``max_in_flight`` batches overlap with the next batches' work. A batch's offsets are
        committed once all its outputs are acknowledged, batches in order."""
        pending = _Pending(offsets, len(outputs), getattr(outputs, "on_delivered", None))
        produce = self.producer.produce
        report = pending.delivered
        for out in outputs:
            while True:
                try:
                    produce(out.topic, out.value, out.key, on_delivery=report,
                            timestamp=out.timestamp)
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: let deliveries drain
            pending.counts[out.topic] = pending.counts.get(out.topic, 0) + 1
        self._in_flight.append(pending)
        self.producer.poll(0)
        self._settle(wait=len(self._in_flight) > self.max_in_flight)

    def _settle(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Commit the leading batches whose outputs are all acknowledged (all, if ``wait``).

        ``timeout`` counts the time spent waiting for acknowledgements, not the wall clock: a
        process frozen meanwhile (SIGSTOP, a suspended VM, a long GC pause) has not waited, and
        on waking it gives the broker its full ``timeout`` before calling the records lost."""
        waited = 0.0
        while self._in_flight:
            head = self._in_flight[0]
            if head.failures:
                detail = "; ".join(head.failures[:3])
                raise DeliveryFailed(f"{self.service}: delivery failed, batch not committed: "
                                     f"{detail}")
            if head.remaining > 0:
                if not wait:
                    return
                if waited > timeout:
                    raise DeliveryFailed(f"{self.service}: {head.remaining} records "
                                         f"unacknowledged after {timeout:.0f}s")
                polled = time.monotonic()
                self.producer.poll(0.05)
                # A poll takes 0.05 s at most; longer, the process was not running.
                waited += min(time.monotonic() - polled, 0.1)
                continue
            self._in_flight.popleft()
            for topic, n in head.counts.items():
                counter = self._out.get(topic)
                if counter is None:
                    counter = self._out[topic] = metrics.EVENTS_OUT.labels(self.service, topic)
                counter.inc(n)
            if head.after is not None:
                head.after()
            self._commit(head.offsets)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        self._committed.update(offsets)
        if not self.commit_each_batch:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        # Asynchronous: a commit lost in a crash only means a replay, which ids make harmless.
        self.consumer.commit(offsets=tps, asynchronous=True)

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to process of every partition processed so far."""
        return dict(self._committed)

    def commit_positions(self) -> None:
        """Commit :meth:`positions` now, synchronously (services that checkpoint call it)."""
        self._commit_sync()

    def _commit_sync(self, only: set[tuple[str, int]] | None = None) -> None:
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in self._committed.items()
            if only is None or (t, p) in only
        ]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # a failed final commit means a replay, not a loss
                log.warning("final commit failed: %s", exc)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = [(p.topic, p.partition) for p in partitions]
        if self.start_offsets is not None:
            for p in partitions:
                start = self.start_offsets(p.topic, p.partition)
                if start is not None:
                    p.offset = start
            consumer.assign(partitions)
        log.info("assigned %s", ", ".join(f"{t}[{p}]" for t, p in self.assigned) or "nothing")

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.producer.flush(30)
        self._settle(wait=True)
        if self.commit_each_batch:
            self._commit_sync({(p.topic, p.partition) for p in partitions})
        self.assigned = []

    def _on_stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if pid != "-1" and lag >= 0:
                    metrics.CONSUMER_LAG.labels(self.service, topic, pid).set(lag)

    def _close(self, clean: bool) -> None:
        self._running = False
        try:
            self.producer.flush(10)
            if clean:
                self._settle(wait=True, timeout=10)
            if self.commit_each_batch:
                self._commit_sync()
            elif clean and self.on_close is not None:
                # Only after a clean stop does the service's state match the positions.
                self.on_close()
        finally:
            try:
                if self.on_exit is not None:
                    self.on_exit()
            finally:
                self.consumer.close()
                # Flushed above: closing frees its connections now, not when the collector
                # gets to the loop (its callbacks make cycles), which after a stopped broker
                # would keep reconnecting in a process that goes on (tests, the bench).
                self.producer.close()
        log.info("%s stopped", self.service)


