"""``modelstream up``: the embedded servers, the topics, the demo model and every service,
supervised, with the endpoints written to ``<data_dir>/stack.json`` for ``modelstream status``.

One stack runs from a data directory at a time: a second one would overwrite the first's
``stack.json`` and logs, and delete its ``stack.json`` when it stopped. ``modelstream demo``
runs from ``<data_dir>/demo``, so it can run beside ``up``; the commands run beside a stack
read ``up``'s state, or the demo's when only the demo runs."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..runtime import kafka
from ..runtime.errors import StackError
from ..runtime.settings import Settings
from .embedded import EmbeddedServer, start_broker, start_valkey
from .processes import free_port, port_is_free
from .supervisor import ServiceProcess, Supervisor

__all__ = ["DATA_PLANE", "DEMO_DIR", "STACK_SERVICES", "Stack", "read_state"]

log = logging.getLogger(__name__)

DATA_PLANE: tuple[str, ...] = ("ingest", "predict", "join", "monitor")
# What `up` and `demo` supervise: the data plane, the retraining coordinator (the control
# plane) and the dashboard over them.
STACK_SERVICES: tuple[str, ...] = (*DATA_PLANE, "retrain", "dashboard")


def state_path(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


DEMO_DIR = "demo"  # under the data directory: where ``modelstream demo`` runs from


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError, ValueError):
        return None


def _running(state: dict[str, Any]) -> bool:
    """Whether the process that wrote ``state`` still runs (a killed stack leaves its file)."""
    pid = state.get("pid")
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The state of the stack run from ``settings.data_dir``: ``up``'s, or the demo's when
    only the demo runs (``<data_dir>/demo``); ``up``'s file when neither runs, if any."""
    own = _load(state_path(settings))
    if own is not None and _running(own):
        return own
    demo = _load(settings.data_dir / DEMO_DIR / "stack.json")
    if demo is not None and _running(demo):
        return demo
    return own


