"""Sustained load for chaos and soak runs: Agrawal feature events at a steady rate (a share of
them deliberately broken), and the outcome of each valid event a moment later (a share of those
malformed, plus outcomes of events that never existed). Everything sent is remembered, so the
topics can be reconciled against it afterwards."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Producer

from services.cli.traffic import BAD_KINDS, TrafficEvent, agrawal_events
from services.runtime import kafka
from services.runtime.settings import Settings

__all__ = ["Load", "Sent"]

MALFORMED_OUTCOMES: dict[str, dict[str, object]] = {
    "wrong_type": {"label": {"x": 1}}, "missing_outcome": {"label": None}}


@dataclass
class Sent:
    """What the load produced, and what each record must become."""

    features: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # event id → expected DLQ reason
    valid: set[str] = field(default_factory=set)  # event ids that must be predicted
    outcomes: dict[str, str] = field(default_factory=dict)  # event id → true label
    malformed_outcomes: dict[str, str] = field(default_factory=dict)  # event id → reason
    ghost_outcomes: set[str] = field(default_factory=set)  # outcomes of no event
    failed_deliveries: int = 0

    def merge(self, other: Sent) -> Sent:
        """Both runs' records together (they share the topics)."""
        return Sent(
            features=self.features + other.features, bad={**self.bad, **other.bad},
            valid=self.valid | other.valid, outcomes={**self.outcomes, **other.outcomes},
            malformed_outcomes={**self.malformed_outcomes, **other.malformed_outcomes},
            ghost_outcomes=self.ghost_outcomes | other.ghost_outcomes,
            failed_deliveries=self.failed_deliveries + other.failed_deliveries)

    @property
    def outcome_records(self) -> int:
        return len(self.outcomes) + len(self.malformed_outcomes) + len(self.ghost_outcomes)


class Load:
    """Produces ``rate`` feature events a second from a thread until :meth:`stop`."""

    def __init__(self, settings: Settings, *, rate: float, total: int, bad_rate: float = 0.05,
                 outcome_delay: float = 1.0, seed: int = 5, pool: int = 50_000,
                 concept: tuple[int, int] | None = None) -> None:
        """``concept``: (event index, Agrawal classification function): from that event on,
        the outcomes follow that function instead of the one the demo model learned (0)."""
        self.settings = settings
        self.rate = rate
        self.total = total
        self.outcome_delay = outcome_delay
        # Full events only: a replayed partial update may be completed from newer stored
        # values, so only full events have a deterministic replay (see the README). Long runs
        # cycle through a pool of ``pool`` events, each round under new event ids.
        self.events: list[TrafficEvent] = list(
            agrawal_events(min(total, pool), bad_rate=bad_rate, partial_rate=0.0, seed=seed,
                           id_prefix=f"s{seed}"))
        self.switch_at = concept[0] if concept else total
        self.switched: list[TrafficEvent] = [] if concept is None else list(agrawal_events(
            min(max(total - concept[0], 1), pool), bad_rate=bad_rate, partial_rate=0.0,
            seed=seed + 1, classification_function=concept[1],
            id_prefix=f"s{seed}f{concept[1]}"))
        self.sent = Sent()
        self.producer: Producer = kafka.producer(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._lock = threading.Lock()
        self.paused = threading.Event()

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> Sent:
        self._stop.set()
        self._thread.join(60)
        left = self.producer.flush(60)
        self.sent.failed_deliveries += left
        return self.sent

    def done(self) -> bool:
        return not self._thread.is_alive()

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:
            with self._lock:
                self.sent.failed_deliveries += 1

    def _produce(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _run(self) -> None:
        t = self.settings.topics
        pending: deque[tuple[float, int, TrafficEvent]] = deque()
        started = time.monotonic()
        i = 0
        while not self._stop.is_set() and (i < self.total or pending):
            now = time.monotonic()
            due = int((now - started) * self.rate)
            # The stop is checked here too: at an unbounded rate this loop only ends on a pause,
            # and once the soak's saturation control has stopped, no pause comes.
            while (i < self.total and i < due and not self.paused.is_set()
                   and not self._stop.is_set()):
                ev = self._event(i)
                self._produce(t.features, ev.value, ev.key)
                self.sent.features += 1
                if ev.kind in BAD_KINDS:
                    self.sent.bad[ev.event_id] = BAD_KINDS[ev.kind]
                else:
                    self.sent.valid.add(ev.event_id)
                    pending.append((now + self.outcome_delay, i, ev))
                i += 1
            while pending and pending[0][0] <= now:
                _, n, ev = pending.popleft()
                self._outcome(ev, n)
            self.producer.poll(0)
            if self.paused.is_set():  # the clock stops while paused
                started += 0.01
            time.sleep(0.01)

    def _event(self, i: int) -> TrafficEvent:
        events = self.events
        if i >= self.switch_at:
            events, i = self.switched, i - self.switch_at
        ev = events[i % len(events)]
        rounds = i // len(events)
        if not rounds:
            return ev
        new_id = f"{ev.event_id}r{rounds}"
        value = ev.value.replace(f'"{ev.event_id}"'.encode(), f'"{new_id}"'.encode(), 1)
        return TrafficEvent(ev.key, value, ev.kind, new_id, ev.label)

    def _outcome(self, ev: TrafficEvent, i: int) -> None:
        t = self.settings.topics
        now_ms = int(time.time() * 1000)
        record: dict[str, object] = {"event_id": ev.event_id, "label": str(ev.label),
                                     "outcome_time": now_ms}
        if i % 50 == 7:
            reason = "wrong_type" if i % 100 == 7 else "missing_outcome"
            record.update(MALFORMED_OUTCOMES[reason])
            self.sent.malformed_outcomes[ev.event_id] = reason
        else:
            self.sent.outcomes[ev.event_id] = str(ev.label)
        self._produce(t.outcomes, orjson.dumps(record), ev.event_id.encode())
        if i % 50 == 13:
            ghost = f"ghost-{ev.event_id}"
            self.sent.ghost_outcomes.add(ghost)
            self._produce(t.outcomes, orjson.dumps({**record, "event_id": ghost,
                                                    "label": "1"}), ghost.encode())
