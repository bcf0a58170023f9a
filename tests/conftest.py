"""Fixtures: the embedded broker and Valkey as real processes (one each per session), and a
fresh topic prefix, artifact store and settings per test."""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.models import ArtifactStore
from services.models.agrawal import ensure_demo_model
from services.runtime import kafka
from services.runtime.loop import StreamLoop
from services.runtime.settings import Settings
from services.stack.embedded import EmbeddedServer, start_broker, start_valkey
from services.stack.processes import free_port

_counter = itertools.count()


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    logs = tmp_path_factory.mktemp("servers")
    broker = start_broker(free_port(), logs)
    valkey = start_valkey(free_port(), logs)
    yield broker, valkey
    broker.stop()
    valkey.stop()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    """The demo model, trained once per session."""
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    ensure_demo_model(store)
    return store


@pytest.fixture
def settings(servers: tuple[EmbeddedServer, EmbeddedServer], demo_store: ArtifactStore,
             tmp_path: Path) -> Settings:
    """Settings on the session's servers with a topic prefix of this test's own."""
    broker, valkey = servers
    prefix = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}."
    s = Settings(
        kafka_bootstrap=broker.url,
        redis_url=valkey.url,
        topic_prefix=prefix,
        partitions=2,
        data_dir=tmp_path,
        artifact_dir=demo_store.root,
        metrics_port=0,
    )
    kafka.create_topics(s)
    return s


def settings_env(s: Settings) -> dict[str, str]:
    """The environment a `modelstream` child process needs to run with these settings."""
    return {**os.environ, **s.child_env(), "MODELSTREAM_METRICS_PORT": "0"}


class LoopThread:
    """A service loop running in a thread of the test process."""

    def __init__(self, loop: StreamLoop) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(30)
        if self.error:
            raise self.error


@pytest.fixture
def run_loop() -> Iterator[object]:
    started: list[LoopThread] = []

    def start(loop: StreamLoop) -> LoopThread:
        t = LoopThread(loop).start()
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()
