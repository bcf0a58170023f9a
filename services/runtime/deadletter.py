"""Dead-lettering a consumed record: the original bytes, where they came from, and why."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from . import metrics
from .loop import Output
from .serde import TOO_LARGE, EventEncoder, dead_letter
from .settings import Settings

__all__ = ["TOO_LARGE_KEPT", "DeadLetters"]

# An oversize record keeps only its head in the dead letter (``payload_truncated``, with
# ``payload_size`` the original length): it cannot be replayed as it is anyway, and copying it
# whole would let a flood of them cost the DLQ (and the service producing it) many times more
# than the valid records beside them.
TOO_LARGE_KEPT = 4096


class DeadLetters:
    """Builds DLQ records for one service and counts them by reason."""

    def __init__(self, settings: Settings, service: str, base_topic: str) -> None:
        self.service = service
        self.topic = settings.topics.name(base_topic)
        self.encoder = EventEncoder(base_topic, settings.output_format,
                                    settings.schema_registry_url)
        self._counters: dict[str, Any] = {}

    def output(self, msg: Message, reason: str, detail: str, now_ms: int) -> Output:
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = metrics.EVENTS_REJECTED.labels(self.service, reason)
        counter.inc()
        record = dead_letter(
            msg.value(), topic=msg.topic() or "", partition=msg.partition() or 0,
            offset=msg.offset() or 0, reason=reason, detail=detail, service=self.service,
            now_ms=now_ms, max_payload_bytes=TOO_LARGE_KEPT if reason == TOO_LARGE else None,
        )
        return Output(self.topic, self.encoder.encode(record), msg.key())