class Stack:
    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] = STACK_SERVICES,
        say: Callable[[str], None] = print,
        service_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.service_env = service_env or {}
        self.service_names = list(services)
        self.say = say
        self.broker: EmbeddedServer | None = None
        self.valkey: EmbeddedServer | None = None
        self.supervisor = Supervisor(say=say)
        self.state: dict[str, Any] = {}
        self._stopping = False

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> Settings:
        """Start everything; returns the settings the services run with (resolved servers)."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        other = _load(state_path(s))
        if other is not None and _running(other) and other.get("pid") != os.getpid():
            raise StackError(
                f"a stack is already running from {s.data_dir} (pid {other['pid']}, broker "
                f"{other.get('broker')}); stop it first, or give this one a directory of its "
                f"own with MODELSTREAM_DATA_DIR (if pid {other['pid']} is no stack, delete "
                f"{state_path(s)})")
        bootstrap, redis_url = s.kafka_bootstrap, s.redis_url
        try:
            if not bootstrap:
                self.broker = start_broker(s.kafka_port, self.log_dir, allow_free=s.free_ports)
                bootstrap = self.broker.url
                self.say(f"broker  kafka://{bootstrap}  (embedded tansu, memory storage)")
            else:
                self.say(f"broker  kafka://{bootstrap}  (external)")
            if not redis_url:
                self.valkey = start_valkey(s.redis_port, self.log_dir, allow_free=s.free_ports)
                redis_url = self.valkey.url
                self.say(f"redis   {redis_url}  (embedded valkey)")
            else:
                self.say("redis   (external, from MODELSTREAM_REDIS_URL)")
            resolved = s.model_copy(
                update={"kafka_bootstrap": bootstrap, "redis_url": redis_url,
                        "data_dir": s.data_dir.resolve()}
            )
            topics = kafka.create_topics(resolved)
            self.say(f"topics  {len(topics)} ready ({s.partitions} partitions each)")
            self._ensure_model(resolved)
            self._start_services(resolved)
            self._write_state(resolved, topics)
            return resolved
        except BaseException:
            self.stop()
            raise

    def _ensure_model(self, settings: Settings) -> None:
        from ..models import ArtifactStore
        from ..models.agrawal import ensure_demo_model
        from ..registry import adopt_store

        store = ArtifactStore(settings.artifacts)
        fresh = not store.models()
        if fresh:
            card = ensure_demo_model(store)
            acc = card.metrics.get("accuracy", float("nan"))
            self.say(f"model   {card.name} v{card.version} trained and stored (acc {acc:.3f})")
        else:
            for name in store.models():
                self.say(f"model   {name} v{store.latest(name)}")
        # The registry is model.events: a new (or memory-backed) broker starts without it, so the
        # stored models are registered and crowned there, and predict follows them from then on.
        reason = "demo model, trained on an empty artifact store" if fresh else (
            "adopted from the artifact store")
        for event in adopt_store(settings, store, reason=reason):
            if event.transition == "champion":
                self.say(f"model   {event.model} v{event.version} registered and champion"
                          " on model.events")

    def _start_services(self, settings: Settings) -> None:
        env = {**settings.child_env(), **self.service_env}
        for name in self.service_names:
            port = settings.service_port(name)
            if not port or not port_is_free(port):
                port = free_port()
            svc = ServiceProcess(
                name=name,
                env={
                    **env,
                    "MODELSTREAM_METRICS_PORT": str(port),
                    "MODELSTREAM_SERVICE_NAME": name,
                },
                log_path=self.log_dir / f"{name}.log",
            )
            self.supervisor.add(svc)
            self.state.setdefault("services", {})[name] = {
                "pid": svc.pid,
                "metrics": f"http://127.0.0.1:{port}/metrics",
                "health": f"http://127.0.0.1:{port}/healthz",
                "ready": f"http://127.0.0.1:{port}/readyz",
                "log": str(svc.log_path),
            }
            self.say(f"service {name:<8} pid {svc.pid}  metrics http://127.0.0.1:{port}/metrics")

    def _write_state(self, settings: Settings, topics: dict[str, int]) -> None:
        self.state.update(
            {
                "pid": os.getpid(),
                "started_at": int(time.time() * 1000),
                "broker": settings.kafka_bootstrap,
                "redis": settings.redis_url if self.valkey else "external",
                "embedded": {"broker": self.broker is not None, "redis": self.valkey is not None},
                "topic_prefix": settings.topic_prefix,
                "topics": topics,
                "data_dir": str(settings.data_dir),
            }
        )
        state_path(settings).write_bytes(orjson.dumps(self.state, option=orjson.OPT_INDENT_2))

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every service's /readyz answers 200 (assigned its partitions)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        pending = dict(self.state.get("services", {}))
        while pending and time.monotonic() < deadline:
            for name, ep in list(pending.items()):
                try:
                    with urllib.request.urlopen(ep["ready"], timeout=1) as resp:
                        if resp.status == 200:
                            del pending[name]
                except OSError:
                    pass
            self.check()
            time.sleep(0.2)
        return not pending

    def supervise_until_signal(self, on_tick: Callable[[], None] | None = None) -> None:
        def _stop(*_: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not self._stopping:
            self.check()
            if on_tick:
                on_tick()
            time.sleep(0.5)

    def check(self) -> None:
        """Restart crashed services; keep the pids in stack.json current."""
        self.supervisor.check()
        services = self.state.get("services", {})
        changed = False
        for name, svc in self.supervisor.services.items():
            if name in services and svc.pid != services[name]["pid"]:
                services[name]["pid"] = svc.pid
                changed = True
        if changed:
            state_path(self.settings).write_bytes(
                orjson.dumps(self.state, option=orjson.OPT_INDENT_2)
            )

    def stop(self) -> None:
        self.supervisor.stop()
        for server in (self.broker, self.valkey):
            if server is not None:
                server.stop()
        path = state_path(self.settings)
        if self.state and path.exists():
            path.unlink()
