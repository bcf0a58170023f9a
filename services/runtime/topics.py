"""Every topic name, in one place. Names take ``MODELSTREAM_TOPIC_PREFIX`` in front."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL_TOPICS", "Topics"]

FEATURES = "features"
FEATURES_VALID = "features.valid"
FEATURES_DLQ = "features.dlq"
PREDICTIONS = "predictions"
OUTCOMES = "outcomes"
OUTCOMES_DLQ = "outcomes.dlq"
PREDICTIONS_LABELED = "predictions.labeled"
MODEL_EVENTS = "model.events"
MONITOR_METRICS = "monitor.metrics"
MONITOR_ALERTS = "monitor.alerts"
RETRAIN_REQUESTS = "retrain.requests"
RETRAIN_JOBS = "retrain.jobs"

ALL_TOPICS: tuple[str, ...] = (
    FEATURES,
    FEATURES_VALID,
    FEATURES_DLQ,
    PREDICTIONS,
    OUTCOMES,
    OUTCOMES_DLQ,
    PREDICTIONS_LABELED,
    MODEL_EVENTS,
    MONITOR_METRICS,
    MONITOR_ALERTS,
    RETRAIN_REQUESTS,
    RETRAIN_JOBS,
)

# The registry is replayed from the start by every service, so it keeps one ordered partition.
SINGLE_PARTITION: frozenset[str] = frozenset({MODEL_EVENTS})
# The registry is its log: replaying model.events must always reach the first registration.
KEEP_FOREVER: frozenset[str] = frozenset({MODEL_EVENTS})


@dataclass(frozen=True)
class Topics:
    """Resolved topic names for one prefix."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def features(self) -> str:
        return self.name(FEATURES)

    @property
    def features_valid(self) -> str:
        return self.name(FEATURES_VALID)

    @property
    def features_dlq(self) -> str:
        return self.name(FEATURES_DLQ)

    @property
    def predictions(self) -> str:
        return self.name(PREDICTIONS)

    @property
    def outcomes(self) -> str:
        return self.name(OUTCOMES)

    @property
    def model_events(self) -> str:
        return self.name(MODEL_EVENTS)

    @property
    def predictions_labeled(self) -> str:
        return self.name(PREDICTIONS_LABELED)

    @property
    def monitor_alerts(self) -> str:
        return self.name(MONITOR_ALERTS)

    @property
    def retrain_requests(self) -> str:
        return self.name(RETRAIN_REQUESTS)

    @property
    def retrain_jobs(self) -> str:
        return self.name(RETRAIN_JOBS)

    def all(self) -> list[str]:
        return [self.name(t) for t in ALL_TOPICS]

    def partitions_for(self, base: str, default: int) -> int:
        return 1 if base in SINGLE_PARTITION else default

    def config_for(self, base: str) -> dict[str, str]:
        """Topic-level configuration set at creation (the broker's defaults otherwise)."""
        return {"retention.ms": "-1", "retention.bytes": "-1"} if base in KEEP_FOREVER else {}
