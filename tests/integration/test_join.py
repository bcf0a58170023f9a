"""join against the real broker and Valkey: either arrival order, every version, duplicates,
corrections, expiry, malformed outcomes and a crash mid-stream."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis

from services.join.service import build
from services.join.state import (
    DUPLICATE,
    FIRST,
    IGNORED,
    LABELED,
    OUTCOME_REPLAY,
    PIPELINE,
    REPLAYED,
    WAITING,
    JoinBatch,
    JoinState,
    _packed,
)
from services.join.stored import Outcome, store_outcome
from services.predict.scorer import prediction_id
from services.runtime import metrics
from services.runtime.service import redis_client
from tests.conftest import settings_env
from tests.helpers import FULL, produce, read

pytestmark = pytest.mark.integration
T0 = 1_763_900_000_000


def prediction(event_id: str, version: str = "1", role: str = "champion", label: str = "1",
               entity: str | None = None) -> bytes:
    return orjson.dumps({
        "prediction_id": prediction_id(event_id, "agrawal", version), "event_id": event_id,
        "entity_id": entity or f"c-{event_id}", "model": "agrawal", "model_version": version,
        "role": role, "served": role != "shadow", "label": label, "score": 0.9,
        "scores": {"0": 0.1, "1": 0.9}, "features": FULL, "event_time": T0,
        "predicted_at": T0 + 5, "latency_ms": 5.0,
    })


def outcome(event_id: str, label: str = "1", t: int = T0 + 60_000) -> bytes:
    return orjson.dumps({"event_id": event_id, "label": label, "outcome_time": t})


def test_either_side_first_and_every_version_is_labeled(settings, run_loop):
    produce(settings, "predictions", [
        (b"c", prediction("a")),                                  # prediction first
        (b"c", prediction("b", version="2", role="shadow", label="0")),
        (b"c", prediction("b")),                                  # champion and shadow of b
    ])
    produce(settings, "outcomes", [(b"a", outcome("a")), (b"b", outcome("b")),
                                   (b"z", outcome("z", label="0"))])  # outcome first
    produce(settings, "predictions", [(b"c", prediction("z"))])
    run_loop(build(settings))
    labeled = read(settings, "predictions.labeled", 4)
    got = {(r["event_id"], r["model_version"], r["role"]): r for r in labeled}
    assert set(got) == {("a", "1", "champion"), ("b", "1", "champion"), ("b", "2", "shadow"),
                        ("z", "1", "champion")}
    assert got[("a", "1", "champion")]["correct"] is True
    assert got[("b", "2", "shadow")]["correct"] is False
    assert got[("z", "1", "champion")]["outcome_label"] == "0"
    assert got[("a", "1", "champion")]["label_delay_ms"] == 60_000 - 5
    assert len(labeled) == 4


def test_a_labeled_prediction_is_no_longer_stored_once_the_broker_has_it(settings, run_loop):
    n = 300
    produce(settings, "predictions", [(b"c", prediction(f"s{i}")) for i in range(n)])
    produce(settings, "outcomes", [(b"s%d" % i, outcome(f"s{i}")) for i in range(n)])
    run_loop(build(settings.model_copy(update={"join_sweep_seconds": 0.2})))
    assert len(read(settings, "predictions.labeled", n)) == n
    r = redis_client(settings)
    keys = r.keys(f"{settings.topic_prefix}join:e:*")
    assert len(keys) == n
    kept = f"{settings.topic_prefix}join:kept"
    deadline = time.monotonic() + 20  # the last batch's prunes go out when the loop is idle
    while r.hlen(kept) and time.monotonic() < deadline:
        time.sleep(0.2)
    # What is left of each event is its outcome and the mark of its prediction; the labeled
    # predictions kept for a replay went once the broker had their labeled records.
    assert r.hlen(kept) == 0
    assert max(r.strlen(k) for k in keys) < 150 < len(prediction("s0"))


def test_join_sends_the_prunes_of_its_last_batches_when_it_stops(settings, run_loop):
    n = 50
    produce(settings, "predictions", [(b"c", prediction(f"q{i}")) for i in range(n)])
    # No pruning while idle: only the next batch would carry the last batch's prunes.
    loop = run_loop(build(settings.model_copy(update={"join_sweep_seconds": 3600})))
    r = redis_client(settings)
    deadline = time.monotonic() + 30
    while len(r.keys(f"{settings.topic_prefix}join:e:*")) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    produce(settings, "outcomes", [(b"q%d" % i, outcome(f"q{i}")) for i in range(n)])
    assert len(read(settings, "predictions.labeled", n)) == n
    kept = f"{settings.topic_prefix}join:kept"
    assert r.hlen(kept) > 0
    loop.stop()
    assert r.hlen(kept) == 0


def test_duplicates_never_label_twice_and_corrections_follow_the_rule(settings, run_loop):
    produce(settings, "predictions", [(b"c", prediction("d")), (b"c", prediction("d"))])
    produce(settings, "outcomes", [
        (b"d", outcome("d", "1", T0 + 1000)),
        (b"d", outcome("d", "1", T0 + 1000)),    # a repeat
        (b"d", outcome("d", "0", T0 + 500)),     # older than what is stored: ignored
        (b"e", outcome("e", "1", T0 + 1000)),
        (b"e", outcome("e", "0", T0 + 2000)),    # a correction before e's prediction arrives
    ])
    def outcomes_seen() -> float:
        return sum(s.value for m in metrics.JOIN_OUTCOMES.collect() for s in m.samples
                   if s.name.endswith("_total"))

    before = outcomes_seen()
    run_loop(build(settings))
    deadline = time.monotonic() + 30
    while outcomes_seen() - before < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    produce(settings, "predictions", [(b"c", prediction("e")), (b"c", prediction("d"))])
    labeled = read(settings, "predictions.labeled", 2, timeout=20)
    assert sorted((r["event_id"], r["outcome_label"]) for r in labeled) == [("d", "1"), ("e", "0")]


def test_expired_predictions_and_unmatched_outcomes_are_counted_and_freed(settings, run_loop):
    s = settings.model_copy(update={"join_window_seconds": 1, "join_grace_seconds": 1,
                                    "join_sweep_seconds": 0.2})
    loop = build(s)
    running = run_loop(loop)
    joiner = loop.handler
    expired0 = metrics.JOIN_EXPIRED._value.get()
    unmatched0 = metrics.JOIN_UNMATCHED._value.get()
    produce(s, "predictions", [(b"c", prediction("lonely-p1")), (b"c", prediction("lonely-p2"))])
    produce(s, "outcomes", [(b"x", outcome("lonely-o"))])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (metrics.JOIN_EXPIRED._value.get() - expired0 == 2
                and metrics.JOIN_UNMATCHED._value.get() - unmatched0 == 1):
            break
        time.sleep(0.2)
    assert metrics.JOIN_EXPIRED._value.get() - expired0 == 2
    assert metrics.JOIN_UNMATCHED._value.get() - unmatched0 == 1
    assert not redis_client(s).keys(f"{s.topic_prefix}join:*")
    # An outcome beyond the window finds nothing: unmatched, never labeled.
    produce(s, "outcomes", [(b"x", outcome("lonely-p1"))])
    time.sleep(3)
    assert read(s, "predictions.labeled", 0, timeout=1) == []
    # The windows are closed by a thread of the service, which ends with it.
    sweeper = joiner.sweeper
    assert sweeper is not None and sweeper.running
    running.stop()
    assert not sweeper.running


def test_malformed_outcomes_are_dead_lettered(settings, run_loop):
    bad = [
        (b"{not json", "not_json"),
        (orjson.dumps({"label": "1", "outcome_time": T0}), "missing_event_id"),
        (orjson.dumps({"event_id": "x", "outcome_time": T0}), "missing_outcome"),
        (orjson.dumps({"event_id": "x", "label": {"a": 1}, "outcome_time": T0}), "wrong_type"),
        (b'{"event_id": "x", "value": NaN, "outcome_time": 1763900000000}', "non_finite"),
        (orjson.dumps({"event_id": "x", "label": "1", "outcome_time": "soon"}),
         "bad_outcome_time"),
    ]
    produce(settings, "outcomes", [(b"k", v) for v, _ in bad])
    run_loop(build(settings))
    dlq = read(settings, "outcomes.dlq", len(bad))
    assert sorted(r["reason"] for r in dlq) == sorted(reason for _, reason in bad)
    assert {r["service"] for r in dlq} == {"join"}


def test_join_killed_mid_stream_labels_every_prediction_once(settings):
    n = 4000
    produce(settings, "predictions", [(b"c%d" % (i % 50), prediction(f"k{i}"))
                                      for i in range(n)])
    env = {**settings_env(settings), "MODELSTREAM_BATCH_SIZE": "100"}
    argv = [sys.executable, "-m", "services.cli.main", "run", "join"]
    outcomes = [(f"k{i}".encode(), outcome(f"k{i}", str(i % 2))) for i in range(n)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    # Killed while batches are in hand, and with outcomes still to come: the rest is only
    # produced after the kill, so the restarted process must label it.
    produce(settings, "outcomes", outcomes[:n // 4])
    read(settings, "predictions.labeled", 1, timeout=60, decode=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    produce(settings, "outcomes", outcomes[n // 4:])
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        labeled = read(settings, "predictions.labeled", n, timeout=120)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    by_id: dict[str, dict] = {}
    for r in labeled:
        first = by_id.setdefault(r["prediction_id"], r)
        # A copy can only be the replay of a record whose batch was not committed.
        assert {k: v for k, v in first.items() if k != "labeled_at"} == {
            k: v for k, v in r.items() if k != "labeled_at"}
    assert len(by_id) == n
    assert all(r["correct"] == (r["outcome_label"] == "1") for r in by_id.values())


# The join state on its own (real Valkey, no broker): chunks, replays, a failure midway, sweep.

WEEK_MS = 7 * 24 * 3600 * 1000


def join_state(settings) -> JoinState:
    return JoinState(redis_client(settings), prefix=settings.topic_prefix, grace_seconds=300)


def chunk(state: JoinState, records: list[tuple], now_ms: int = T0) -> JoinBatch:
    """("p", event, prediction id, stored, offset) or ("o", event, time, label, offset)."""
    batch = state.batch(now_ms)
    for kind, event_id, x, y, offset in records:
        if kind == "p":
            batch.prediction(event_id, x, y, WEEK_MS, b"p0:%d" % offset)
        else:
            batch.outcome(event_id, store_outcome(Outcome(x, y, None), b"o0:%d" % offset),
                          WEEK_MS)
    return batch


def apply(state: JoinState, chunks: list[JoinBatch], fail_once: bool = False) -> list:
    """The replies of every chunk, in order; ``fail_once``: the connection drops after the
    first chunk's replies came back, with the other chunks sent."""
    got: dict[int, list] = {}
    failed = []

    def label(batch: JoinBatch, replies: list) -> None:
        if fail_once and not failed:
            failed.append(batch)
            raise redis.ConnectionError("dropped")
        got[id(batch)] = replies

    state.apply(chunks, label)
    return [got[id(b)] for b in chunks]


