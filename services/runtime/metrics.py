"""Every Prometheus metric name of the shared runtime, and the per-service HTTP endpoint.

Each service serves ``/metrics`` (Prometheus text), ``/healthz`` (alive) and ``/readyz`` (ready:
connected and assigned) on its own port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "ALERTS_FIRING",
    "ALERT_EVENTS",
    "BATCH_SECONDS",
    "CONCEPT_DRIFTS",
    "DASHBOARD_SCRAPES",
    "MODEL_LAST_TRANSITION",
    "DRIFT_THRESHOLD",
    "FEATURE_DRIFT",
    "MODEL_QUALITY",
    "MONITOR_EVENTS",
    "CONSUMER_LAG",
    "EVENTS_IN",
    "EVENTS_OUT",
    "EVENTS_REJECTED",
    "JOIN_EXPIRED",
    "JOIN_LABELED",
    "JOIN_OUTCOMES",
    "JOIN_PENDING",
    "JOIN_PREDICTIONS",
    "JOIN_UNMATCHED",
    "LABEL_DELAY",
    "PREDICTION_LATENCY",
    "PREDICTIONS",
    "RETRAIN_ACTIVE",
    "RETRAIN_STEPS",
    "RETRAIN_TRIGGERS",
    "SERVING_VERSIONS",
    "SERVING_SWAPS",
    "VERSION_FAILURES",
    "observe_many",
    "ServiceEndpoint",
]

EVENTS_IN = Counter(
    "modelstream_events_in_total", "Records consumed", ["service", "topic"]
)
EVENTS_OUT = Counter(
    "modelstream_events_out_total", "Records produced and acknowledged", ["service", "topic"]
)
EVENTS_REJECTED = Counter(
    "modelstream_events_rejected_total",
    "Records sent to a dead-letter topic, by reason",
    ["service", "reason"],
)
BATCH_SECONDS = Histogram(
    "modelstream_batch_seconds",
    "Time to process, produce and commit one consumed batch",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "modelstream_consumer_lag",
    "Messages behind the partition high watermark",
    ["service", "topic", "partition"],
)
PREDICTIONS = Counter(
    "modelstream_predictions_total",
    "Predictions published",
    ["model", "version", "role"],
)
PREDICTION_LATENCY = Histogram(
    "modelstream_prediction_latency_seconds",
    "Event time on features.valid to prediction produced",
    ["model", "version"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)

SERVING_VERSIONS = Gauge(
    "modelstream_serving_versions",
    "Versions predict serves now, by role (1 while serving; a canary's traffic share is in "
    "model.events)",
    ["model", "version", "role"],
)
SERVING_SWAPS = Counter(
    "modelstream_serving_swaps_total",
    "New sets of served versions (champion, canary, shadows) swapped in between batches",
    ["model"],
)
VERSION_FAILURES = Counter(
    "modelstream_version_failures_total",
    "Model versions that failed to load or to score; a failing challenger is unloaded and "
    "rejected, a failing new champion leaves the old one serving",
    ["model", "version", "role", "stage"],
)

RETRAIN_TRIGGERS = Counter(
    "modelstream_retrain_triggers_total",
    "Retraining triggers (alert, schedule, manual) by outcome: started, or ignored as a"
    " duplicate, within the cooldown, or while a job for the model runs",
    ["model", "trigger", "result"],
)
RETRAIN_STEPS = Counter(
    "modelstream_retrain_steps_total",
    "retrain.jobs events published, by step (started … promoted, rejected, rolled_back, failed)",
    ["model", "step"],
)
RETRAIN_ACTIVE = Gauge(
    "modelstream_retrain_active_jobs", "Retraining jobs in progress", ["model"]
)


JOIN_PREDICTIONS = Counter(
    "modelstream_join_predictions_total",
    "Predictions seen by join: stored to wait, labeled at once, or a replay ignored",
    ["result"],
)
JOIN_OUTCOMES = Counter(
    "modelstream_join_outcomes_total",
    "Outcomes seen by join: first, correction, duplicate (ignored) or replay",
    ["result"],
)
JOIN_LABELED = Counter(
    "modelstream_join_labeled_total", "Labeled predictions published", ["model", "version", "role"]
)
JOIN_EXPIRED = Counter(
    "modelstream_join_expired_predictions_total",
    "Predictions whose join window closed without an outcome",
)
JOIN_UNMATCHED = Counter(
    "modelstream_join_unmatched_outcomes_total",
    "Outcomes whose join window closed without any prediction (unknown or too late)",
)
JOIN_PENDING = Gauge(
    "modelstream_join_pending_events", "Events with join state waiting in Redis"
)
LABEL_DELAY = Histogram(
    "modelstream_label_delay_seconds",
    "Outcome time minus prediction time",
    ["model"],
    buckets=(1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400),
)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe a batch at once: one numpy pass instead of a Python call per value.

    Uses the documented shape of prometheus-client's histogram children (upper bounds,
    bucket counters, sum); falls back to per-value observe() if that shape ever changes.
    """
    try:
        bounds = histogram._upper_bounds  # noqa: SLF001
        counts = np.bincount(np.searchsorted(bounds, values, side="left"),
                             minlength=len(bounds))
        for bucket, n in zip(histogram._buckets, counts, strict=True):  # noqa: SLF001
            if n:
                bucket.inc(int(n))
        histogram._sum.inc(float(values.sum()))  # noqa: SLF001
    except AttributeError:
        for v in values.tolist():
            histogram.observe(v)


