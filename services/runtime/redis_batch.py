"""One round trip for a batch of Lua script calls, riding out Redis restarts.

Every script modelstream runs per batch is idempotent for a replayed batch, so when Redis is
unreachable the whole batch is retried with backoff: a Redis restart or failover delays the
service, it never loses or double-applies an event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

__all__ = ["ScriptCall", "run_scripts"]

log = logging.getLogger(__name__)

ScriptCall = tuple[Script, list[str], list[Any]]


def run_scripts(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    delay = 0.1
    while True:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        try:
            # The pipeline (re)loads the scripts itself, e.g. after a restarted server.
            return list(pipe.execute())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
