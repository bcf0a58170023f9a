"""Hostile inputs, as hypothesis strategies: what a broken or malicious producer can write.

Every strategy yields the *bytes* of a record value, so the same inputs drive the decoders,
the validators and the services' batch handlers (and the atheris run, which maps its random
bytes onto the same shapes).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import fastavro
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from services.runtime.schemas import schema_for

__all__ = [
    "FUZZ",
    "FUZZ_HANDLERS",
    "UNICODE_EDGES",
    "avro_with_hostile_values",
    "confluent_frames",
    "deep_json",
    "event_shaped_json",
    "hostile_payloads",
    "json_values",
]

# Bounded in `make test`; `make fuzz` sets MODELSTREAM_FUZZ_EXAMPLES far higher.
FUZZ = settings(
    max_examples=int(os.environ.get("MODELSTREAM_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
# The handlers run batches on the real Valkey: a third as many examples.
FUZZ_HANDLERS = settings(FUZZ, max_examples=max(20, FUZZ.max_examples // 3))

# Lone surrogates (as JSON escapes: raw ones are not UTF-8), NUL, right-to-left override, BOM,
# zero-width joiner, combining marks, a 4-byte emoji, noncharacters, the Unicode maximum.
UNICODE_EDGES = [
    "\\ud800", "\\udfff", "\\ud83d", "\\u0000", "\u202e", "\ufeff", "\u200d", "e\u0301",
    "\U0001f600", "\uffff", "\ufffe", "\U0010ffff", "", " ", "\t\n", "|", "\x7f", "%s%n",
]
HUGE_INTS = [2**63, -(2**63) - 1, 2**64, 10**40, -1, 0, 2**53 + 1, 10**13 + 1]
ODD_FLOATS = ["NaN", "Infinity", "-Infinity", "1e400", "-0.0", "5e-324", "1.7976931348623157e308"]


# JSON text fragments: a raw token is spliced in as-is, so NaN and lone-surrogate escapes,
# which no JSON library writes, reach the decoder.
def _token() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([json.dumps(i) for i in HUGE_INTS]),
        st.sampled_from(ODD_FLOATS),
        st.sampled_from(['"' + u + '"' for u in UNICODE_EDGES]),
        st.sampled_from(["true", "false", "null", "[]", "{}", '""']),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.text(max_size=20).map(lambda t: json.dumps(t, ensure_ascii=False)),
        st.integers(min_value=1, max_value=3).map(lambda k: '"' + "x" * (20_000 * k) + '"'),
    )


json_values: st.SearchStrategy[str] = st.recursive(
    _token(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(UNICODE_EDGES + ["a", "features", "event_id"]),
                           inner), max_size=4)
        .map(lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"),
    ),
    max_leaves=12,
)

ENVELOPE_FIELDS = ["event_id", "entity_id", "event_time", "model", "features", "label",
                   "value", "outcome_time", "prediction_id", "model_version", "role",
                   "predicted_at", "score", "labeled_at", "outcome_label", "outcome_value",
                   "payload_b64", "served", "scores", "ingested_at"]
FEATURE_NAMES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears",
                 "loan", "colour", "\\u0000", "\u202eage", ""]


SANE: dict[str, str] = {
    "event_id": '"e-1"', "entity_id": '"c-1"', "event_time": "1763900000000",
    "model": '"agrawal"', "label": '"1"', "value": "null", "outcome_time": "1763900060000",
    "prediction_id": '"p-1"', "model_version": '"1"', "role": '"champion"',
    "predicted_at": "1763900000005", "score": "0.5", "labeled_at": "1763900060001",
    "outcome_label": '"1"', "outcome_value": "null", "served": "true", "scores": "{}",
    "latency_ms": "1.0", "label_delay_ms": "5", "correct": "true", "ingested_at": "null",
    "features": '{"salary":52000.0,"commission":0,"age":41,"elevel":2,"car":3,"zipcode":1,'
                '"hvalue":150000.0,"hyears":12,"loan":20000.0}',
}
TOPIC_FIELDS: dict[str, list[str]] = {
    "features": ["event_id", "entity_id", "event_time", "model", "features"],
    "outcomes": ["event_id", "label", "value", "outcome_time"],
    "predictions": ["prediction_id", "event_id", "entity_id", "model", "model_version", "role",
                    "served", "label", "score", "scores", "features", "event_time",
                    "predicted_at", "latency_ms"],
}
TOPIC_FIELDS["features.valid"] = [*TOPIC_FIELDS["features"], "ingested_at"]
TOPIC_FIELDS["predictions.labeled"] = [
    *TOPIC_FIELDS["predictions"], "outcome_label", "outcome_value", "outcome_time",
    "label_delay_ms", "correct", "labeled_at"]


@st.composite
def event_shaped_json(draw: st.DrawFn, topic: str = "features") -> bytes:
    """A sane record of the topic with one to three fields spoiled — deleted, or holding a
    hostile value — and maybe a stray field: the inputs that get past decoding."""
    fields = dict.fromkeys(TOPIC_FIELDS[topic])
    values = {name: SANE[name] for name in fields}
    for name in draw(st.lists(st.sampled_from([*fields, *ENVELOPE_FIELDS]), min_size=1,
                              max_size=3, unique=True)):
        action = draw(st.sampled_from(["hostile", "hostile", "delete", "features"]))
        if action == "delete":
            values.pop(name, None)
        elif action == "features" or name == "features" and draw(st.booleans()):
            feats = draw(st.lists(st.tuples(st.sampled_from(FEATURE_NAMES), json_values),
                                  min_size=1, max_size=10))
            base = orjson.loads(SANE["features"])
            text = ",".join(f'"{k}":{orjson.dumps(v).decode()}' for k, v in base.items()
                            if k not in {f for f, _ in feats})
            extra = ",".join(f'"{k}":{v}' for k, v in feats)
            values["features"] = "{" + ",".join(x for x in (text, extra) if x) + "}"
        else:
            values[name] = draw(json_values)
    body = ",".join(f'"{k}":{v}' for k, v in values.items())
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """Nesting far past any parser's recursion limit, closed or not, with a NaN to force the
    standard-library fallback."""
    depth = draw(st.sampled_from([100, 1000, 1025, 5000, 30_000]))
    opener = draw(st.sampled_from(['[', '{"a":']))
    closer = "]" if opener == "[" else "}"
    inner = draw(st.sampled_from(["1", "NaN", "null", ""]))
    closed = draw(st.booleans())
    text = opener * depth + inner + (closer * depth if closed else "")
    return text.encode()


_LONGS = st.one_of(st.sampled_from([-(2**63), 2**63 - 1, 0, -1, 1, 10**12, 10**13 + 1]),
                   st.integers(min_value=-(2**63), max_value=2**63 - 1))
_AVRO_STRINGS = st.one_of(
    st.sampled_from(["\x00", "\u202e", "\ufeff", "", "a|b", "\U0010ffff", "x" * 70_000]),
    st.text(max_size=30),
)
_AVRO_FEATURE = st.one_of(st.none(), _LONGS, st.floats(), _AVRO_STRINGS)


def _avro(topic: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema_for(topic), record)
    return buf.getvalue()


@st.composite
def avro_with_hostile_values(draw: st.DrawFn, topic: str = "features") -> bytes:
    """Valid Avro of the topic's schema whose values are hostile: extreme longs, NaN, NUL,
    right-to-left marks, 70 kB strings, unknown feature names."""
    feats = draw(st.dictionaries(st.one_of(st.sampled_from(FEATURE_NAMES[:9]), _AVRO_STRINGS),
                                 _AVRO_FEATURE, max_size=10))
    s = _AVRO_STRINGS
    if topic == "features":
        record = {"event_id": draw(s), "entity_id": draw(s), "event_time": draw(_LONGS),
                  "model": draw(st.one_of(st.none(), s)), "features": feats,
                  "ingested_at": None}
    elif topic == "outcomes":
        record = {"event_id": draw(s), "label": draw(st.one_of(st.none(), s)),
                  "value": draw(st.one_of(st.none(), st.floats())),
                  "outcome_time": draw(_LONGS)}
    else:  # predictions, predictions.labeled
        record = {"prediction_id": draw(s), "event_id": draw(s), "entity_id": draw(s),
                  "model": draw(s), "model_version": draw(s), "role": draw(s),
                  "served": draw(st.booleans()), "label": draw(s),
                  "score": draw(st.one_of(st.none(), st.floats())), "scores": {},
                  "features": feats, "event_time": draw(_LONGS), "predicted_at": draw(_LONGS),
                  "latency_ms": draw(st.floats())}
        if topic == "predictions.labeled":
            record.update(outcome_label=draw(st.one_of(st.none(), s)),
                          outcome_value=draw(st.one_of(st.none(), st.floats())),
                          outcome_time=draw(_LONGS), label_delay_ms=draw(_LONGS),
                          correct=draw(st.one_of(st.none(), st.booleans())),
                          labeled_at=draw(_LONGS))
    data = _avro(topic, record)
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(data))))
    return data if cut is None else data[:cut]


@st.composite
def confluent_frames(draw: st.DrawFn) -> bytes:
    """Magic byte 0 and a schema id — unknown, or another topic's — over some body."""
    schema_id = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**32 - 1]),
                               st.integers(min_value=0, max_value=2**32 - 1)))
    body = draw(st.one_of(avro_with_hostile_values("outcomes"), avro_with_hostile_values(),
                          st.binary(max_size=64)))
    header = b"\x00" + schema_id.to_bytes(4, "big")
    return draw(st.sampled_from([header + body, header[: draw(st.integers(1, 4))]]))


def hostile_payloads(topic: str = "features") -> st.SearchStrategy[bytes]:
    """Every kind of hostile value bytes, for a record on ``topic``."""
    json_text = json_values.map(lambda t: t.encode("utf-8", "surrogatepass"))
    other = "outcomes" if topic != "outcomes" else "features"
    return st.one_of(
        st.binary(max_size=300),
        json_text,
        event_shaped_json(topic),
        deep_json(),
        avro_with_hostile_values(topic),
        avro_with_hostile_values(other),  # another topic's Avro: schema confusion, unframed
        confluent_frames(),
        st.sampled_from([b"", b" ", b"\xef\xbb\xbf", b"\xef\xbb\xbf{}", b"\x00", b"null",
                         b'"string"', b"\n{}", b"\xff\xfe{\x00}\x00",
                         orjson.dumps({"event_id": "e"}) * 2]),
    )