MODEL_QUALITY = Gauge(
    "modelstream_model_quality",
    "Quality of a model version over the sliding window: from labels (accuracy, f1, roc_auc, "
    "...) and label-free estimates (expected_accuracy, ...)",
    ["model", "version", "role", "metric"],
)
FEATURE_DRIFT = Gauge(
    "modelstream_feature_drift",
    "Drift statistic of a feature (or __score__ for the prediction) against the training "
    "reference, over the sliding window",
    ["model", "version", "role", "feature", "statistic"],
)
DRIFT_THRESHOLD = Gauge(
    "modelstream_drift_threshold",
    "Calibrated alarm threshold of a drift statistic (its false-alarm rate is budgeted)",
    ["model", "version", "role", "feature", "statistic"],
)
CONCEPT_DRIFTS = Counter(
    "modelstream_concept_drift_total",
    "Concept-drift signals on the error stream of a version",
    ["model", "version", "role"],
)
MONITOR_EVENTS = Counter(
    "modelstream_monitor_events_total",
    "Records seen by monitor: counted once, or a duplicate prediction id ignored",
    ["stream", "result"],
)
ALERTS_FIRING = Gauge(
    "modelstream_alerts_firing",
    "Alert episodes currently firing (1), by severity",
    ["model", "version", "role", "kind", "metric", "feature", "severity"],
)
ALERT_EVENTS = Counter(
    "modelstream_alert_events_total",
    "Alert events published on monitor.alerts",
    ["kind", "severity", "state"],
)


DASHBOARD_SCRAPES = Counter(
    "modelstream_dashboard_scrapes_total",
    "Scrapes of a service's /metrics by the dashboard: ok, or down (no answer)",
    ["target_service", "result"],
)


MODEL_LAST_TRANSITION = Gauge(
    "modelstream_model_last_transition_timestamp_seconds",
    "When a model last had each transition (champion, rolled_back, ...), from model.events as "
    "the dashboard folds it; a gauge of times, so a replay on restart raises no false alarm",
    ["model", "transition"],
)


Route = Callable[[], tuple[int, bytes, str]]  # () -> (status, body, content type)


class ServiceEndpoint:
    """A small threaded HTTP server: /metrics, /healthz and /readyz, plus any ``routes`` a
    service adds (the dashboard its page and API); ``headers`` go on every response."""

    def __init__(self, host: str, port: int, ready: Callable[[], dict[str, object]],
                 routes: Mapping[str, Route] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        def readyz() -> tuple[int, bytes, str]:
            state = ready()
            return (200 if state.get("ready") else 503), orjson.dumps(state), "application/json"

        table: dict[str, Route] = {
            "/metrics": lambda: (200, generate_latest(), CONTENT_TYPE_LATEST),
            "/healthz": lambda: (200, b'{"status":"ok"}', "application/json"),
            "/readyz": readyz,
            **(routes or {}),
        }
        extra = list((headers or {}).items())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                route = table.get(self.path.split("?", 1)[0])
                code, body, ctype = route() if route else (404, b"not found\n", "text/plain")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # scrapes and polls every few seconds would drown the service log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ServiceEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