def test_records_apply_in_order_across_chunks_and_replays_label_nothing_new(settings):
    state = join_state(settings)
    a, b = b'{"p":"a1"}', b'{"p":"a2"}'
    first = apply(state, [
        chunk(state, [("p", "a", "a1", a, 1), ("p", "a", "a2", b, 2)]),
        chunk(state, [("o", "a", T0 + 10, "1", 1)]),   # labels both stored predictions
        chunk(state, [("p", "a", "a3", b'{"p":"a3"}', 3)]),  # after the outcome: labeled now
    ])
    assert [r[0] for r in first[0]] == [WAITING, WAITING]
    assert first[1][0][0] == FIRST and sorted(first[1][0][1]) == [a, b]
    assert first[2][0][0] == LABELED and first[2][0][1].startswith(b"%d|o0:1|" % (T0 + 10))
    # The same records again (a crash before the commit): each record that labeled something
    # labels it again, every other repeat labels nothing.
    again = apply(state, [chunk(state, [("p", "a", "a1", a, 1), ("o", "a", T0 + 10, "1", 1),
                                        ("p", "a", "a3", b'{"p":"a3"}', 3)])])[0]
    assert again[0] == (IGNORED, None)
    assert again[1][0] == OUTCOME_REPLAY and sorted(again[1][1]) == [a, b]
    assert again[2][0] == REPLAYED
    # Another record with the same content is a repeat, not a replay.
    other = apply(state, [chunk(state, [("o", "a", T0 + 10, "1", 9), ("p", "a", "a1", a, 8)])])[0]
    assert other == [(DUPLICATE, []), (IGNORED, None)]


