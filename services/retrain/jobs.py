"""``retrain.jobs`` and ``retrain.requests``: the coordinator's journal and its inbox.

Every step of a job is one record on ``retrain.jobs`` (keyed by model, so one model's steps stay
in order), acknowledged before the job goes on: the topic is the job's state, and a coordinator
that starts replays it (``replay_jobs``) to know which requests acted, which cooldowns run and
which jobs a crash interrupted. A request (``RetrainRequest``) is what ``modelstream retrain``,
an alert or the schedule puts on ``retrain.requests``; its ``request_id`` makes it act once.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from ..runtime import kafka, metrics, topics
from ..runtime.errors import DecodeError, ModelstreamError
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.settings import Settings

__all__ = [
    "STEPS",
    "TERMINAL",
    "JobLog",
    "JobState",
    "RetrainRequest",
    "job_id_for",
    "replay_jobs",
    "send_request",
]

STEPS: tuple[str, ...] = (
    "started", "data_gathered", "trained", "validated", "staged", "canary", "promoted",
    "watched", "rejected", "rolled_back", "failed", "ignored",
)
STATUS: dict[str, str] = {
    "promoted": "succeeded", "watched": "succeeded", "rejected": "rejected",
    "rolled_back": "rolled_back", "failed": "failed", "ignored": "cancelled",
}
# After these a job does no more work (a promoted job's champion is watched separately).
TERMINAL: frozenset[str] = frozenset(
    {"promoted", "watched", "rejected", "rolled_back", "failed", "ignored"}
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def job_id_for(request_id: str) -> str:
    """Deterministic: a request replayed after a crash names the same job."""
    return "j-" + hashlib.blake2b(request_id.encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class RetrainRequest:
    """A decoded ``retrain.requests`` record."""

    request_id: str
    model: str
    requested_by: str
    requested_at: int
    reason: str | None = None
    alert_id: str | None = None
    base_version: str | None = None
    window_start: int | None = None
    window_end: int | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def trigger(self) -> str:
        if self.alert_id:
            return f"alert:{self.alert_id}"
        return "schedule" if self.requested_by == "schedule" else "manual"

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> RetrainRequest:
        for name in ("request_id", "model", "requested_by"):
            if not isinstance(r.get(name), str) or not r[name]:
                raise DecodeError("bad_request", f"{name} must be a non-empty string")
        params = r.get("params") or {}
        if not isinstance(params, dict):
            raise DecodeError("bad_request", "params must be an object of strings")
        return cls(
            request_id=r["request_id"], model=r["model"], requested_by=r["requested_by"],
            requested_at=int(r.get("requested_at") or now_ms()), reason=r.get("reason"),
            alert_id=r.get("alert_id"), base_version=r.get("base_version"),
            window_start=r.get("window_start"), window_end=r.get("window_end"),
            params={str(k): str(v) for k, v in params.items()},
        )

    def record(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "model": self.model, "requested_by": self.requested_by,
            "requested_at": self.requested_at, "reason": self.reason, "alert_id": self.alert_id,
            "base_version": self.base_version, "window_start": self.window_start,
            "window_end": self.window_end, "params": dict(self.params),
        }


def send_request(settings: Settings, request: RetrainRequest) -> None:
    """Put ``request`` on ``retrain.requests`` (keyed by model) and wait for the ack."""
    encoder = EventEncoder(topics.RETRAIN_REQUESTS, settings.output_format,
                           settings.schema_registry_url, topic=settings.topics.retrain_requests)
    producer = kafka.producer(settings, **{"linger.ms": 0})
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer.produce(settings.topics.retrain_requests, encoder.encode(request.record()),
                     request.model.encode(), on_delivery=delivered)
    if producer.flush(30) or failures:
        raise ModelstreamError(f"retrain.requests: not acknowledged: {'; '.join(failures)}")


def manual_request(model: str, *, requested_by: str, reason: str | None,
                   params: dict[str, str] | None = None) -> RetrainRequest:
    return RetrainRequest(request_id=f"manual:{uuid.uuid4().hex}", model=model,
                          requested_by=requested_by, requested_at=now_ms(), reason=reason,
                          params=dict(params or {}))


@dataclass
class JobState:
    """What a job has done so far; each ``JobLog.step`` adds to it and publishes it."""

    job_id: str
    model: str
    request_id: str
    trigger: str
    started_at: int
    base_version: str | None = None
    new_version: str | None = None
    window_start: int | None = None
    window_end: int | None = None
    artifact_uri: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    step: str = "started"
    status: str = "running"
    reason: str | None = None
    error: str | None = None
    updated_at: int = 0

    def record(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "model": self.model, "status": self.status,
            "updated_at": self.updated_at, "request_id": self.request_id,
            "base_version": self.base_version, "new_version": self.new_version,
            "window_start": self.window_start, "window_end": self.window_end,
            "artifact_uri": self.artifact_uri,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "error": self.error, "step": self.step, "trigger": self.trigger,
            "reason": self.reason, "started_at": self.started_at,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> JobState:
        return cls(
            job_id=r["job_id"], model=r["model"], request_id=r.get("request_id") or "",
            trigger=r.get("trigger") or "manual",
            started_at=int(r.get("started_at") or r["updated_at"]),
            base_version=r.get("base_version"), new_version=r.get("new_version"),
            window_start=r.get("window_start"), window_end=r.get("window_end"),
            artifact_uri=r.get("artifact_uri"), metrics=dict(r.get("metrics") or {}),
            step=r.get("step") or "started", status=r["status"], reason=r.get("reason"),
            error=r.get("error"), updated_at=int(r["updated_at"]),
        )


class JobLog:
    """Publishes job steps to ``retrain.jobs``, each acknowledged before returning."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.retrain_jobs
        self._encoder = EventEncoder(topics.RETRAIN_JOBS, settings.output_format,
                                     settings.schema_registry_url, topic=self.topic)
        self._producer = kafka.producer(settings, **{"linger.ms": 0})

    def step(self, job: JobState, step: str, *, reason: str | None = None,
             error: str | None = None, **changes: Any) -> JobState:
        if step not in STEPS:
            raise ValueError(f"unknown job step {step!r}")
        metrics_update = changes.pop("metrics", None)
        for name, value in changes.items():
            setattr(job, name, value)
        if metrics_update:
            job.metrics.update(metrics_update)
        job.step, job.status = step, STATUS.get(step, "running")
        job.reason, job.error = reason, error
        job.updated_at = now_ms()
        self.publish(job.record())
        metrics.RETRAIN_STEPS.labels(job.model, step).inc()
        return job

    def publish(self, record: dict[str, Any]) -> None:
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        self._producer.produce(self.topic, self._encoder.encode(record),
                               record["model"].encode(), on_delivery=delivered)
        if self._producer.flush(30) or failures:
            raise ModelstreamError(f"retrain.jobs: not acknowledged: {'; '.join(failures)}")


def replay_jobs(settings: Settings, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every ``retrain.jobs`` record up to the current end, per partition in order.

    The end is the fetch's end of partition, not ListOffsets (see ``dataset.LabeledReader``).
    """
    topic = settings.topics.retrain_jobs
    decoder = EventDecoder(topics.RETRAIN_JOBS, max_bytes=1 << 20,
                           registry_url=settings.schema_registry_url)
    consumer = kafka.consumer(settings, f"modelstream-retrain-replay-{uuid.uuid4().hex[:8]}",
                              **{"enable.partition.eof": True, "statistics.interval.ms": 0})
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ModelstreamError(f"cannot read {topic}: it does not exist")
        pending = set(md.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(int(msg.partition() or 0))
                    continue
                try:
                    records.append(decoder.decode(msg.value()))
                except DecodeError:
                    continue  # not a job record: nothing to rebuild from it
        if pending:
            raise ModelstreamError(f"{topic}: replay did not reach the end in {timeout} s")
        return records
    finally:
        consumer.close()
