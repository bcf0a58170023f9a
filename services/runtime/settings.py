"""Configuration: one frozen settings object read from ``MODELSTREAM_*`` environment variables.

librdkafka options pass through untouched: ``MODELSTREAM_KAFKA_OPTIONS='{"linger.ms": "10"}'``.
Secrets are ``SecretStr`` and may come from a file (``MODELSTREAM_KAFKA_SASL_PASSWORD_FILE``) so
that they never sit in a process listing; ``redacted()`` is what logs and ``status`` print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .topics import Topics

__all__ = ["SERVICE_PORTS", "Settings", "redact_url"]

# Default /metrics ports per service; `modelstream up` hands these to its children.
SERVICE_PORTS: dict[str, int] = {
    "ingest": 9301,
    "predict": 9302,
    "join": 9303,
    "monitor": 9304,
    "retrain": 9305,
    "dashboard": 9300,
}

_SECRET_FILES = (
    "kafka_sasl_password", "kafka_ssl_key_password", "redis_password", "admin_token"
)


def redact_url(url: str) -> str:
    """``redis://user:pw@host:6379/0`` → ``redis://user:***@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSTREAM_", frozen=True, extra="ignore")

    # Servers. Unset means: `modelstream up` starts the embedded ones.
    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    kafka_port: int = 9092
    redis_port: int = 6379
    free_ports: bool = False  # fall back to free ports when the configured ones are taken

    # Kafka security and pass-through librdkafka options.
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    # Client certificate (mutual TLS): PEM files, the key optionally encrypted.
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_options: dict[str, str] = Field(default_factory=dict)
    # Redis AUTH (ACL user optional) and TLS: a rediss:// URL verified against this CA file.
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl_ca_certs: str | None = None

    # Topics and formats.
    topic_prefix: str = ""
    partitions: int = 4
    replication_factor: int = 1
    output_format: Literal["json", "avro"] = "json"
    schema_registry_url: str | None = None

    # Models.
    default_model: str = "agrawal"
    model_version: str | None = None
    data_dir: Path = Path("var")
    artifact_dir: Path | None = None

    # Processing.
    batch_size: int = 1000
    batch_timeout_ms: int = 20
    max_event_bytes: int = 65536
    feature_ttl_seconds: int = 30 * 24 * 3600
    unknown_features: Literal["reject", "ignore"] = "reject"
    ort_threads: int = 1

    # Outcome joining: how long a prediction waits for its outcome (and vice versa).
    join_window_seconds: int = 7 * 24 * 3600
    join_windows: dict[str, int] = Field(default_factory=dict)  # per model, overrides the above
    join_grace_seconds: int = 300  # state outlives the window this long so the sweep can count it
    join_sweep_seconds: float = 1.0
    # join's largest batch. It waits on Redis and the broker more than it computes: under a
    # backlog, bigger batches mean fewer waits per record (it catches up faster).
    join_batch_size: int = Field(default=4000, ge=1)

    # Monitoring.
    monitor_window: int = 2000  # events per sliding window (drift, quality, estimate)
    monitor_window_seconds: float | None = 3600.0  # labeled events older than this leave
    monitor_eval_seconds: float = 5.0  # how often metrics, snapshots and alerts are computed
    monitor_checkpoint_seconds: float = 10.0
    monitor_arl0_windows: float = 1000.0  # expected windows between false drift alarms, in all
    monitor_concept_arl0: float = 1e7  # expected events between false concept-drift alarms
    # Seed the concept-drift charts with the card's holdout error rate (metrics accuracy and
    # holdout_rows) instead of learning it from the first live labels: a change soon after a
    # deployment is caught sooner; later ones no sooner, at a slightly higher alarm rate.
    monitor_concept_holdout_prior: bool = False
    monitor_min_labeled: int = 200  # quality alerts need this many labeled events
    monitor_accuracy_warning_drop: float = 0.05  # below the card's accuracy by this: warning
    monitor_accuracy_critical_drop: float = 0.15
    # Prediction ids remembered per stream to count a replayed copy once: a copy further apart
    # than this is counted twice. ~85 bytes of RSS and 8 bytes of checkpoint an id (200,000:
    # ~17 MiB per stream, 34 MiB for both; 1.6 MB of checkpoint each).
    monitor_dedup_ids: int = Field(default=200_000, ge=0)

    # Dashboard: the services it scrapes, name -> host:port (a name that resolves to several
    # addresses is one service with several replicas). Empty: the endpoints `up` recorded.
    dashboard_targets: dict[str, str] = Field(default_factory=dict)
    dashboard_scrape_seconds: float = 2.0
    dashboard_history: int = 300  # points kept per series (10 minutes at 2 s)

    # Retraining (the retrain service). Margins are in the model's metric: accuracy for
    # classifiers, RMSE for regression (lower is better there; margins keep their sense).
    retrain_window_seconds: float = 24 * 3600.0  # labeled examples this recent are the data
    retrain_holdout_fraction: float = 0.25  # the most recent share of them is the holdout
    retrain_min_examples: int = 500  # fewer labeled examples: the job fails with the count
    retrain_max_records: int = 200_000  # of predictions.labeled read per job: the latest ones
    retrain_margin: float = 0.01  # the candidate must beat the champion's holdout metric by this
    retrain_live_margin: float = 0.0  # ... and its live metric on the same events by this
    retrain_rollback_margin: float = 0.02  # a new champion this far below its predecessor: undo
    retrain_cooldown_seconds: float = 3600.0  # per model, after an alert-triggered job starts
    retrain_alert_kinds: list[str] = Field(default_factory=lambda: ["drift", "performance"])
    retrain_schedule: str | None = None  # crontab, e.g. "0 3 * * *"; unset: no schedule
    retrain_trainer: str = "sklearn"  # entry point name in group modelstream.trainers
    retrain_shadow_min_labeled: int = 500  # labeled events scored by both before deciding
    retrain_shadow_timeout_seconds: float = 6 * 3600.0  # not enough by then: rejected
    retrain_canary_fraction: float | None = None  # set: a canary step after the shadow step
    retrain_canary_min_labeled: int = 500
    retrain_watch_seconds: float = 3600.0  # how long a new champion is watched for rollback
    retrain_watch_min_labeled: int = 500  # labeled predictions before the watch can judge
    retrain_poll_seconds: float = 5.0  # how often staged and watched versions are checked
    # An alert-triggered job waits this long before reading its window: the outcomes of the
    # events that raised the alert arrive late, and the window should hold the new regime.
    retrain_alert_wait_seconds: float = 0.0
    retrain_lease_seconds: float = 15.0  # a coordinator's Redis lease on a model (renewed)

    # Service runtime.
    service_name: str = "modelstream"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "text"
    admin_token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``MODELSTREAM_<SECRET>_FILE`` names a file holding the secret (Kubernetes mounts)."""
        import os

        if not isinstance(data, dict):
            return data
        for name in _SECRET_FILES:
            path = os.environ.get(f"MODELSTREAM_{name.upper()}_FILE")
            if path and name not in data:
                try:
                    data[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"cannot read {name} from {path}: {exc}") from exc
        return data

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for a client, with security options and pass-throughs."""
        if not self.kafka_bootstrap:
            raise ConfigError("no Kafka bootstrap servers: set MODELSTREAM_KAFKA_BOOTSTRAP")
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_security_protocol:
            conf["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        if self.kafka_ssl_certificate_location:
            conf["ssl.certificate.location"] = self.kafka_ssl_certificate_location
        if self.kafka_ssl_key_location:
            conf["ssl.key.location"] = self.kafka_ssl_key_location
        if self.kafka_ssl_key_password:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf.update(extra)
        conf.update(self.kafka_options)  # the user's librdkafka options win over our defaults
        return conf

    def redis_kwargs(self) -> dict[str, Any]:
        if not self.redis_url:
            raise ConfigError("no Redis URL: set MODELSTREAM_REDIS_URL")
        kwargs: dict[str, Any] = {"url": self.redis_url}
        if self.redis_username:
            kwargs["username"] = self.redis_username
        if self.redis_password:
            kwargs["password"] = self.redis_password.get_secret_value()
        if self.redis_ssl_ca_certs:
            if urlsplit(self.redis_url).scheme != "rediss":
                raise ConfigError("MODELSTREAM_REDIS_SSL_CA_CERTS needs a rediss:// Redis URL")
            kwargs["ssl_ca_certs"] = self.redis_ssl_ca_certs
        return kwargs

    def __repr_args__(self) -> Any:
        # repr() and str() (tracebacks, debuggers, logs of the object) cut URL passwords too.
        for name, value in super().__repr_args__():
            if name in ("redis_url", "schema_registry_url") and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def redacted(self) -> dict[str, Any]:
        """Settings safe to print or log: secrets masked, passwords cut from URLs."""
        out = self.model_dump(mode="json")
        for name in _SECRET_FILES:
            if out.get(name):
                out[name] = "***"
        if self.redis_url:
            out["redis_url"] = redact_url(self.redis_url)
        out["kafka_options"] = {
            k: ("***" if any(w in k for w in ("password", "secret", "token")) else v)
            for k, v in self.kafka_options.items()
        }
        return out

    def child_env(self) -> dict[str, str]:
        """The environment that gives a ``modelstream run <service>`` child these servers,
        topics, formats and stores (secrets are left to the environment it inherits)."""
        env = {
            "MODELSTREAM_TOPIC_PREFIX": self.topic_prefix,
            "MODELSTREAM_PARTITIONS": str(self.partitions),
            "MODELSTREAM_OUTPUT_FORMAT": self.output_format,
            "MODELSTREAM_DATA_DIR": str(self.data_dir),
            "MODELSTREAM_ARTIFACT_DIR": str(self.artifacts),
        }
        if self.kafka_bootstrap:
            env["MODELSTREAM_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        if self.redis_url:
            env["MODELSTREAM_REDIS_URL"] = self.redis_url
        return env

    def service_port(self, service: str) -> int:
        if self.metrics_port is not None:
            return self.metrics_port
        return SERVICE_PORTS.get(service, 0)
