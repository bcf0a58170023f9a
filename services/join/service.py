"""join: labels predictions with the outcomes that arrive later (or earlier), on event id.

Consumes ``predictions`` and ``outcomes``; publishes ``predictions.labeled`` — each prediction
(every version and role) with its outcome and the label delay — and dead-letters malformed
outcomes to ``outcomes.dlq``. The state lives in Redis (see :mod:`.state`), so replicas share
it and a restart loses nothing. Predictions that expire unlabeled and outcomes that never find a
prediction are counted when their join window closes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np
import orjson
import redis
from confluent_kafka import Message

from ..runtime import kafka, metrics, topics
from ..runtime.deadletter import DeadLetters
from ..runtime.errors import DecodeError, ValidationError
from ..runtime.loop import Output, Outputs, StreamLoop
from ..runtime.records import check_prediction
from ..runtime.serde import EventDecoder, EventEncoder
from ..runtime.service import redis_client
from ..runtime.settings import Settings
from ..runtime.times import epoch_ms
from .state import (
    CORRECTION,
    DUPLICATE,
    FIRST,
    IGNORED,
    LABELED,
    OUTCOME_REPLAY,
    REPLAYED,
    WAITING,
    JoinBatch,
    JoinState,
    Reply,
)
from .stored import LABELED_FIELDS, Outcome, labeled, store_outcome, store_prediction

__all__ = ["OutcomeJoiner", "Sweeper", "build", "validate_outcome"]

log = logging.getLogger(__name__)

SERVICE = "join"
# Records per script call: a script blocks every other client of Redis (ingest's merges)
# while it runs, 1–2 ms of Valkey's CPU for 250 records (measured alone; longer on a busy
# machine).
CHUNK = 250
# Batches whose labeled records await the broker's acks: join spends little CPU per record and
# waits on Redis and the broker, so it keeps more batches on their way than the default.
IN_FLIGHT = 4
_PRED_RESULTS = {WAITING: "stored", LABELED: "labeled", IGNORED: "repeat_ignored",
                 REPLAYED: "replayed"}
_OUT_RESULTS = {FIRST: "first", DUPLICATE: "duplicate_ignored", CORRECTION: "correction",
                OUTCOME_REPLAY: "replayed"}


def validate_outcome(raw: dict[str, Any], fallback_time_ms: int) -> dict[str, Any]:
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValidationError("missing_event_id", f"event_id must be a non-empty string: {raw}")
    label, value = raw.get("label"), raw.get("value")
    if label is None and value is None:
        raise ValidationError("missing_outcome", "an outcome needs a label or a value")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise ValidationError("wrong_type", f"label must be a string, got {label!r}")
        label = str(label)
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("wrong_type", f"value must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValidationError("non_finite", f"value {value} is not finite")
        value = float(value)
    given = raw.get("outcome_time", fallback_time_ms)
    # Bounded above too: a time past 2286 is a mistake, and past 2**63 it breaks Avro output.
    t = epoch_ms(given)
    if t is None:
        raise ValidationError("bad_outcome_time", f"outcome_time must be epoch ms or "
                              f"ISO-8601 with a UTC offset, got {given!r:.80}")
    return {"event_id": event_id, "label": label, "value": value, "outcome_time": t}


class _Tally:
    """What a batch counts, added to the metrics once per batch."""

    __slots__ = ("delays", "labeled", "outcomes", "predictions")

    def __init__(self) -> None:
        self.predictions = [0, 0, 0, 0]  # by prediction status
        self.outcomes = [0, 0, 0, 0, 0]  # by outcome status
        self.labeled: dict[tuple[str, str, str], int] = {}
        self.delays: dict[str, list[int]] = {}  # label delays (ms) by model

    def add(self, other: _Tally) -> None:
        for i, n in enumerate(other.predictions):
            self.predictions[i] += n
        for i, n in enumerate(other.outcomes):
            self.outcomes[i] += n
        for key, n in other.labeled.items():
            self.labeled[key] = self.labeled.get(key, 0) + n
        for model, delays in other.delays.items():
            self.delays.setdefault(model, []).extend(delays)


class _Chunk(JoinBatch):
    """Part of a consumed batch: its records for the script, and what the handler makes of
    them — per record in the call, the prediction ((dict, stored JSON)) or the outcome."""

    __slots__ = ("held", "labeled_by", "outputs", "sources", "tally")

    def __init__(self, state: JoinState, now_ms: int) -> None:
        super().__init__(state, now_ms)
        self.held: list[Any] = []
        self.sources: list[tuple[str, bytes]] = []  # (event id, source) of each outcome
        self.outputs: list[Output] = []  # the labeled records
        self.labeled_by: list[tuple[str, bytes]] = []  # the outcomes of stored predictions
        self.tally = _Tally()


class OutcomeJoiner:
    """The batch handler: a batch is a few script calls in one round trip, Redis applying one
    chunk of records while the handler decodes the next and labels the one before."""

    def __init__(self, settings: Settings, state: JoinState) -> None:
        self.state = state
        self.predictions_topic = settings.topics.predictions
        self.out_topic = settings.topics.name(topics.PREDICTIONS_LABELED)
        self.window_ms = settings.join_window_seconds * 1000
        self.windows_ms = {m: s * 1000 for m, s in settings.join_windows.items()}
        self.sweep_every = settings.join_sweep_seconds
        self.sweeper: Sweeper | None = None
        self._pruned = 0.0
        reg = settings.schema_registry_url
        self.prediction_decoder = EventDecoder(topics.PREDICTIONS, max_bytes=1 << 22,
                                               registry_url=reg)
        self.outcome_decoder = EventDecoder(topics.OUTCOMES, max_bytes=settings.max_event_bytes,
                                            registry_url=reg)
        self.encoder = EventEncoder(topics.PREDICTIONS_LABELED, settings.output_format, reg)
        # JSON out: the stored prediction's JSON, with the outcome's fields appended.
        self.splice = settings.output_format == "json"
        self.dead_letters = DeadLetters(settings, SERVICE, topics.OUTCOMES_DLQ)
        self._pred_counters = {s: metrics.JOIN_PREDICTIONS.labels(r)
                               for s, r in _PRED_RESULTS.items()}
        self._out_counters = {s: metrics.JOIN_OUTCOMES.labels(r) for s, r in _OUT_RESULTS.items()}
        self._labeled_counters: dict[tuple[str, str, str], Any] = {}
        self._delay_histograms: dict[str, Any] = {}
        # Outcomes whose labeled records the broker has acknowledged: their stored predictions
        # are pruned by the next script call (see .state).
        self._prunes: list[tuple[str, bytes]] = []

    def __call__(self, batch: list[Message]) -> list[Output]:
        now_ms = int(time.time() * 1000)
        outputs: list[Output] = []  # dead letters first, then the labeled records
        chunks = (self._intake(batch[i:i + CHUNK], outputs, now_ms, first=i == 0)
                  for i in range(0, len(batch), CHUNK))
        tally = _Tally()
        labeled_by: list[tuple[str, bytes]] = []
        for chunk in self.state.apply(chunks, self._label):
            assert isinstance(chunk, _Chunk)
            outputs += chunk.outputs
            labeled_by += chunk.labeled_by
            tally.add(chunk.tally)
        self._count(tally)
        if not labeled_by:
            return outputs
        return Outputs(outputs, on_delivered=lambda: self._prunes.extend(labeled_by))

    def _intake(self, batch: list[Message], dead: list[Output], now_ms: int,
                first: bool = False) -> _Chunk:
        """Decode and check each record once; what passes joins the chunk's script call (the
        ``first`` of a batch also takes the prunes due)."""
        chunk = _Chunk(self.state, now_ms)
        if first:
            self._take_prunes(chunk)
        held = chunk.held
        predictions_topic = self.predictions_topic
        decode_prediction = self.prediction_decoder.decode_exact
        decode_outcome = self.outcome_decoder.decode
        windows, window = self.windows_ms, self.window_ms
        for msg in batch:
            try:
                if msg.topic() == predictions_topic:
                    payload = msg.value()
                    pred, as_is = decode_prediction(payload)
                    check_prediction(pred)  # stored in Redis only if its outcome can label it
                    stored = store_prediction(pred, as_is)
                    chunk.prediction(
                        pred["event_id"], pred["prediction_id"], stored,
                        windows.get(pred["model"], window),
                        b"p%d:%d" % (msg.partition() or 0, msg.offset() or 0))
                    held.append((pred, stored))
                else:
                    raw = decode_outcome(msg.value())
                    if "outcome_time" in raw:
                        fallback = now_ms
                    else:
                        ts_type, ts = msg.timestamp()
                        fallback = ts if ts_type else now_ms
                    valid = validate_outcome(raw, fallback)
                    outcome = Outcome(valid["outcome_time"], valid["label"], valid["value"])
                    source = b"o%d:%d" % (msg.partition() or 0, msg.offset() or 0)
                    chunk.outcome(valid["event_id"], store_outcome(outcome, source), window)
                    held.append(outcome)
                    chunk.sources.append((valid["event_id"], source))
            except DecodeError as exc:
                dead.append(self.dead_letters.output(msg, exc.reason, exc.detail, now_ms))
        return chunk

    def _label(self, batch: JoinBatch, replies: list[Reply]) -> None:
        """The chunk's labeled records and counts, from its replies (replacing any earlier)."""
        assert isinstance(batch, _Chunk)
        outputs: list[Output] = []
        tally = _Tally()
        labeled_by: list[tuple[str, bytes]] = []
        batch.outputs, batch.tally, batch.labeled_by = outputs, tally, labeled_by
        out_topic, append, emit, loads = self.out_topic, outputs.append, self._labeled, orjson.loads
        now_ms = batch.now_ms
        sources = iter(batch.sources)
        for item, (status, got) in zip(batch.held, replies, strict=True):
            if type(item) is tuple:  # a prediction, labeled now by the stored outcome
                tally.predictions[status] += 1
                if got is not None:
                    pred, stored = item
                    append(Output(out_topic, emit(pred, stored, Outcome.load(got), tally,
                                                  now_ms), pred["entity_id"]))
            else:  # an outcome, and the stored predictions it labels now
                tally.outcomes[status] += 1
                source = next(sources)
                if got:
                    labeled_by.append(source)
                for stored in got:
                    pred = loads(stored)
                    append(Output(out_topic, emit(pred, stored, item, tally, now_ms),
                                  pred["entity_id"]))

    def _labeled(self, pred: dict[str, Any], stored: bytes, outcome: Outcome, tally: _Tally,
                 now_ms: int) -> bytes:
        key = (pred["model"], pred["model_version"], pred["role"])
        tally.labeled[key] = tally.labeled.get(key, 0) + 1
        delays = tally.delays.get(key[0])
        if delays is None:
            delays = tally.delays[key[0]] = []
        delays.append(outcome.time - pred["predicted_at"])
        if self.splice and LABELED_FIELDS.isdisjoint(pred):
            return outcome.labeled_json(stored, pred, now_ms)
        return self.encoder.encode(labeled(pred, outcome, now_ms))

    def _count(self, tally: _Tally) -> None:
        for status, n in enumerate(tally.predictions):
            if n:
                self._pred_counters[status].inc(n)
        for status, n in enumerate(tally.outcomes):
            if n:
                self._out_counters[status].inc(n)
        for key, n in tally.labeled.items():
            counter = self._labeled_counters.get(key)
            if counter is None:
                counter = self._labeled_counters[key] = metrics.JOIN_LABELED.labels(*key)
            counter.inc(n)
        for model, delays in tally.delays.items():
            histogram = self._delay_histograms.get(model)
            if histogram is None:
                histogram = self._delay_histograms[model] = metrics.LABEL_DELAY.labels(model)
            seconds = np.maximum(np.array(delays, dtype=np.float64), 0.0) / 1000
            metrics.observe_many(histogram, seconds)

    def prune(self, retry: bool = True) -> None:
        """Prune now what the next batch would: the stored predictions of the outcomes whose
        labeled records the broker has acknowledged."""
        if self._prunes:
            batch = self.state.batch(int(time.time() * 1000))
            self._take_prunes(batch)
            self.state.apply([batch], lambda _batch, _replies: None, retry=retry)

    def _take_prunes(self, batch: JoinBatch) -> None:
        """The prunes due go with ``batch``'s script call."""
        batch.prunes, self._prunes = self._prunes, []

    def idle(self) -> None:
        """Between batches: start the sweeper (once), and every ``join_sweep_seconds`` send
        the prunes due, so none waits for the next batch while the topics are quiet."""
        if self.sweeper is None:
            self.sweeper = Sweeper(self.state, self.sweep_every)
            self.sweeper.start()
        if time.monotonic() - self._pruned >= self.sweep_every:
            self._pruned = time.monotonic()
            self.prune()

    def close(self) -> None:
        """After the loop's last acknowledgements: send their prunes (once; Redis down, what
        they would free stays until its window closes), and stop the sweeper."""
        try:
            self.prune(retry=False)
        except redis.RedisError as exc:
            log.warning("the last prunes were not sent (%s): the sweep frees them when their "
                        "windows close", exc)
        if self.sweeper is not None:
            self.sweeper.stop()


