"""A short soak (the long one is ``make soak``): the pipeline's maximum measured with a burst,
then 80% of it for 15 s, then predict stopped while the load goes on and resumed: no service
exits, the backlog drains, memory does not follow the backlog, and every topic reconciles."""

from __future__ import annotations

import pytest

from services.stack.processes import free_port
from tests.chaos.cluster import RestartableValkey
from tests.chaos.soak import run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_soak_at_80_percent_then_a_stalled_consumer(settings, tmp_path):
    valkey = RestartableValkey(free_port(), tmp_path / "valkey")
    valkey.start()
    lines: list[str] = []
    seconds = 15.0
    try:
        result = run_soak(settings, valkey, tmp_path / "logs", seconds=seconds, fraction=0.8,
                          stall_seconds=6.0, burst=3000, log=lines.append)
    finally:
        valkey.stop()
    summary = result.summary(warm=seconds / 4, soak_end=seconds)
    print("\n".join(lines), summary, sep="\n")
    assert not result.problems, summary
    assert result.max_rate > 100
    soak = [b for b in result.backlog if b[0] <= seconds]
    # Bounded: never more than ~5 s of load behind while the pipeline keeps up.
    assert max(b[1] for b in soak) < result.rate * 5, summary
    # Backpressure: ingest's memory while predict is stopped stays near what it was before.
    s = result.stall
    assert s["ingest RSS while predict is stopped, max MB"] < (
        s["ingest RSS before the stall, max MB"] + 50), summary
    assert s["predict RSS catching up, max MB"] < s["predict RSS before the stall, max MB"] + 100
