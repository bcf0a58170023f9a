"""The join state in Redis, and the two atomic operations on it: apply a batch, sweep.

One string per event id, ``join:e:<event>``, with a TTL (the join window plus the grace
period, set when it is created): its outcome, then one triple per prediction of the event
(every version and role), packed with MessagePack (``cmsgpack`` in the script)::

    outcome, prediction id, stored prediction, mark, prediction id, stored prediction, mark...

* the outcome is ``<outcome_time>|<source>|<outcome>``, or empty while none has come;
* the stored prediction waits there for its outcome. The outcome that labels it moves it to
  the hash ``join:kept`` (field ``<event>|<outcome source>``: every prediction that outcome
  labeled), where it stays until the broker has acknowledged the labeled records, for a replay
  of that outcome record. Once it has, the next script call deletes the field (a prune: the
  event id and the outcome's source), and the event keeps its marks only, ~100 B instead of
  the prediction's size, for the rest of its window. A prediction that arrives after its
  outcome is labeled at once, and stores nothing;
* the mark is the source record (``p|o<partition>:<offset>``) that labeled the prediction, or
  empty. One labeled record per prediction id: a prediction is labeled once.

Invariant: once the outcome is there, every prediction of the event is marked. A string with
a TTL costs Redis ~50 B besides its value, where a hash holding values over 64 B (a
prediction) costs ~350 B. Moving the labeled predictions out when they are labeled, rather
than rewriting the event's string when they are pruned, makes a prune one ``HDEL`` field
instead of a read, unpack, pack and write of the string: a labeled prediction costs Redis
~20% less CPU (~20 µs instead of ~25 µs from prediction to prune, measured on Valkey 9).

Join windows close in one-second buckets: ``join:d:<second>`` lists the event ids whose window
closes in that second (an event is listed once, when its state is created), and the sorted set
``join:buckets`` holds the buckets by their second. The sweep claims the buckets that are due,
counts predictions that never got an outcome and outcomes that never found a prediction, and
deletes their state and what ``join:kept`` still holds of them (a prune lost when join
stopped); memory is bounded by the window. ``join:pending`` counts the listed
events. A bucket closes at the end of its second, so a window closes up to a second late; the
TTLs allow for that. A sweep later than the grace period finds the state of the bucket's
events expired: they are closed without being counted as expired or unmatched.

Why the source is stored: after a crash, the batch in hand is consumed again. When the record
that labeled a prediction comes again (same topic, partition, offset), its labeled record is
published again — the first copy may never have reached the broker — unless it was pruned,
which it is only once the broker has the first copy (a commit lost after that: a replay that
publishes nothing). Any other repeat of a prediction or an outcome (a different record) is
recognised and publishes nothing.

Upgrades: before ``join:kept``, the outcome that labeled a prediction left it in the event's
string, beside its mark, until the prune rewrote the string. A replay of such an outcome (a
replica of the earlier version labeled it, one of this version replays it after a crash during
a rolling upgrade) finds no field in ``join:kept`` and reads the predictions from the string:
what it labeled is published again, as a replay must. In this layout a prediction marked by
an outcome has left the string, so that reading finds nothing there.

Corrected outcomes: the outcome with the latest ``outcome_time`` is the one predictions still
waiting are labeled with; a labeled prediction keeps its label (labels are final). A correction
is counted (``modelstream_join_outcomes_total{result="correction"}``).

A batch is one script call: every record of a consumed batch, in order, applied atomically in
one round trip, so replicas of join may race freely. The script touches keys derived from the
event ids, so the state needs one Redis (a primary, with replicas or Sentinel), not a cluster;
Redis 7.0 or later, or Valkey (``SET`` with both ``NX`` and ``GET``, ``PEXPIRE`` with ``GT``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import hiredis
import redis

from ..runtime.redis_batch import retrying

__all__ = ["JoinBatch", "JoinState", "Reply", "SweepResult"]

log = logging.getLogger(__name__)

# Status codes of a record, the first element of its reply.
WAITING, LABELED, IGNORED, REPLAYED = 0, 1, 2, 3  # predictions
FIRST, DUPLICATE, CORRECTION, OUTCOME_REPLAY = 1, 2, 3, 4  # outcomes

# Script calls on their way to Redis at once. On a busy machine each reply waits for Redis to
# be scheduled, and then for the caller to be: with four calls sent before the first reply is
# read, Redis applies them back to back while the caller labels. In a fixed-rate run at 5,400
# events/s on two cores, join four calls deep (and with 4,000-record batches) kept pace, where
# two calls deep (1,000-record batches) its backlog grew to 37,000 outcomes once its windows
# began to close.
PIPELINE = 4

BUCKET_MS = 1000
# A bucket outlives the state of its events by this much: a sweep that comes late (after the
# state expired) still closes it, and the pending count stays exact.
BUCKET_SLACK_MS = 3600 * 1000

# ARGV: the key names (event base, bucket base, buckets, pending counter, kept hash), the
# number of window classes W, then W triples (event TTL, bucket second, bucket TTL), then the
# number of prunes P and P pairs (event id, the source of an outcome whose labeled records the
# broker has acknowledged: the predictions it labeled leave the kept hash), then the records:
# a prediction is +w (its window class), event id, the event's state were it the first record
# (packed: no outcome, its id, the stored prediction, no mark), source; an outcome is -w,
# event id, the event's state were it the first (packed: the stored outcome, which holds its
# time and source). The first record of an event is one command.
# Reply, flat: per prediction its status, then the stored outcome if it labels now (LABELED,
# REPLAYED); per outcome its status, n, then the n stored predictions it labels (or labeled,
# when the record is a replay).
BATCH_SCRIPT = """
local ebase, dbase, buckets, pending, kept = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local nw = tonumber(ARGV[6])
local ttl, bucket, bttl = {}, {}, {}
for w = 1, nw do
  ttl[w], bucket[w], bttl[w] = ARGV[3 * w + 4], ARGV[3 * w + 5], ARGV[3 * w + 6]
