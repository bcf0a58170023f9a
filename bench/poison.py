"""Poison pills: a stream with a share of malformed records mixed in, each with the reason code
it must be dead-lettered with. Used by ``make bench`` (``--only poison``: the valid part's
throughput next to the clean run's) and by the integration test that reconciles the counts.

The malformed records are of every kind a real stream sees: text that is not JSON, binary
garbage, nesting past any parser's limit, an event over the size limit, Schema Registry frames
with an unknown id, JSON that is not an object, lone surrogates, and events that parse but break
the feature spec (NaN, wrong types, out of range, unknown category, model or feature, missing
identity).
"""

from __future__ import annotations

import random

import orjson

__all__ = ["POISON", "POISON_VALID", "poison_stream"]

_FULL = {"salary": 52000.0, "commission": 0.0, "age": 41, "elevel": 2, "car": 3, "zipcode": 1,
         "hvalue": 150000.0, "hyears": 12, "loan": 20000.0}


def _event(i: int, **changes: object) -> bytes:
    event: dict[str, object] = {"event_id": f"poison-{i}", "entity_id": f"p-{i % 97}",
                                "event_time": 1_763_900_000_000, "model": "agrawal",
                                "features": dict(_FULL)}
    features = changes.pop("features", None)
    if isinstance(features, dict):
        event["features"] = {**_FULL, **features}
    event.update(changes)
    return orjson.dumps(event)


# kind → (payload for the i-th poison record, the reason ingest must give it)
POISON: dict[str, tuple[object, str]] = {
    "text": (lambda i: b"hello %d, not json" % i, "not_json"),
    "binary": (lambda i: b"\x02\xff" + bytes([i % 251]) * 3, "not_avro"),
    "deep": (lambda i: b"[" * 5000, "not_json"),
    "huge": (lambda i: b'{"event_id": "' + b"x" * 70_000 + b'"}', "too_large"),
    "unknown_schema_id": (lambda i: b"\x00" + (7 + i).to_bytes(4, "big") + b"\x02ab",
                          "unknown_schema_id"),
    "array": (lambda i: b"[1, 2, %d]" % i, "not_an_object"),
    "surrogate": (lambda i: b'{"event_id": "\\ud800-%d"}' % i, "not_json"),
    "nan": (lambda i: _event(i).replace(b'"loan":20000.0', b'"loan":NaN'), "non_finite"),
    "no_entity": (lambda i: _event(i, entity_id=None), "missing_entity_id"),
    "wrong_type": (lambda i: _event(i, features={"salary": "lots"}), "wrong_type"),
    "out_of_range": (lambda i: _event(i, features={"age": 250}), "out_of_range"),
    "unknown_category": (lambda i: _event(i, features={"car": 99}), "unknown_category"),
    "unknown_model": (lambda i: _event(i, model="no-such-model"), "unknown_model"),
    "unknown_feature": (lambda i: _event(i, features={"colour": 1}), "unknown_feature"),
}

# Records on features.valid that predict cannot score, and the reason it must give them.
POISON_VALID: dict[str, tuple[object, str]] = {
    "text": (lambda i: b"not json %d" % i, "not_json"),
    "no_features": (lambda i: orjson.dumps({"event_id": f"v{i}", "entity_id": "c",
                                            "event_time": 1_763_900_000_000}), "not_scorable"),
    "missing_feature": (lambda i: orjson.dumps({
        "event_id": f"v{i}", "entity_id": "c", "event_time": 1_763_900_000_000,
        "features": {k: v for k, v in _FULL.items() if k != "age"}}), "not_scorable"),
    "model_object": (lambda i: orjson.dumps({
        "event_id": f"v{i}", "entity_id": "c", "event_time": 1_763_900_000_000,
        "model": {"name": "agrawal"}, "features": _FULL}), "not_scorable"),
    "array": (lambda i: b"[%d]" % i, "not_an_object"),
}


def poison_stream(
    records: list[tuple[bytes, bytes]], rate: float, *, kinds: dict[str, tuple[object, str]]
    = POISON, seed: int = 3,
) -> tuple[list[tuple[bytes, bytes]], dict[int, str]]:
    """``records`` with a share ``rate`` of malformed records inserted among them, kinds in
    turn; returns the stream and, by position, the reason each malformed record must get."""
    rng = random.Random(seed)
    n_bad = round(len(records) * rate / (1 - rate))
    slots = set(rng.sample(range(len(records) + n_bad), n_bad))
    names = list(kinds)
    out: list[tuple[bytes, bytes]] = []
    reasons: dict[int, str] = {}
    good = iter(records)
    for pos in range(len(records) + n_bad):
        if pos in slots:
            make, reason = kinds[names[len(reasons) % len(names)]]
            out.append((b"poison", make(len(reasons))))  # type: ignore[operator]
            reasons[pos] = reason
        else:
            out.append(next(good))
    return out, reasons
