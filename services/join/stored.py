"""What join keeps in Redis of a prediction and of an outcome, and the labeled record of both.

A prediction is kept as the JSON object it came as, byte for byte, when orjson reads those
bytes as the very dict join checked (every prediction modelstream writes); any other (Avro,
JSON with NaN literals or padding) is kept as orjson writes the decoded dict. Either way the
labeled record in JSON is that object with the outcome's fields appended: the prediction is
neither decoded into a new dict nor encoded again (Avro output goes through the dict).

An outcome is kept as ``<outcome_time>|<source>|[label, value]``: the join script compares
the time and the source, and the labeled record needs the rest.

>>> pred = {"prediction_id": "p1", "label": "1", "predicted_at": 1763900000005}
>>> stored = store_prediction(pred, b'{"prediction_id":"p1","label":"1","predicted_at":1763900000005}')
>>> outcome = Outcome(1763900060000, "1", None)
>>> outcome.labeled_json(stored, pred, 1763900070000)
b'{"prediction_id":"p1","label":"1","predicted_at":1763900000005,"outcome_label":"1","outcome_value":null,"outcome_time":1763900060000,"label_delay_ms":59995,"correct":true,"labeled_at":1763900070000}'
>>> Outcome.load(store_outcome(Outcome(1763900060000, None, 12.5), b"o0:7"))
Outcome(time=1763900060000, label=None, value=12.5)
"""  # noqa: E501

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["LABELED_FIELDS", "Outcome", "labeled", "store_outcome", "store_prediction"]

LABELED_FIELDS = frozenset(("outcome_label", "outcome_value", "outcome_time", "label_delay_ms",
                            "correct", "labeled_at"))


def store_prediction(pred: dict[str, Any], as_is: bytes | None) -> bytes:
    """``as_is``: the record's bytes when they are byte for byte ``pred``'s JSON object, as
    :meth:`EventDecoder.decode_exact <services.runtime.serde.EventDecoder.decode_exact>` says;
    None for anything else (NaN or Infinity read by the standard library, padding, a byte
    order mark, Avro), which is written again."""
    return as_is if as_is is not None else orjson.dumps(pred)


def store_outcome(outcome: Outcome, source: bytes) -> bytes:
    return b"%d|%s|%s" % (outcome.time, source, orjson.dumps((outcome.label, outcome.value)))


class Outcome:
    """An outcome as the labeled records need it; its JSON fields are written once."""

    __slots__ = ("_fields", "label", "time", "value")

    def __init__(self, time: int, label: str | None, value: float | None) -> None:
        self.time = time
        self.label = label
        self.value = value
        self._fields: bytes | None = None

    @classmethod
    def load(cls, stored: bytes) -> Outcome:
        """From ``<time>|<source>|[label, value]``."""
        t, _, rest = stored.partition(b"|")
        label, value = orjson.loads(rest.partition(b"|")[2])
        return cls(int(t), label, value)

    def __repr__(self) -> str:
        return f"Outcome(time={self.time}, label={self.label!r}, value={self.value!r})"

    def labeled_json(self, stored: bytes, pred: dict[str, Any], now_ms: int) -> bytes:
        """The labeled record in JSON: ``stored`` (the JSON of ``pred``, which has none of
        :data:`LABELED_FIELDS`) with the outcome's fields appended."""
        fields = self._fields
        if fields is None:
            fields = self._fields = b',"outcome_label":%s,"outcome_value":%s,"outcome_time":%d' % (
                orjson.dumps(self.label), orjson.dumps(self.value), self.time)
        label = self.label
        correct = b"null" if label is None else b"true" if pred["label"] == label else b"false"
        return b'%s%s,"label_delay_ms":%d,"correct":%s,"labeled_at":%d}' % (
            stored[:-1], fields, max(self.time - pred["predicted_at"], 0), correct, now_ms)


def labeled(pred: dict[str, Any], outcome: Outcome, now_ms: int) -> dict[str, Any]:
    """The ``predictions.labeled`` record: the prediction, its outcome and the label delay."""
    record = dict(pred)
    record["outcome_label"] = outcome.label
    record["outcome_value"] = outcome.value
    record["outcome_time"] = outcome.time
    record["label_delay_ms"] = max(outcome.time - pred["predicted_at"], 0)
    record["correct"] = (pred["label"] == outcome.label) if outcome.label is not None else None
    record["labeled_at"] = now_ms
    return record