end
local pack, unpack_all, find, sub = cmsgpack.pack, cmsgpack.unpack, string.find, string.sub
local i, last = 3 * nw + 8, #ARGV
local np = tonumber(ARGV[3 * nw + 7])
if np > 0 then
  local gone = {}
  for p = 1, np do
    gone[p] = ARGV[i] .. '|' .. ARGV[i + 1]
    i = i + 2
  end
  for j = 1, np, 1000 do
    redis.call('HDEL', kept, unpack(gone, j, math.min(j + 999, np)))
  end
end
local held, held_ttl = {}, 0
local fresh, fresh_w = {}, {}
local out, n = {}, 0
while i <= last do
  local w, ev, first = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local k = ebase .. ev
  local cur = redis.call('SET', k, first, 'NX', 'GET', 'PX', ttl[math.abs(w)])
  local created = not cur
  if w > 0 then
    local src = ARGV[i + 3]
    i = i + 4
    if created then
      out[n + 1], n = 0, n + 1
    else
      local _, pid, body = unpack_all(first)
      local s = {unpack_all(cur)}
      local at
      for j = 2, #s, 3 do
        if s[j] == pid then
          at = j
          break
        end
      end
      if at then
        local mark = s[at + 2]
        if mark == '' then
          out[n + 1], n = 0, n + 1
        elseif mark == src and s[1] ~= '' then
          out[n + 1], out[n + 2], n = 3, s[1], n + 2
        else
          out[n + 1], n = 2, n + 1
        end
      elseif s[1] ~= '' then
        s[#s + 1], s[#s + 2], s[#s + 3] = pid, '', src
        redis.call('SET', k, pack(unpack(s)), 'KEEPTTL')
        out[n + 1], out[n + 2], n = 1, s[1], n + 2
      else
        s[#s + 1], s[#s + 2], s[#s + 3] = pid, body, ''
        redis.call('SET', k, pack(unpack(s)), 'KEEPTTL')
        out[n + 1], n = 0, n + 1
      end
    end
  else
    w = -w
    i = i + 3
    if created then
      out[n + 1], out[n + 2], n = 1, 0, n + 2
    else
      local value = unpack_all(first)
      local s = {unpack_all(cur)}
      local b1 = find(value, '|', 1, true)
      local b2 = find(value, '|', b1 + 1, true)
      local src = sub(value, b1 + 1, b2 - 1)
      local labels, replay = {}, false
      for j = 4, #s, 3 do
        if s[j] == src then
          replay = true
          break
        end
      end
      local status, o = 1, s[1]
      if o ~= '' then
        local c1 = find(o, '|', 1, true)
        local c2 = find(o, '|', c1 + 1, true)
        if replay or sub(o, c1 + 1, c2 - 1) == src then
          status = 4
        elseif tonumber(sub(value, 1, b1 - 1)) <= tonumber(sub(o, 1, c1 - 1)) then
          status = 2
        else
          status = 3
        end
      end
      if status == 4 then
        local got = redis.call('HGET', kept, ev .. '|' .. src)
        if got then
          labels = {unpack_all(got)}
        else  -- labeled by a script before join:kept (an upgrade): kept in the string, unpruned
          for j = 2, #s, 3 do
            if s[j + 2] == src and s[j + 1] ~= '' then labels[#labels + 1] = s[j + 1] end
          end
        end
      elseif status ~= 2 then
        s[1] = value
        for j = 2, #s, 3 do
          if s[j + 2] == '' then
            s[j + 2] = src
            labels[#labels + 1] = s[j + 1]
            s[j + 1] = ''
          end
        end
        redis.call('SET', k, pack(unpack(s)), 'KEEPTTL')
        if #labels > 0 then
          held[#held + 1] = ev .. '|' .. src
          held[#held + 1] = pack(unpack(labels))
          held_ttl = math.max(held_ttl, tonumber(bttl[w]))
        end
      end
      out[n + 1], out[n + 2], n = status, #labels, n + 2
      for j = 1, #labels do out[n + j] = labels[j] end
      n = n + #labels
    end
  end
  if created then
    local b = bucket[w]
    local ids = fresh[b]
    if not ids then
      ids = {}
      fresh[b], fresh_w[b] = ids, w
    end
    ids[#ids + 1] = ev
  end
end
if #held > 0 then
  for j = 1, #held, 1000 do
    redis.call('HSET', kept, unpack(held, j, math.min(j + 999, #held)))
  end
  if redis.call('PEXPIRE', kept, held_ttl, 'NX') == 0 then
    redis.call('PEXPIRE', kept, held_ttl, 'GT')
  end
end
local added, keep = 0, 0
for b, ids in pairs(fresh) do
  local bk = dbase .. b
  for j = 1, #ids, 1000 do
    redis.call('RPUSH', bk, unpack(ids, j, math.min(j + 999, #ids)))
  end
  local w = fresh_w[b]
  redis.call('PEXPIRE', bk, bttl[w])
  redis.call('ZADD', buckets, tonumber(b) * 1000, b)
  added = added + #ids
  keep = math.max(keep, tonumber(bttl[w]))
end
if added > 0 then
  redis.call('INCRBY', pending, added)
  for _, key in ipairs({pending, buckets}) do
    if redis.call('PEXPIRE', key, keep, 'NX') == 0 then redis.call('PEXPIRE', key, keep, 'GT') end
  end
end
return out
"""

# ARGV: event base, bucket base, buckets, pending counter, now (ms), max events, kept hash.
# Reply: events closed, predictions expired unlabeled, outcomes unmatched, events pending.
SWEEP_SCRIPT = """
local ebase, dbase, buckets, pending, kept = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local limit = tonumber(ARGV[6])
local due = redis.call('ZRANGEBYSCORE', buckets, '-inf', ARGV[5], 'LIMIT', 0, 100)
local events, expired, unmatched, gone = 0, 0, 0, {}
for _, b in ipairs(due) do
  local bk = dbase .. b
  local ids = redis.call('LPOP', bk, limit - events)
  if ids then
    for _, ev in ipairs(ids) do
      local k = ebase .. ev
      local cur = redis.call('GET', k)
      if cur then
        local s = {cmsgpack.unpack(cur)}
        for j = 4, #s, 3 do
          local mark = s[j]
          if mark == '' then
            expired = expired + 1
          elseif string.byte(mark, 1) == 111 then  -- 'o': an outcome's, which may have kept
            gone[#gone + 1] = ev .. '|' .. mark
          end
        end
        if s[1] ~= '' and #s == 1 then unmatched = unmatched + 1 end
        redis.call('DEL', k)
      end
    end
    events = events + #ids
  end
  if redis.call('EXISTS', bk) == 0 then redis.call('ZREM', buckets, b) end
  if events >= limit then break end
end
for j = 1, #gone, 1000 do
  redis.call('HDEL', kept, unpack(gone, j, math.min(j + 999, #gone)))
end
local left
if events > 0 then
  left = redis.call('DECRBY', pending, events)
  if left <= 0 then
    redis.call('DEL', pending)
    left = 0
  end
else
  left = tonumber(redis.call('GET', pending) or '0')
end
return {events, expired, unmatched, left}
"""


_EMPTY = b"\xa0"  # MessagePack's empty string


def _packed(data: bytes) -> bytes:
    """``data`` as a MessagePack string, byte for byte what the script's cmsgpack.pack makes."""
    n = len(data)
    if n < 32:
        return b"%c%s" % (0xA0 | n, data)
    if n < 0x100:
        return b"\xd9%c%s" % (n, data)
    if n < 0x10000:
        return b"\xda%s%s" % (n.to_bytes(2, "big"), data)
    return b"\xdb%s%s" % (n.to_bytes(4, "big"), data)


@dataclass(slots=True)
class SweepResult:
    events: int
    expired_predictions: int
    unmatched_outcomes: int
    pending: int


class JoinBatch:
    """Records in order: the arguments of one script call. Subclasses may add what the caller
    needs to label them (the decoded records, the outputs)."""

    __slots__ = ("_records", "_state", "_windows", "kinds", "now_ms", "prunes")

    def __init__(self, state: JoinState, now_ms: int) -> None:
        self._state = state
        self.now_ms = now_ms
        self._windows: dict[int, int] = {}  # window (ms) → its class, 1-based
        self._records: list[Any] = []
        self.kinds: list[bool] = []  # True for a prediction, in record order
        # (event id, outcome source) pairs, applied before the records: see the module's doc.
        self.prunes: list[tuple[str, bytes]] = []

    def _window(self, window_ms: int) -> int:
        w = self._windows.get(window_ms)
        if w is None:
            w = self._windows[window_ms] = len(self._windows) + 1
        return w

    def prediction(self, event_id: str, prediction_id: str, stored: bytes, window_ms: int,
                   source: bytes) -> None:
        first = b"%s%s%s%s" % (_EMPTY, _packed(prediction_id.encode()), _packed(stored), _EMPTY)
        self._records += (self._window(window_ms), event_id, first, source)
        self.kinds.append(True)

    def outcome(self, event_id: str, stored: bytes, window_ms: int) -> None:
        """``stored`` is :func:`.stored.store_outcome`'s: it holds the time and the source."""
        self._records += (-self._window(window_ms), event_id, _packed(stored))
        self.kinds.append(False)

    def __len__(self) -> int:
        return len(self.kinds)

    def args(self) -> list[Any]:
        s = self._state
        head: list[Any] = [s.event_base, s.bucket_base, s.buckets, s.pending, s.kept,
                           len(self._windows)]
        for window_ms in self._windows:  # in class order: dicts keep insertion order
            # The bucket is the second the window closes in, rounded up: never early.
            second = -(-(self.now_ms + window_ms) // BUCKET_MS)
            ttl = window_ms + s.grace_ms + BUCKET_MS
            head += (ttl, second, ttl + BUCKET_SLACK_MS)
        head.append(len(self.prunes))
        for pair in self.prunes:
            head += pair
        return head + self._records


Reply = tuple[int, Any]  # (status, the stored outcome | the stored predictions | None)
Label = Callable[[JoinBatch, list[Reply]], None]


class JoinState:
    def __init__(self, client: redis.Redis, *, prefix: str, grace_seconds: int) -> None:
        self.client = client
        base = f"{prefix}join:"
        self.event_base = f"{base}e:"
        self.bucket_base = f"{base}d:"
        self.buckets = f"{base}buckets"
        self.pending = f"{base}pending"
        self.kept = f"{base}kept"
        self.grace_ms = grace_seconds * 1000
        self._batch = client.register_script(BATCH_SCRIPT)
        self._sweep = client.register_script(SWEEP_SCRIPT)

    def batch(self, now_ms: int) -> JoinBatch:
        return JoinBatch(self, now_ms)

    def apply(self, batches: Iterable[JoinBatch], label: Label, *,
              retry: bool = True) -> list[JoinBatch]:
        """Apply the batches in order, each atomically, and call ``label`` with the replies of
        each; returns the batches.

        The batches go back to back on one connection, up to ``PIPELINE`` of them on their
        way at once: Redis applies them while the caller makes the next (``batches`` may be a
        generator doing that work) and labels the ones before. One reply per record: a
        prediction's is ``(status, stored outcome or None)``, an outcome's ``(status, [stored
        predictions it labels])``.

        When Redis fails midway, every batch is applied again, from the first: a record
        applied twice is a replay, whose reply labels what the first application labeled.
        ``label`` is then called again for each batch and must replace what it made of the
        earlier replies. Without ``retry``, the first failure to reach Redis is raised.
        """
        done: list[JoinBatch] = []
        source = iter(batches)
        delay = 0.1
        while True:
            try:
                self._apply(done, source, label)
                return done
            except redis.exceptions.NoScriptError:
                retrying(lambda: self.client.script_load(BATCH_SCRIPT))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not retry:
                    raise
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _apply(self, done: list[JoinBatch], source: Iterator[JoinBatch], label: Label) -> None:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        sha = self._batch.sha
        waiting: deque[JoinBatch] = deque()
        clean = False

        def send(batch: JoinBatch) -> None:
            packed = hiredis.pack_command(("EVALSHA", sha, 0, *batch.args()))
            # A health check reads a reply of its own: only with none outstanding.
            conn.send_packed_command([packed], check_health=not waiting)
            waiting.append(batch)

        def receive() -> None:
            batch = waiting.popleft()
            label(batch, _replies(batch, conn.read_response()))

        try:
            for batch in itertools.chain(list(done), _extend(done, source)):
                if batch or batch.prunes:
                    send(batch)
                else:
                    label(batch, [])
                if len(waiting) >= PIPELINE:
                    receive()
            while waiting:
                receive()
            clean = True
        finally:
            if not clean:  # replies may still be on their way: this connection is spent
                conn.disconnect()
            pool.release(conn)

    def sweep(self, now_ms: int, limit: int = 1000) -> SweepResult:
        r = retrying(lambda: self._sweep(
            keys=[], args=[self.event_base, self.bucket_base, self.buckets, self.pending,
                           now_ms, limit, self.kept]))
        return SweepResult(*(int(x) for x in r))


def _extend(done: list[JoinBatch], source: Iterator[JoinBatch]) -> Iterator[JoinBatch]:
    for batch in source:
        done.append(batch)
        yield batch


def _replies(batch: JoinBatch, flat: list[Any]) -> list[Reply]:
    replies: list[Reply] = []
    append = replies.append
    i = 0
    for is_prediction in batch.kinds:
        status = flat[i]
        if is_prediction:
            if status in (LABELED, REPLAYED):
                append((status, flat[i + 1]))
                i += 2
            else:
                append((status, None))
                i += 1
        else:
            n = flat[i + 1]
            append((status, flat[i + 2:i + 2 + n]))
            i += 2 + n
    return replies
