"""A short soak (the long one is ``make soak``): the pipeline's sustained maximum measured by
keeping it saturated, then 80% of it for 10 s on the same topics, then predict stopped while
the load goes on and resumed: no service exits, the lag stays bounded and drains, memory does
not follow the backlog, and every topic reconciles."""

from __future__ import annotations

import time

import pytest

from services.stack.processes import free_port
from tests.chaos.cluster import RestartableValkey
from tests.chaos.load import Load
from tests.chaos.soak import run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_soak_at_80_percent_of_the_sustained_maximum(settings, tmp_path):
    valkey = RestartableValkey(free_port(), tmp_path / "valkey", fsync="everysec")
    valkey.start()
    lines: list[str] = []
    started = time.monotonic()
    seconds = 10.0
    try:
        result = run_soak(settings, valkey, tmp_path / "logs", seconds=seconds, fraction=0.8,
                          stall_seconds=4.0, max_seconds=8.0, window=2.0, saturation=3000,
                          log=lambda line: lines.append(
                              f"[{time.monotonic() - started:3.0f}s] {line}"))
    finally:
        valkey.stop()
    summary = result.summary(warm=seconds / 4, soak_end=seconds)
    print("\n".join(lines), summary, sep="\n")
    assert not result.problems, summary
    # The maximum is the saturated run's steady state (its first window may still be filling).
    assert result.max_rate > 100
    assert len(result.capacity.windows) >= 3 and result.capacity.windows[-1][1] > 0
    soak = [b for b in result.backlog if b[0] <= seconds]
    # Bounded: never more than ~5 s of load behind while the pipeline keeps up.
    assert max(b[1] for b in soak) < result.rate * 5, summary
    # The consumer groups' lag was read off the broker, as `modelstream status` does.
    assert result.lag and set(result.lag[0][1]) == {"ingest", "predict", "join", "monitor"}
    # Backpressure: ingest's memory while predict is stopped stays near what it was before.
    s = result.stall
    assert s["ingest RSS while predict is stopped, max MB"] < (
        s["ingest RSS before the stall, max MB"] + 50), summary
    assert s["predict RSS catching up, max MB"] < s["predict RSS before the stall, max MB"] + 100


@pytest.mark.timeout(120)
def test_an_unpaced_load_stops_when_told_even_while_not_paused(settings):
    """The saturated run's load (an unbounded rate) stops on :meth:`Load.stop` whether or not
    the saturation control last paused it; it used to go on producing, and the run never
    drained."""
    load = Load(settings, rate=1e9, total=10**9, pool=2_000).start()
    time.sleep(1.0)
    assert not load.paused.is_set() and load.sent.features > 0
    started = time.monotonic()
    load.stop()
    assert load.done() and time.monotonic() - started < 30
    sent = load.sent.features
    time.sleep(0.5)
    assert load.sent.features == sent
