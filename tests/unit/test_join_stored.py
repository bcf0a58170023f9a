"""What join keeps of a prediction and an outcome, and the labeled JSON made of them."""

from __future__ import annotations

import doctest
from typing import Any

import orjson
import pytest

from services.join import stored
from services.join.stored import LABELED_FIELDS, Outcome, labeled, store_outcome, store_prediction
from services.runtime.schemas import raw_schema
from services.runtime.serde import EventDecoder, EventEncoder

PRED = {"prediction_id": "p-1", "event_id": "e-1", "entity_id": "c-1", "model": "m",
        "model_version": "2", "role": "shadow", "served": False, "label": "yes", "score": 0.75,
        "scores": {"yes": 0.75, "no": 0.25}, "features": {"age": 41, "city": "Zürich \"Nord\""},
        "event_time": 1_763_900_000_000, "predicted_at": 1_763_900_000_007, "latency_ms": 7.0}
DECODER = EventDecoder("predictions", max_bytes=1 << 20)
ENCODER = EventEncoder("predictions.labeled", "json")


def test_the_module_examples() -> None:
    assert doctest.testmod(stored, raise_on_error=True).attempted > 0


@pytest.mark.parametrize("outcome", [
    Outcome(1_763_900_060_000, "yes", None),            # correct
    Outcome(1_763_900_060_000, "no | \"quoted\" ✓", None),  # wrong, and a label to escape
    Outcome(1_763_900_060_000, None, 12.5),             # regression: no label
    Outcome(1_763_899_000_000, "yes", 3.0),             # outcome before the prediction
])
def test_labeled_json_is_the_labeled_record(outcome: Outcome) -> None:
    payload = orjson.dumps(PRED)
    kept = store_prediction(*DECODER.decode_exact(payload))
    assert kept is payload  # kept byte for byte
    spliced = outcome.labeled_json(kept, PRED, 1_763_900_070_000)
    record = labeled(PRED, outcome, 1_763_900_070_000)
    assert orjson.loads(spliced) == record == orjson.loads(ENCODER.encode(record))
    assert record["label_delay_ms"] == max(outcome.time - PRED["predicted_at"], 0)


@pytest.mark.parametrize("payload", [
    b' {"a": 1}',                      # padding: the decoder's other path
    b'{"a": 1}\n',
    b'{"a": NaN, "b": 1}',             # read by the standard library, not orjson
    b'{"a": Infinity}',
    None,                               # Avro: no JSON payload at all
])
def test_a_prediction_not_read_by_orjson_as_is_is_written_again(payload: bytes | None) -> None:
    pred: dict[str, Any] = {"a": 1.0, "b": 1}
    as_is = None if payload is None else DECODER.decode_exact(payload)[1]
    kept = store_prediction(pred, as_is)
    assert kept == orjson.dumps(pred)
    assert kept[-1:] == b"}"


def test_the_labeled_fields_are_what_the_schema_adds_to_a_prediction() -> None:
    def fields(topic: str) -> set[str]:
        return {f["name"] for f in raw_schema(topic)["fields"]}

    assert fields("predictions.labeled") - fields("predictions") == LABELED_FIELDS


@pytest.mark.parametrize("label,value", [("1", None), (None, -0.5), ("a|b|c", 1e300)])
def test_an_outcome_is_kept_with_its_time_and_source(label: str | None,
                                                     value: float | None) -> None:
    kept = store_outcome(Outcome(1_763_900_060_000, label, value), b"o3:1234")
    assert kept.split(b"|")[:2] == [b"1763900060000", b"o3:1234"]
    got = Outcome.load(kept)
    assert (got.time, got.label, got.value) == (1_763_900_060_000, label, value)
