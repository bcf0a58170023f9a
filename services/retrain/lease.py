"""``ModelLeases``: at most one coordinator acts on a model at a time, however many run.

Requests are keyed by model and the consumer group gives each partition to one worker, but a
group hands partitions over (a replica joins or leaves) while a job runs in a worker thread, a
request not yet committed is delivered again, and a coordinator that starts finds the jobs of
the others still ``running`` on ``retrain.jobs``. So every job — and every rollback — holds the
model's lease: a Valkey/Redis key ``<prefix>retrain:lease:<model>`` whose value names the owner
(one token per coordinator process) and the job, set with ``NX`` and a TTL of
``retrain_lease_seconds``, renewed by a background thread while held, deleted only by its owner.
A coordinator that dies loses its leases when they expire; a job checks that it still holds its
lease before each write to the registry. While Redis is unreachable (a restart, a failover),
taking and checking a lease wait for it with backoff: a coordinator that starts during an
outage adopts its jobs once Redis is back, it does not lose them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from ..runtime.redis_batch import retrying

__all__ = ["Holder", "ModelLeases"]

log = logging.getLogger(__name__)

# Keep ours alive; take it back if it expired meanwhile (nobody else took it).
_RENEW = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: this process (``mine``) or another, and for which job."""

    mine: bool
    job_id: str


class ModelLeases:
    """The leases one coordinator process holds, renewed every third of their TTL."""

    def __init__(self, client: redis.Redis, *, prefix: str, ttl_seconds: float) -> None:
        self.client = client
        self.prefix = f"{prefix}retrain:lease:"
        self.owner = uuid.uuid4().hex
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))
        self.held: dict[str, str] = {}  # model -> value
        self._lock = threading.Lock()
        self._renew: Script = client.register_script(_RENEW)
        self._release: Script = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self, model: str) -> str:
        return self.prefix + model

    def acquire(self, model: str, job_id: str) -> Holder | None:
        """Take the lease of ``model`` for ``job_id``: ``None`` when taken, else who holds it."""
        value = f"{self.owner}|{job_id}"
        key = self.key(model)
        for _ in range(3):  # the holder may let go between our two calls
            if retrying(lambda: self.client.set(key, value, nx=True, px=self.ttl_ms)):
                with self._lock:
                    self.held[model] = value
                self._ensure_renewing()
                return None
            # Our own value is not taken for ours: another thread of this process may hold
            # the lease for the same job (a replayed request while its job is adopted), and
            # the caller must see it held. A SET whose reply was lost expires by itself.
            current = retrying(lambda: self.client.get(key))
            if current is not None:
                owner, _, job = _text(current).partition("|")
                return Holder(owner == self.owner, job)
        return Holder(False, "")

    def holds(self, model: str) -> bool:
        """Still ours (checked against the server, before a write that must be ours alone)."""
        with self._lock:
            value = self.held.get(model)
        if value is None:
            return False
        current = retrying(lambda: self.client.get(self.key(model)))
        return current is not None and _text(current) == value

    def release(self, model: str) -> None:
        with self._lock:
            value = self.held.pop(model, None)
        if value is not None:
            try:
                self._release(keys=[self.key(model)], args=[value])
            except redis.RedisError as exc:  # it expires by itself
                log.warning("lease of %s not released (%s); it expires in %d ms", model, exc,
                            self.ttl_ms)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for model in list(self.held):
            self.release(model)

    def _ensure_renewing(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="retrain-leases",
                                                 daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            with self._lock:
                held = dict(self.held)
            for model, value in held.items():
                try:
                    kept = self._renew(keys=[self.key(model)], args=[value, self.ttl_ms])
                except redis.RedisError as exc:
                    log.warning("lease of %s not renewed: %s", model, exc)
                    continue
                if not kept:
                    log.warning("lease of %s lost to another coordinator", model)
                    with self._lock:
                        if self.held.get(model) == value:
                            del self.held[model]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
