"""CPU time and resident memory of other processes, read from ``/proc`` (Linux).

>>> stat = "42 (python -m x) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 99 1 2"
>>> parse_cpu_ticks(stat)
(250, 50)
>>> parse_rss_kib("Name:\\tpython\\nVmRSS:\\t  10240 kB\\nThreads:\\t3\\n")
10240
"""

from __future__ import annotations

import os

__all__ = [
    "cpu_seconds",
    "machine_busy_seconds",
    "parse_cpu_ticks",
    "parse_machine_ticks",
    "parse_rss_kib",
    "rss_bytes",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_ticks(stat: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from a ``/proc/<pid>/stat`` line.

    The command name is in parentheses and may hold spaces, so fields count from its last ')'.
    """
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]), int(fields[12])


def parse_rss_kib(status: str) -> int:
    """VmRSS in KiB from ``/proc/<pid>/status``."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line (a zombie process?)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used, every thread included."""
    with open(f"/proc/{pid}/stat") as f:
        user, system = parse_cpu_ticks(f.read())
    return (user + system) / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return parse_rss_kib(f.read()) * 1024


def parse_machine_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU from the first line of ``/proc/stat``.

    >>> parse_machine_ticks("cpu  100 5 50 800 20 0 5 0 0 0\\ncpu0 1 2 3 4")
    (160, 980)
    """
    fields = [int(v) for v in stat.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), since boot."""
    with open("/proc/stat") as f:
        busy, _ = parse_machine_ticks(f.read())
    return busy / _TICKS
