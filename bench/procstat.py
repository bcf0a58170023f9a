"""CPU time and resident memory of other processes, read from ``/proc`` (Linux).

>>> stat = "42 (python -m x) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 99 1 2"
>>> parse_cpu_ticks(stat)
(250, 50)
>>> parse_rss_kib("Name:\\tpython\\nVmRSS:\\t  10240 kB\\nThreads:\\t3\\n")
10240
"""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "parse_cpu_ticks", "parse_rss_kib", "rss_bytes"]

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
