"""The join state in Redis, and the three atomic operations on it.

Per event id, with a TTL of the join window plus a grace period:

* ``join:p:<event>`` hash: prediction id → the prediction (JSON), every version and role;
* ``join:o:<event>`` string: ``<outcome_time>|<source>|<outcome JSON>``;
* ``join:l:<event>`` hash: prediction id → the source record (``topic:partition:offset``) that
  labeled it. One labeled record per prediction id: a prediction is labeled once.

``join:due`` is a sorted set of event ids by the end of their join window. The sweep claims
the events whose window has closed, counts predictions that never got an outcome and outcomes
that never found a prediction, and deletes their state; memory is bounded by the window.

Why the source is stored: after a crash, the batch in hand is consumed again. When the record
that labeled a prediction comes again (same topic, partition, offset), its labeled record is
published again — the first copy may never have reached the broker. Any other repeat of a
prediction or an outcome (a different record) is recognised and publishes nothing.

Corrected outcomes: the outcome with the latest ``outcome_time`` is the one predictions still
waiting are labeled with; a labeled prediction keeps its label (labels are final). A correction
is counted (``modelstream_join_outcomes_total{result="correction"}``).

The scripts touch keys derived from the event id, so they need one Redis (or a cluster with
the keys hash-tagged); they are atomic there, so replicas of join may race freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from ..runtime.redis_batch import ScriptCall, run_scripts

__all__ = ["JoinState", "OutcomeResult", "PredictionResult"]

PREDICTION_SCRIPT = """
local marker = redis.call('HGET', KEYS[3], ARGV[1])
if marker then
  if marker == ARGV[6] then
    local o = redis.call('GET', KEYS[2])
    if o then return {3, o} end
  end
  return {2}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5])
local o = redis.call('GET', KEYS[2])
if o then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return {1, o}
end
return {0}
"""

OUTCOME_SCRIPT = """
local cur = redis.call('GET', KEYS[2])
local status = 1
if cur then
  local s1 = string.find(cur, '|', 1, true)
  local s2 = string.find(cur, '|', s1 + 1, true)
  if string.sub(cur, s1 + 1, s2 - 1) == ARGV[2] then
    local out = {4, cur}
    local preds = redis.call('HGETALL', KEYS[1])
    for i = 1, #preds, 2 do
      if redis.call('HGET', KEYS[3], preds[i]) == ARGV[2] then out[#out + 1] = preds[i + 1] end
    end
    return out
  end
  if tonumber(ARGV[1]) <= tonumber(string.sub(cur, 1, s1 - 1)) then return {2} end
  status = 3
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], 'NX', ARGV[5], ARGV[6])
local out = {status, ARGV[3]}
local preds = redis.call('HGETALL', KEYS[1])
for i = 1, #preds, 2 do
  if redis.call('HSETNX', KEYS[3], preds[i], ARGV[2]) == 1 then out[#out + 1] = preds[i + 1] end
end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return out
"""

SWEEP_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local expired, unmatched = 0, 0
for _, id in ipairs(ids) do
  local pk, ok, lk = ARGV[3] .. 'p:' .. id, ARGV[3] .. 'o:' .. id, ARGV[3] .. 'l:' .. id
  local np = redis.call('HLEN', pk)
  local nl = redis.call('HLEN', lk)
  if np > nl then expired = expired + np - nl end
  if np == 0 and redis.call('EXISTS', ok) == 1 then unmatched = unmatched + 1 end
  redis.call('DEL', pk, ok, lk)
  redis.call('ZREM', KEYS[1], id)
end
return {#ids, expired, unmatched, redis.call('ZCARD', KEYS[1])}
"""

# Status codes the scripts return first.
WAITING, LABELED, IGNORED, REPLAYED = 0, 1, 2, 3
FIRST, DUPLICATE, CORRECTION, OUTCOME_REPLAY = 1, 2, 3, 4


@dataclass(slots=True)
class PredictionResult:
    status: int
    outcome: bytes | None  # the stored outcome value when the prediction is labeled now


@dataclass(slots=True)
class OutcomeResult:
    status: int
    outcome: bytes | None
    predictions: list[bytes]  # predictions this outcome labels now (JSON)


@dataclass(slots=True)
class SweepResult:
    events: int
    expired_predictions: int
    unmatched_outcomes: int
    pending: int


class JoinState:
    def __init__(self, client: redis.Redis, *, prefix: str, grace_seconds: int) -> None:
        self.client = client
        self.base = f"{prefix}join:"
        self.due = f"{prefix}join:due"
        self.grace_ms = grace_seconds * 1000
        self._prediction = client.register_script(PREDICTION_SCRIPT)
        self._outcome = client.register_script(OUTCOME_SCRIPT)
        self._sweep = client.register_script(SWEEP_SCRIPT)

    def _keys(self, event_id: str) -> list[str]:
        b = self.base
        return [f"{b}p:{event_id}", f"{b}o:{event_id}", f"{b}l:{event_id}", self.due]

    def prediction_call(
        self, event_id: str, prediction_id: str, body: bytes, window_ms: int, source: str,
        now_ms: int,
    ) -> ScriptCall:
        args = [prediction_id, body, window_ms + self.grace_ms, now_ms + window_ms, event_id,
                source]
        return (self._prediction, self._keys(event_id), args)

    def outcome_call(
        self, event_id: str, outcome_time: int, body: bytes, window_ms: int, source: str,
        now_ms: int,
    ) -> ScriptCall:
        value = b"%d|%s|%s" % (outcome_time, source.encode(), body)
        args = [outcome_time, source, value, window_ms + self.grace_ms, now_ms + window_ms,
                event_id]
        return (self._outcome, self._keys(event_id), args)

    def run(self, calls: list[ScriptCall]) -> list[PredictionResult | OutcomeResult]:
        """Apply the calls in order, in one round trip."""
        results: list[PredictionResult | OutcomeResult] = []
        for (script, _, _), r in zip(calls, run_scripts(self.client, calls), strict=True):
            status = int(r[0])
            stored = r[1] if len(r) > 1 else None
            if script is self._prediction:
                results.append(PredictionResult(status, stored))
            else:
                results.append(OutcomeResult(status, stored, list(r[2:])))
        return results

    def sweep(self, now_ms: int, limit: int = 1000) -> SweepResult:
        r = self._sweep(keys=[self.due], args=[now_ms, limit, self.base])
        return SweepResult(*(int(x) for x in r))


def split_outcome(value: bytes) -> tuple[int, bytes]:
    """``<time>|<source>|<json>`` → (time, json)."""
    t, _, rest = value.partition(b"|")
    _, _, body = rest.partition(b"|")
    return int(t), body
