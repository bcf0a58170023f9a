"""``ModelLeases`` on the session's Valkey: one holder per model, released only by its owner,
kept alive while held, and taken over once a dead owner's lease has expired."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from services.retrain.lease import Holder, ModelLeases
from services.stack.embedded import EmbeddedServer

pytestmark = pytest.mark.integration


def _leases(valkey: EmbeddedServer, prefix: str, ttl: float) -> ModelLeases:
    return ModelLeases(redis.Redis.from_url(valkey.url), prefix=prefix, ttl_seconds=ttl)


def test_one_holder_per_model_and_takeover_after_expiry(
    servers: tuple[EmbeddedServer, EmbeddedServer],
) -> None:
    _, valkey = servers
    prefix = f"lease-{uuid.uuid4().hex[:6]}."
    a, b = _leases(valkey, prefix, 1.0), _leases(valkey, prefix, 1.0)
    try:
        assert a.acquire("m", "j-1") is None
        assert b.acquire("m", "j-2") == Holder(mine=False, job_id="j-1")
        assert a.acquire("m", "j-3") == Holder(mine=True, job_id="j-1")
        assert b.acquire("other", "j-4") is None  # leases are per model
        b.release("m")  # not b's: nothing happens
        time.sleep(2.5)  # over two TTLs: a's renewals keep it
        assert a.holds("m") and not b.holds("m")
        assert b.acquire("m", "j-2") == Holder(mine=False, job_id="j-1")

        a._stop.set()  # a dies: no more renewals
        assert a._thread is not None
        a._thread.join(5)
        deadline = time.monotonic() + 5
        while b.acquire("m", "j-2") is not None:
            assert time.monotonic() < deadline, "a dead owner's lease never expired"
            time.sleep(0.2)
        assert b.holds("m") and not a.holds("m")
        a.release("m")  # a's stale release must not free b's lease
        assert b.holds("m")
        b.release("m")
        assert a.acquire("m", "j-5") is None
    finally:
        a.close()
        b.close()


def test_a_lease_waits_for_redis_to_come_back(tmp_path) -> None:
    """A coordinator that starts while Redis restarts adopts its interrupted jobs once Redis
    is back: taking a lease waits for it instead of failing (found by the chaos run, where
    the adopting thread died of a ConnectionError and left its job running for ever)."""
    import threading

    from services.stack.processes import free_port
    from tests.chaos.cluster import RestartableValkey

    valkey = RestartableValkey(free_port(), tmp_path / "valkey")
    valkey.start()
    leases = ModelLeases(redis.Redis.from_url(valkey.url, socket_timeout=1.0),
                         prefix="down.", ttl_seconds=2.0)
    try:
        valkey.stop()
        got: list[Holder | None] = []
        taker = threading.Thread(target=lambda: got.append(leases.acquire("m", "j-1")))
        taker.start()
        time.sleep(1.5)
        assert taker.is_alive() and not got  # still waiting, not failed
        valkey.start()
        taker.join(15)
        assert got == [None] and leases.holds("m")
    finally:
        leases.close()
        valkey.stop()