class Sweeper:
    """Closes the join windows that are due, every ``every`` seconds, in a thread of its own
    with its own Redis connection: counts what expired and frees the state. The loop never
    waits for it; Redis runs each sweep script between the loop's batch scripts."""

    def __init__(self, state: JoinState, every: float, limit: int = 1000) -> None:
        self.state = state
        self.every = every
        self.limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="join-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sweep()
            except Exception:  # a sweep that fails is retried at the next tick; never fatal
                log.exception("join sweep failed; retrying in %.1fs", self.every)

    def sweep(self) -> None:
        """Every window due now, ``limit`` events per script call."""
        while not self._stop.is_set():
            result = self.state.sweep(int(time.time() * 1000), self.limit)
            metrics.JOIN_EXPIRED.inc(result.expired_predictions)
            metrics.JOIN_UNMATCHED.inc(result.unmatched_outcomes)
            metrics.JOIN_PENDING.set(result.pending)
            if result.events < self.limit:
                break


def build(settings: Settings) -> StreamLoop:
    state = JoinState(redis_client(settings), prefix=settings.topic_prefix,
                      grace_seconds=settings.join_grace_seconds)
    joiner = OutcomeJoiner(settings, state)
    return StreamLoop(
        settings,
        service=SERVICE,
        group_id=f"{settings.topic_prefix}modelstream-join",
        topics=[settings.topics.predictions, settings.topics.outcomes],
        handler=joiner,
        on_idle=joiner.idle,
        on_exit=joiner.close,
        max_in_flight=IN_FLIGHT,
        batch_size=settings.join_batch_size,
        consumer_overrides=kafka.THROUGHPUT_CONSUMER,
        producer_overrides=kafka.THROUGHPUT_PRODUCER,
    )
