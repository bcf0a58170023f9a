"""The online feature store: one Redis hash per (model, entity) with the latest value of each
feature and the event time it came from.

A merge is one Lua script call, atomic per entity, pipelined per batch (one round trip):

* a feature is written only if the event is at least as new as the stored value, so a late
  event never overwrites a newer one;
* the event's feature vector is completed point-in-time: the event's own values, and for the
  features it lacks, the latest stored values;
* an event whose completed vector still lacks a required feature writes nothing.

Hash layout: ``v:<feature>`` → JSON scalar, ``t:<feature>`` → event time (ms). Every hash has
a TTL, refreshed on every write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from ..runtime.redis_batch import run_scripts

__all__ = ["FeatureStore", "MergeResult"]

MERGE_SCRIPT = """
local t = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local nreq = tonumber(ARGV[3])
local cur = redis.call('HGETALL', KEYS[1])
local vals, times = {}, {}
for i = 1, #cur, 2 do
  local kind, name = string.sub(cur[i], 1, 1), string.sub(cur[i], 3)
  if kind == 'v' then vals[name] = cur[i + 1] else times[name] = tonumber(cur[i + 1]) end
end
local snap, updates = {}, {}
for name, v in pairs(vals) do snap[name] = v end
for i = 4 + nreq, #ARGV, 2 do
  local name, v = ARGV[i], ARGV[i + 1]
  snap[name] = v
  local old = times[name]
  if old == nil or t >= old then
    updates[#updates + 1] = 'v:' .. name
    updates[#updates + 1] = v
    updates[#updates + 1] = 't:' .. name
    updates[#updates + 1] = ARGV[1]
  end
end
local missing = {0}
for i = 4, 3 + nreq do
  if snap[ARGV[i]] == nil then missing[#missing + 1] = ARGV[i] end
end
if #missing > 1 then return missing end
if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
redis.call('PEXPIRE', KEYS[1], ttl)
local out = {1}
for name, v in pairs(snap) do out[#out + 1] = name; out[#out + 1] = v end
return out
"""


@dataclass(slots=True)
class MergeResult:
    features: dict[str, Any] | None  # the complete point-in-time vector, or None if incomplete
    missing: list[str]


class FeatureStore:
    def __init__(self, client: redis.Redis, *, prefix: str = "", ttl_seconds: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_seconds * 1000
        self._script = client.register_script(MERGE_SCRIPT)

    def key(self, model: str, entity_id: str) -> str:
        return f"{self.prefix}fs:{model}:{entity_id}"

    def merge_many(
        self,
        items: Sequence[tuple[str, str, int, dict[str, Any]]],
        required: dict[str, list[str]],
    ) -> list[MergeResult]:
        """Merge (model, entity_id, event_time, features) items in order, one round trip."""
        if not items:
            return []
        dumps = orjson.dumps
        calls = []
        for model, entity_id, event_time, features in items:
            req = required[model]
            args: list[Any] = [event_time, self.ttl_ms, len(req), *req]
            for name, value in features.items():
                args.append(name)
                args.append(dumps(value))
            calls.append(([self.key(model, entity_id)], args))
        replies = self._execute(calls)
        results = []
        loads = orjson.loads
        for reply in replies:
            if reply[0] == 1:
                pairs = reply[1:]
                vector = {pairs[i].decode(): loads(pairs[i + 1]) for i in range(0, len(pairs), 2)}
                results.append(MergeResult(vector, []))
            else:
                results.append(MergeResult(None, [m.decode() for m in reply[1:]]))
        return results

    def get(self, model: str, entity_id: str) -> dict[str, Any]:
        raw: dict[bytes, bytes] = self.client.hgetall(self.key(model, entity_id))  # type: ignore[assignment]
        return {
            k.decode()[2:]: orjson.loads(v) for k, v in raw.items() if k.startswith(b"v:")
        }

    def _execute(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return run_scripts(self.client, [(self._script, keys, args) for keys, args in calls])