def test_a_prune_keeps_the_marks_and_drops_what_the_broker_already_has(settings):
    state = join_state(settings)
    r = redis_client(settings)
    key = f"{settings.topic_prefix}join:e:a"
    body = b'{"p":"%s"}' % (b"x" * 500)
    kept, field = f"{settings.topic_prefix}join:kept", "a|o0:1"
    apply(state, [chunk(state, [("p", "a", "a1", body, 1), ("p", "a", "a2", body, 2),
                                ("o", "a", T0 + 10, "1", 1)])])
    # The event keeps its outcome and marks; what the outcome labeled waits beside it.
    assert r.strlen(key) < 150
    assert len(r.hget(kept, field) or b"") > 2 * len(body)
    pruning = chunk(state, [])
    pruning.prunes = [("a", b"o0:7"), ("gone", b"o0:1")]  # another source; no state: nothing
    apply(state, [pruning])
    assert r.hexists(kept, field)
    pruning = chunk(state, [("p", "b", "b1", body, 3)])
    pruning.prunes = [("a", b"o0:1")]
    apply(state, [pruning])
    assert not r.hexists(kept, field) and r.strlen(key) < 150
    assert 0 < r.pttl(key) <= WEEK_MS + 301_000
    # Marks stay: a replay of the outcome republishes nothing (the broker has it), a repeat of
    # a prediction labels nothing, and a new version of the event is labeled at once.
    again = apply(state, [chunk(state, [("o", "a", T0 + 10, "1", 1), ("p", "a", "a1", body, 1),
                                        ("p", "a", "a9", body, 4)])])[0]
    assert again[0] == (OUTCOME_REPLAY, [])
    assert again[1] == (IGNORED, None)
    assert again[2][0] == LABELED
    result = state.sweep(T0 + WEEK_MS + 1000)
    assert (result.events, result.expired_predictions, result.unmatched_outcomes) == (2, 1, 0)


