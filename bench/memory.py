"""Memory: the resident set of each service under a steady load, at steady state and at the end.

ingest, predict, join and monitor run as ``modelstream run <service>`` processes on topics of
their own. A driver offers ``rate`` feature events/s and, one second after each, its outcome
(so join labels every prediction and monitor sees both streams), for ``seconds``. The RSS of
every process is sampled every ``SAMPLE_SECONDS``; "steady" is the sample at ``steady_after``
seconds (windows, caches and id memories full, the allocator warmed), "end" the last one. A
service passes when end ≤ 1.1 × steady. The labeled records that come out are counted, to show
the whole pipeline kept up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from services.runtime import topics
from services.runtime.settings import Settings

from .chains import Child, Events, ProcessChain, service_process
from .latency import STARTUP_TIMEOUT
from .stack import BenchStack

__all__ = ["MAX_GROWTH", "MemoryRun", "measure_memory", "memory_table"]

SERVICES = ("ingest", "predict", "join", "monitor")
SAMPLE_SECONDS = 5.0
MAX_GROWTH = 0.10
OUTCOME_DELAY = 1.0


@dataclass
class MemoryRun:
    seconds: float
    rate: float
    steady_after: float
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # (t, RSS)
    sent: int = 0
    labeled: int = 0

    def steady(self) -> dict[str, int]:
        """The first sample at or after ``steady_after`` seconds."""
        for t, rss in self.samples:
            if t >= self.steady_after:
                return rss
        return self.samples[-1][1] if self.samples else {}

    def end(self) -> dict[str, int]:
        return self.samples[-1][1] if self.samples else {}

    def growth(self) -> dict[str, float]:
        """Relative RSS growth from steady to end, per service.

        >>> r = MemoryRun(60, 1000, 20, [(0, {"a": 50}), (20, {"a": 100}), (60, {"a": 105})])
        >>> round(r.growth()["a"], 6)
        0.05
        """
        steady, end = self.steady(), self.end()
        return {name: end[name] / steady[name] - 1.0 for name in steady if name in end}

    def note(self) -> str:
        return (f"{self.sent:,} events offered at {self.rate:,.0f}/s over {self.seconds:.0f} s, "
                f"{self.labeled:,} labeled predictions out; RSS sampled every "
                f"{SAMPLE_SECONDS:g} s, steady = at {self.steady_after:.0f} s")


def _services(s: Settings, logs: Path) -> list[Child]:
    return [service_process(name, s, logs) for name in SERVICES]


def measure_memory(
    stack: BenchStack, events: Events, truth: Sequence[str], *, rate: float, seconds: float,
    steady_after: float, on_sample: Callable[[float, dict[str, int]], None] | None = None,
) -> MemoryRun:
    run = MemoryRun(seconds, rate, steady_after)
    with ProcessChain(stack, "mem", _services, lambda s: s.topics.features,
                      lambda s: s.topics.name(topics.PREDICTIONS_LABELED)) as c:
        assert c.arrivals is not None
        # Warm-up: events and outcomes until a labeled record comes out (ids "w-…").
        _drive(c, events, truth, rate, STARTUP_TIMEOUT, "w-", until=c.arrivals.warm.is_set)
        if not c.arrivals.warm.is_set():
            raise RuntimeError(f"nothing labeled within {STARTUP_TIMEOUT:.0f} s; {c.tails()}")
        before = len(c.arrivals.arrived)
        next_sample = 0.0

        def sample(elapsed: float) -> None:
            nonlocal next_sample
            if elapsed < next_sample:
                return
            if not c.alive():
                raise RuntimeError(f"a service exited during the memory run; {c.tails()}")
            rss = c.rss()
            run.samples.append((elapsed, rss))
            if on_sample is not None:
                on_sample(elapsed, rss)
            next_sample += SAMPLE_SECONDS

        run.sent = _drive(c, events, truth, rate, seconds, "r-", on_tick=sample)
        run.samples.append((seconds, c.rss()))
        time.sleep(OUTCOME_DELAY + 2.0)  # the last outcomes' labeled records
        run.labeled = len(c.arrivals.arrived) - before
    return run


def _drive(
    c: ProcessChain, events: Events, truth: Sequence[str], rate: float, seconds: float,
    prefix: str, *, until: Callable[[], bool] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> int:
    """Offer features at ``rate`` and each one's outcome OUTCOME_DELAY later; returns the count."""
    outcomes_topic = c.settings.topics.outcomes
    producer = c.offer.producer
    pending: deque[tuple[float, str, str]] = deque()
    started = time.perf_counter()
    sent = 0
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= seconds or (until is not None and until()):
            break
        due = int(elapsed * rate) + 1
        while sent < due:
            key, event = events[sent % len(events)]
            event_id = f"{prefix}{sent}"
            c.offer.send(key, dict(event), event_id)
            pending.append((elapsed + OUTCOME_DELAY, event_id, truth[sent % len(truth)]))
            sent += 1
        now_ms = int(time.time() * 1000)
        while pending and pending[0][0] <= elapsed:
            _, event_id, label = pending.popleft()
            producer.produce(outcomes_topic, orjson.dumps(
                {"event_id": event_id, "label": label, "outcome_time": now_ms}),
                event_id.encode())
        producer.poll(0)
        c.offer.sent_at.clear()  # only the count of arrivals matters here
        if on_tick is not None:
            on_tick(elapsed)
        time.sleep(0.002)
    producer.flush(30)
    return sent


def memory_table(run: MemoryRun) -> str:
    steady, end, growth = run.steady(), run.end(), run.growth()
    lines = ["| service | RSS at steady state | RSS at the end | growth | ≤ 10% |",
             "|---|---|---|---|---|"]
    for name in steady:
        g = growth.get(name, float("nan"))
        verdict = "PASS" if g <= MAX_GROWTH else "FAIL"
        lines.append(f"| {name} | {steady[name] / 2**20:,.1f} MiB | "
                     f"{end.get(name, 0) / 2**20:,.1f} MiB | {g:+.1%} | {verdict} |")
    return "\n".join(lines)
