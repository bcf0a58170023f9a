"""Runs each service as a child process and restarts one that dies, with backoff."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .processes import spawn, terminate

__all__ = ["ServiceProcess", "Supervisor"]

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long has its backoff reset


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START
    restart_at: float | None = None
    argv: list[str] = field(default_factory=list)

    def start(self) -> None:
        argv = self.argv or [sys.executable, "-m", "services.cli.main", "run", self.name]
        self.proc = spawn(argv, log_path=self.log_path, env=self.env)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Keeps every service running: a crash is logged, then restarted after a backoff."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.services: dict[str, ServiceProcess] = {}
        self._say = say or log.warning

    def add(self, service: ServiceProcess) -> None:
        self.services[service.name] = service
        service.start()

    def check(self) -> None:
        now = time.monotonic()
        for svc in self.services.values():
            if svc.running():
                if now - svc.started_at > HEALTHY_AFTER:
                    svc.backoff = BACKOFF_START
                continue
            if svc.restart_at is None:
                code = svc.proc.returncode if svc.proc else None
                svc.restart_at = now + svc.backoff
                self._say(
                    f"{svc.name} exited with code {code}; restarting in {svc.backoff:.0f}s "
                    f"(log: {svc.log_path})"
                )
                svc.backoff = min(svc.backoff * 2, BACKOFF_MAX)
            elif now >= svc.restart_at:
                svc.restarts += 1
                svc.start()
                self._say(f"{svc.name} restarted (restart #{svc.restarts}, pid {svc.pid})")

    def stop(self) -> None:
        # SIGTERM to all first so they finish their batches in parallel, then wait.
        for svc in self.services.values():
            if svc.running() and svc.proc:
                svc.proc.terminate()
        for svc in self.services.values():
            if svc.proc:
                terminate(svc.proc, timeout=15)