def test_what_a_lost_prune_leaves_goes_when_the_window_closes(settings):
    """join stopped before it sent a prune (the broker had the labeled records): the labeled
    predictions kept for a replay stay until the sweep closes their event's window."""
    state = join_state(settings)
    r = redis_client(settings)
    kept = f"{settings.topic_prefix}join:kept"
    apply(state, [chunk(state, [("p", "a", "a1", b'{"p":"a1"}', 1), ("o", "a", T0, "1", 2),
                                ("o", "b", T0, "1", 3), ("p", "b", "b1", b'{"p":"b1"}', 4)])])
    assert r.hkeys(kept) == [b"a|o0:2"]  # b's prediction came after its outcome: none kept
    assert r.pttl(kept) > 0
    assert state.sweep(T0 + WEEK_MS - 1000).events == 0
    assert r.hlen(kept) == 1
    assert state.sweep(T0 + WEEK_MS + 1000).events == 2
    assert r.hlen(kept) == 0


def test_a_replay_of_an_outcome_labeled_before_the_kept_hash_labels_again(settings):
    """A rolling upgrade: a replica of the earlier version labeled the outcome, which left the
    labeled predictions in the event's string beside their marks (no ``join:kept`` field).
    This version, replaying that outcome after a crash, publishes them again."""
    state = join_state(settings)
    r = redis_client(settings)
    key, kept = f"{settings.topic_prefix}join:e:a", f"{settings.topic_prefix}join:kept"
    a1, a2 = b'{"p":"a1"}', b'{"p":"a2"}'
    apply(state, [chunk(state, [("p", "a", "a1", a1, 1), ("p", "a", "a2", a2, 2),
                                ("o", "a", T0 + 10, "1", 3)])])
    outcome = store_outcome(Outcome(T0 + 10, "1", None), b"o0:3")

    def state_of(*fields: bytes) -> bytes:
        return b"".join(_packed(f) for f in fields)

    assert r.get(key) == state_of(outcome, b"a1", b"", b"o0:3", b"a2", b"", b"o0:3")
    r.set(key, state_of(outcome, b"a1", a1, b"o0:3", b"a2", a2, b"o0:3"), keepttl=True)
    r.delete(kept)  # the same state as the earlier version left it
    again = apply(state, [chunk(state, [("o", "a", T0 + 10, "1", 3), ("o", "a", T0 + 10, "1", 4),
                                        ("p", "a", "a1", a1, 1)])])[0]
    assert again[0][0] == OUTCOME_REPLAY and sorted(again[0][1]) == [a1, a2]
    assert again[1] == (DUPLICATE, [])  # another record with the same outcome: nothing
    assert again[2] == (IGNORED, None)
    # Once the earlier version pruned the string, a replay publishes nothing: the broker has it.
    r.set(key, state_of(outcome, b"a1", b"", b"o0:3", b"a2", b"", b"o0:3"), keepttl=True)
    assert apply(state, [chunk(state, [("o", "a", T0 + 10, "1", 3)])])[0] == [
        (OUTCOME_REPLAY, [])]


