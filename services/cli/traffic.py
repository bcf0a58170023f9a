"""Demo and benchmark traffic: Agrawal feature events as a producer would send them, with
partial updates and a share of deliberately bad events (each kind named, for reconciliation)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from ..models.agrawal import AGRAWAL_FEATURES, generate

__all__ = [
    "BAD_KINDS",
    "PHASES",
    "STORY",
    "TrafficEvent",
    "agrawal_events",
    "drifting_events",
    "story_events",
]

NAMES = [f.name for f in AGRAWAL_FEATURES]

# Each bad kind and the reason code ingest must give it.
BAD_KINDS: dict[str, str] = {
    "not_json": "not_json",
    "missing_entity": "missing_entity_id",
    "out_of_range": "out_of_range",
    "unknown_category": "unknown_category",
    "wrong_type": "wrong_type",
    "non_finite": "non_finite",
    "unknown_model": "unknown_model",
}


@dataclass(slots=True)
class TrafficEvent:
    key: bytes
    value: bytes
    kind: str  # "full", "partial" or a BAD_KINDS key
    event_id: str
    label: int | None


def agrawal_events(
    n: int,
    *,
    seed: int = 7,
    entities: int = 5000,
    partial_rate: float = 0.2,
    bad_rate: float = 0.03,
    classification_function: int = 0,
    id_prefix: str = "e",
    min_age: int | None = None,
) -> Iterator[TrafficEvent]:
    """``min_age`` keeps only older customers: a covariate shift that stays inside the spec."""
    rng = random.Random(seed)
    x, y = generate(n * 3 if min_age else n, seed=seed,
                    classification_function=classification_function)
    if min_age is not None:
        older = x[:, NAMES.index("age")] >= min_age
        x, y = x[older][:n], y[older][:n]
        n = len(y)
    seen: list[str] = []
    for i in range(n):
        row = x[i]
        entity = f"c-{rng.randrange(entities)}"
        features: dict[str, object] = {}
        for j, spec in enumerate(AGRAWAL_FEATURES):
            v = float(row[j])
            features[spec.name] = int(v) if spec.type != "float" else round(v, 2)
        event_id = f"{id_prefix}-{i}"
        kind = "full"
        if seen and rng.random() < partial_rate:
            entity = rng.choice(seen)
            keep = rng.sample(NAMES, k=rng.randint(1, 3))
            features = {k: features[k] for k in keep}
            kind = "partial"
        event: dict[str, object] = {
            "event_id": event_id,
            "entity_id": entity,
            "event_time": int(time.time() * 1000),
            "model": "agrawal",
            "features": features,
        }
        value: bytes
        if rng.random() < bad_rate:
            kind = rng.choice(list(BAD_KINDS))
            value = _spoil(kind, event)
        else:
            value = orjson.dumps(event)
            if kind == "full":
                seen.append(entity)
        yield TrafficEvent(entity.encode(), value, kind, event_id, int(y[i]))


def _spoil(kind: str, event: dict[str, object]) -> bytes:
    feats = dict(event["features"])  # type: ignore[call-overload]
    if kind == "not_json":
        return orjson.dumps(event)[:-7] + b"}"
    if kind == "missing_entity":
        event = {k: v for k, v in event.items() if k != "entity_id"}
    elif kind == "out_of_range":
        feats["age"] = 250
    elif kind == "unknown_category":
        feats["car"] = 99
    elif kind == "wrong_type":
        feats["salary"] = "lots"
    elif kind == "non_finite":
        return orjson.dumps({**event, "features": {**feats, "loan": 0.0}}).replace(
            b'"loan":0.0', b'"loan":NaN'
        )
    elif kind == "unknown_model":
        event = {**event, "model": "no-such-model"}
    return orjson.dumps({**event, "features": feats})


# The demo's story: normal traffic, then the world changes (the label function switches and
# the customers get older), then it goes back. Fractions of the run, and what each phase is.
PHASES: list[tuple[float, str, dict[str, object]]] = [
    (0.4, "normal", {"classification_function": 0}),
    (0.3, "drift: concept switch + older customers",
     {"classification_function": 2, "min_age": 50}),
    (0.3, "back to normal", {"classification_function": 0}),
]


def drifting_events(n: int, *, seed: int = 7, bad_rate: float = 0.03) -> Iterator[
        tuple[str, TrafficEvent]]:
    """``(phase name, event)`` through the phases of :data:`PHASES`."""
    for i, (share, name, kwargs) in enumerate(PHASES):
        count = int(n * share) if i < len(PHASES) - 1 else n - sum(
            int(n * s) for s, _, _ in PHASES[:-1])
        for ev in agrawal_events(count, seed=seed + i, bad_rate=bad_rate,
                                 id_prefix=f"e{i}", **kwargs):  # type: ignore[arg-type]
            yield name, ev


# The closed loop's story (``modelstream demo``): normal traffic, then a change that stays —
# the label function switches and the customers get older — until a retrained model serves it.
STORY: dict[str, dict[str, object]] = {
    "normal": {"classification_function": 0},
    "drift": {"classification_function": 2, "min_age": 50},
}


def story_events(phase_of: Callable[[], str], *, seed: int = 7, bad_rate: float = 0.03,
                 block: int = 2000) -> Iterator[tuple[str, TrafficEvent]]:
    """Endless ``(phase, event)`` pairs; ``phase_of()`` (a key of :data:`STORY`) is asked
    before every event, and a change of phase takes effect at once."""
    n = 0
    while True:
        phase = phase_of()
        for ev in agrawal_events(block, seed=seed * 7919 + n, bad_rate=bad_rate,
                                 id_prefix=f"{phase[0]}{n}", **STORY[phase]):  # type: ignore[arg-type]
            yield phase, ev
            if phase_of() != phase:
                break
        n += 1
