"""Batched Redis round trips that ride out Redis restarts.

Every per-batch Redis operation in modelstream is idempotent for a replayed batch, so when
Redis is unreachable the whole operation is retried with backoff: a Redis restart or failover
delays the service, it never loses or double-applies an event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.commands.core import Script

__all__ = ["ScriptCall", "retrying", "run_scripts"]

log = logging.getLogger(__name__)

T = TypeVar("T")
ScriptCall = tuple[Script, list[str], list[Any]]


def retrying(operation: Callable[[], T]) -> T:
    delay = 0.1
    while True:
        try:
            return operation()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_scripts(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """All the script calls in one round trip (the pipeline (re)loads scripts as needed)."""

    def execute() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return list(pipe.execute())

    return retrying(execute)