def test_a_redis_failure_midway_applies_every_chunk_again_with_the_same_labels(settings):
    def run(s, fail_once: bool) -> list:
        state = join_state(s)
        chunks = [chunk(state, [("p", f"e{i}", f"p{i}", b'{"i":%d}' % i, i) for i in range(6)]),
                  chunk(state, [("o", f"e{i}", T0 + i, "1", i) for i in range(0, 6, 2)]),
                  chunk(state, [("o", f"e{i}", T0 + i, "0", i) for i in range(1, 6, 2)])]
        replies = apply(state, chunks, fail_once)
        return [sorted(stored) for r in replies[1:] for _, stored in r]

    clean = run(settings, False)
    assert clean == [[b'{"i":%d}' % i] for i in (0, 2, 4, 1, 3, 5)]
    assert run(settings.model_copy(update={"topic_prefix": settings.topic_prefix + "x."}),
               True) == clean


def test_the_script_is_loaded_again_after_a_flush(settings):
    state = join_state(settings)
    redis_client(settings).script_flush()
    assert apply(state, [chunk(state, [("o", "f", T0, "1", 1)])]) == [[(FIRST, [])]]


def test_the_sweep_counts_what_each_closed_window_left(settings):
    state = join_state(settings)
    apply(state, [chunk(state, [
        ("p", "both", "v1", b'{"v":1}', 1), ("p", "both", "v2", b'{"v":2}', 2),
        ("o", "both", T0, "1", 1),                                         # labels both
        ("p", "lonely", "v1", b'{"v":1}', 3), ("p", "lonely", "v2", b'{"v":2}', 4),
        ("o", "orphan", T0, "1", 2),                                       # never matched
        ("o", "late", T0, "1", 3), ("p", "late", "v1", b'{"v":1}', 5),    # labeled on arrival
    ])])
    r = redis_client(settings)
    assert r.get(f"{settings.topic_prefix}join:pending") == b"4"
    assert state.sweep(T0 + WEEK_MS - 1000).events == 0  # no window has closed yet
    result = state.sweep(T0 + WEEK_MS + 1000)
    assert (result.events, result.expired_predictions, result.unmatched_outcomes,
            result.pending) == (4, 2, 1, 0)
    assert not r.keys(f"{settings.topic_prefix}join:*")


def test_script_calls_are_pipelined_so_redis_applies_them_back_to_back(settings):
    state = join_state(settings)
    made: list[int] = []
    first_reply_after: list[int] = []

    def chunks():
        for i in range(8):
            made.append(i)
            yield chunk(state, [("o", f"pipe{i}", T0, "1", i)])

    def label(_batch: JoinBatch, replies: list) -> None:
        if not first_reply_after:
            first_reply_after.append(len(made))
        assert replies == [(FIRST, [])]

    assert len(state.apply(chunks(), label)) == 8
    assert first_reply_after == [PIPELINE]  # that many calls sent before a reply was read


def test_a_backlog_is_joined_in_batches_of_join_batch_size(settings, run_loop):
    s = settings.model_copy(update={"batch_size": 500, "join_batch_size": 3000})
    n = 1500
    produce(s, "predictions", [(b"c", prediction(f"bk{i}")) for i in range(n)])
    produce(s, "outcomes", [(b"c", outcome(f"bk{i}")) for i in range(n)])
    loop = build(s)
    sizes: list[int] = []
    handler = loop.handler

    def spy(batch: list) -> list:
        sizes.append(len(batch))
        return handler(batch)

    loop.handler = spy
    run_loop(loop)
    assert len(read(s, "predictions.labeled", n)) == n
    assert max(sizes) > s.batch_size  # the backlog came in batches larger than other services'
    assert max(sizes) <= s.join_batch_size


@pytest.mark.parametrize("n", [0, 1, 31, 32, 255, 256, 65535, 65536])
def test_python_packs_states_as_the_script_does(settings, n):
    data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    assert redis_client(settings).eval("return cmsgpack.pack(ARGV[1])", 0, data) == _packed(data)


def test_avro_output_carries_the_same_labeled_record(settings, run_loop):
    s = settings.model_copy(update={"output_format": "avro"})
    produce(s, "predictions", [(b"c", prediction("av", label="0"))])
    produce(s, "outcomes", [(b"av", outcome("av", label="1"))])
    run_loop(build(s))
    [got] = read(s, "predictions.labeled", 1)
    expected = {**orjson.loads(prediction("av", label="0")), "outcome_label": "1",
                "outcome_value": None, "outcome_time": T0 + 60_000,
                "label_delay_ms": 60_000 - 5, "correct": False}
    assert {k: v for k, v in got.items() if k != "labeled_at"} == expected
