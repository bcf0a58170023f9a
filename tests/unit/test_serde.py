"""Event serde: format detection, every decode reason code, encoders, dead letters.

The schema registry is an in-process fake speaking the REST paths the confluent-kafka client
uses: ``GET /schemas/ids/{id}`` and ``POST /subjects/{subject}/versions``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import fastavro
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.runtime.errors import ConfigError, DecodeError
from services.runtime.schemas import raw_schema, schema_for, schema_json
from services.runtime.serde import (
    DECODE_REASONS,
    EncodeError,
    EventDecoder,
    EventEncoder,
    RegistryUnavailable,
    dead_letter,
)

MAX = 65536

FEATURE_EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "entity_id": "c-42",
    "event_time": 1763900000000,
    "model": "agrawal",
    "features": {"salary": 52000.0, "age": 41, "car": "sedan", "elevel": None},
    "ingested_at": None,
}

PREDICTION: dict[str, Any] = {
    "prediction_id": "p-9b1c",
    "event_id": "e-1",
    "entity_id": "c-42",
    "model": "agrawal",
    "model_version": "3",
    "role": "shadow",
    "served": False,
    "label": "1",
    "score": 0.87,
    "scores": {"0": 0.13, "1": 0.87},
    "features": FEATURE_EVENT["features"],
    "event_time": 1763900000000,
    "predicted_at": 1763900000012,
    "latency_ms": 1.5,
}


def plain_avro(topic: str, record: dict[str, Any], schema: Any = None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema or schema_for(topic), record)
    return buf.getvalue()


def framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def reason_of(decoder: EventDecoder, payload: bytes | None) -> str:
    with pytest.raises(DecodeError) as info:
        decoder.decode(payload)
    assert info.value.reason in DECODE_REASONS
    return info.value.reason


# The fake schema registry --------------------------------------------------------------------


class FakeRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.status: int | None = None  # answer every request with this error status
        self.lock = threading.Lock()

    def add(self, schema: str | dict[str, Any], schema_type: str = "AVRO") -> int:
        text = schema if isinstance(schema, str) else json.dumps(schema)
        with self.lock:
            for schema_id, known in self.schemas.items():
                if known["schema"] == text and known.get("schemaType", "AVRO") == schema_type:
                    return schema_id
            schema_id = len(self.schemas) + 1
            entry: dict[str, Any] = {"schema": text}
            if schema_type != "AVRO":  # the real registry omits schemaType for Avro
                entry["schemaType"] = schema_type
            self.schemas[schema_id] = entry
            return schema_id

    def handle(self, method: str, url: str, body: bytes) -> tuple[int, dict[str, Any]]:
        path = urlsplit(url).path.strip("/").split("/")
        self.requests.append((method, "/".join(path)))
        if self.status is not None:
            return self.status, {"error_code": self.status * 100, "message": "broken on purpose"}
        if path[0] not in ("schemas", "subjects"):
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        if method == "GET" and path[:2] == ["schemas", "ids"] and len(path) == 3:
            entry = self.schemas.get(int(path[2]))
            if entry is None:
                return 404, {"error_code": 40403, "message": f"Schema {path[2]} not found"}
            return 200, entry
        if method == "POST" and path[0] == "subjects" and path[2:] == ["versions"]:
            request = json.loads(body)
            schema_id = self.add(request["schema"], request.get("schemaType", "AVRO"))
            self.subjects.setdefault(unquote(path[1]), []).append(schema_id)
            return 200, {"id": schema_id}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[ThreadingHTTPServer, list[FakeRegistry]]]:
    current: list[FakeRegistry] = [FakeRegistry()]

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = current[0].handle(self.command, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, current
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry(_server: tuple[ThreadingHTTPServer, list[FakeRegistry]]) -> FakeRegistry:
    _, current = _server
    current[0] = FakeRegistry()
    return current[0]


@pytest.fixture
def registry_url(_server: tuple[ThreadingHTTPServer, list[FakeRegistry]]) -> str:
    host, port = _server[0].server_address[:2]
    return f"http://{host!s}:{port}"


NO_RETRIES = {"max.retries": 0}


# Decoding: formats ----------------------------------------------------------------------------


def test_json_object_decodes() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    assert decoder.decode(orjson.dumps(FEATURE_EVENT)) == FEATURE_EVENT
    assert decoder.decode(b' \n\t{"event_id": "e-2"}') == {"event_id": "e-2"}


def test_json_with_byte_order_mark() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    assert decoder.decode(b"\xef\xbb\xbf" + orjson.dumps(FEATURE_EVENT)) == FEATURE_EVENT


def test_json_nan_and_infinity_decode_to_floats() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    event = decoder.decode(b'{"event_id": "e-1", "features": {"a": NaN, "b": Infinity, '
                           b'"c": -Infinity, "d": 1}}')
    features = event["features"]
    assert math.isnan(features["a"])
    assert features["b"] == math.inf and features["c"] == -math.inf and features["d"] == 1


def test_decode_exact_says_whether_the_bytes_are_the_event_as_they_came() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    bare = orjson.dumps(FEATURE_EVENT)
    assert decoder.decode_exact(bare) == (FEATURE_EVENT, bare)
    # Read as decode reads them, but not the object's own JSON: written again by whoever keeps it.
    for payload in (b" " + bare, bare + b"\n", b"\xef\xbb\xbf" + bare,
                    plain_avro("features", FEATURE_EVENT)):
        assert decoder.decode_exact(payload) == (decoder.decode(payload), None)
    event, as_is = decoder.decode_exact(b'{"event_id": "e-1", "features": {"a": NaN}}')
    assert math.isnan(event["features"]["a"]) and as_is is None
    for bad in (b"{not json}", b"{}" * MAX, b""):
        with pytest.raises(DecodeError) as exact_error:
            decoder.decode_exact(bad)
        with pytest.raises(DecodeError) as error:
            decoder.decode(bad)
        assert (exact_error.value.reason, exact_error.value.detail) == (
            error.value.reason, error.value.detail)


def test_plain_avro_decodes_like_json() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    from_avro = decoder.decode(plain_avro("features", FEATURE_EVENT))
    assert from_avro == decoder.decode(orjson.dumps(FEATURE_EVENT)) == FEATURE_EVENT
    assert isinstance(from_avro["features"]["age"], int)


@pytest.mark.parametrize("event_id", ["e-123", "e-00000000000016"])
def test_plain_avro_starting_like_whitespace(event_id: str) -> None:
    """A 5- or 16-character leading string encodes its length as ``\\n`` or a space."""
    payload = plain_avro("features", {**FEATURE_EVENT, "event_id": event_id})
    assert payload[:1] in (b"\n", b" ")
    assert EventDecoder("features", max_bytes=MAX).decode(payload)["event_id"] == event_id


# Decoding: every reason code ------------------------------------------------------------------


def test_empty() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    assert reason_of(decoder, None) == "empty"
    assert reason_of(decoder, b"") == "empty"


def test_too_large_is_checked_before_parsing() -> None:
    decoder = EventDecoder("features", max_bytes=100)
    assert reason_of(decoder, b"{" * 101) == "too_large"
    assert reason_of(decoder, orjson.dumps({"event_id": "x" * 200})) == "too_large"
    assert reason_of(decoder, b"{" * 100) == "not_json"


@pytest.mark.parametrize(
    "payload",
    [b'{"event_id": ', b"{oops}", b'{"a": nan}', b"  {oops", b"\n", b"[" * 100_000,
     b'{"a": NaN, "b": ' + b"[" * 100_000, b'{"a": NaN, "b": "\\ud800"}',
     '{"a": NaN}'.encode("utf-16-le"), b'{"a": NaN, "b": "\xff"}'],
    ids=["cut", "garbage", "lowercase-nan", "whitespace", "only-whitespace", "deep",
         "deep-with-nan", "lone-surrogate", "utf-16", "bad-utf-8"],
)
def test_not_json(payload: bytes) -> None:
    assert reason_of(EventDecoder("features", max_bytes=1 << 20), payload) == "not_json"


@pytest.mark.parametrize("payload", [b"[1, 2]", b" 42", b"42", b'"e-1"', b"null", b"true",
                                     b"[NaN]"])
def test_not_an_object(payload: bytes) -> None:
    assert reason_of(EventDecoder("features", max_bytes=MAX), payload) == "not_an_object"


def test_not_an_object_with_registry(registry: FakeRegistry, registry_url: str) -> None:
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)
    assert reason_of(decoder, b"42") == "not_an_object"


def test_bad_magic_byte_with_registry(registry: FakeRegistry, registry_url: str) -> None:
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)
    assert reason_of(decoder, plain_avro("features", FEATURE_EVENT)) == "bad_magic_byte"
    assert reason_of(decoder, b"\x01\x02\x03") == "bad_magic_byte"
    assert registry.requests == []


def test_unknown_schema_id_without_registry() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    assert reason_of(decoder, framed(1, plain_avro("features", FEATURE_EVENT))) == (
        "unknown_schema_id"
    )


def test_unknown_schema_id_is_remembered(registry: FakeRegistry, registry_url: str) -> None:
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)
    payload = framed(7, plain_avro("features", FEATURE_EVENT))
    assert reason_of(decoder, payload) == "unknown_schema_id"
    assert reason_of(decoder, payload) == "unknown_schema_id"
    assert registry.requests == [("GET", "schemas/ids/7")]


def test_unknown_schema_id_is_asked_again_after_ttl(
    registry: FakeRegistry, registry_url: str
) -> None:
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url,
                           unknown_id_ttl_s=0.0)
    payload = framed(1, plain_avro("features", FEATURE_EVENT))
    assert reason_of(decoder, payload) == "unknown_schema_id"
    schema_id = registry.add(schema_json("features"))  # registered meanwhile
    assert decoder.decode(framed(schema_id, payload[5:])) == FEATURE_EVENT


@pytest.mark.parametrize("cut", [1, 3, 5, 20])
def test_avro_truncated(cut: int) -> None:
    payload = plain_avro("predictions", PREDICTION)
    decoder = EventDecoder("predictions", max_bytes=MAX)
    assert reason_of(decoder, payload[: len(payload) - cut]) == "avro_truncated"


def test_avro_truncated_frame_header(registry: FakeRegistry, registry_url: str) -> None:
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)
    assert reason_of(decoder, b"\x00\x00\x01") == "avro_truncated"


def test_not_avro() -> None:
    decoder = EventDecoder("features", max_bytes=MAX)
    payload = plain_avro("features", FEATURE_EVENT)
    assert reason_of(decoder, payload + b"\x02") == "not_avro"  # trailing bytes
    assert reason_of(decoder, b"\x06\xff\xfe\xfd" + payload[4:]) == "not_avro"  # bad UTF-8


def test_incompatible_writer_schema(registry: FakeRegistry, registry_url: str) -> None:
    other = {"type": "record", "name": "FeatureEvent", "namespace": "io.modelstream",
             "fields": [{"name": "event_id", "type": "long"}]}
    schema_id = registry.add(other)
    proto_id = registry.add('syntax = "proto3"; message M {}', "PROTOBUF")
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)
    body = plain_avro("features", {"event_id": 5}, fastavro.parse_schema(other))
    assert reason_of(decoder, framed(schema_id, body)) == "incompatible_schema"
    assert reason_of(decoder, framed(proto_id, body)) == "incompatible_schema"
    assert reason_of(decoder, framed(proto_id, body)) == "incompatible_schema"
    assert registry.requests.count(("GET", f"schemas/ids/{proto_id}")) == 1


def test_registry_unavailable_is_not_a_decode_error(
    registry: FakeRegistry, registry_url: str
) -> None:
    registry.status = 503
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url,
                           registry_conf=NO_RETRIES)
    payload = framed(1, plain_avro("features", FEATURE_EVENT))
    with pytest.raises(RegistryUnavailable):
        decoder.decode(payload)
    registry.status = None
    registry.add(schema_json("features"))
    assert decoder.decode(payload) == FEATURE_EVENT  # nothing was cached by the failure


def test_registry_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=f"http://127.0.0.1:{port}",
                           registry_conf=NO_RETRIES)
    with pytest.raises(RegistryUnavailable):
        decoder.decode(framed(1, b""))


def test_wrong_registry_path_is_unavailable(registry: FakeRegistry, registry_url: str) -> None:
    """A 404 that is not "schema not found" (40403) is a misconfiguration, not bad data."""
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=f"{registry_url}/wrong",
                           registry_conf=NO_RETRIES)
    with pytest.raises(RegistryUnavailable):
        decoder.decode(framed(1, plain_avro("features", FEATURE_EVENT)))


def test_bad_registry_config() -> None:
    with pytest.raises(ConfigError):
        EventDecoder("features", max_bytes=MAX, registry_url="ftp://nowhere")


# Framed Avro through the registry -------------------------------------------------------------


def test_framed_round_trip(registry: FakeRegistry, registry_url: str) -> None:
    encoder = EventEncoder("predictions", "avro", registry_url, topic="t1.predictions")
    decoder = EventDecoder("predictions", max_bytes=MAX, registry_url=registry_url)
    payloads = [encoder.encode({**PREDICTION, "event_id": f"e-{i}"}) for i in range(3)]
    assert payloads[0][:1] == b"\x00"
    assert int.from_bytes(payloads[0][1:5], "big") == encoder.schema_id
    assert [decoder.decode(p)["event_id"] for p in payloads] == ["e-0", "e-1", "e-2"]
    assert decoder.decode(payloads[0]) == {**PREDICTION, "event_id": "e-0"}
    assert registry.subjects == {"t1.predictions-value": [encoder.schema_id]}
    assert registry.requests == [
        ("POST", "subjects/t1.predictions-value/versions"),
        ("GET", f"schemas/ids/{encoder.schema_id}"),
    ]
    assert json.loads(registry.schemas[encoder.schema_id]["schema"]) == raw_schema("predictions")


def test_framed_older_writer_schema_resolves(registry: FakeRegistry, registry_url: str) -> None:
    """A producer still on a schema without ``ingested_at`` reads back with its default."""
    full = raw_schema("features.valid")
    old = {**full, "fields": [f for f in full["fields"] if f["name"] != "ingested_at"]}
    schema_id = registry.add(old)
    record = {k: v for k, v in FEATURE_EVENT.items() if k != "ingested_at"}
    body = plain_avro("features.valid", record, fastavro.parse_schema(old))
    decoder = EventDecoder("features.valid", max_bytes=MAX, registry_url=registry_url)
    assert decoder.decode(framed(schema_id, body)) == {**record, "ingested_at": None}


def test_registration_refused_is_a_config_error(
    registry: FakeRegistry, registry_url: str
) -> None:
    registry.status = 409
    encoder = EventEncoder("predictions", "avro", registry_url, registry_conf=NO_RETRIES)
    with pytest.raises(ConfigError):
        encoder.encode(PREDICTION)
    registry.status = 500
    with pytest.raises(RegistryUnavailable):
        encoder.encode(PREDICTION)
    registry.status = None
    assert encoder.encode(PREDICTION)[:1] == b"\x00"


# Encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_encode_decode_round_trip(fmt: str) -> None:
    encoder = EventEncoder("predictions", fmt)  # type: ignore[arg-type]
    decoder = EventDecoder("predictions", max_bytes=MAX)
    assert decoder.decode(encoder.encode(PREDICTION)) == PREDICTION


def test_json_output_is_plain_json() -> None:
    encoded = EventEncoder("predictions", "json").encode(PREDICTION)
    assert json.loads(encoded) == PREDICTION


def test_numpy_values_encode() -> None:
    record = {**PREDICTION, "score": np.float32(0.5), "latency_ms": np.float64(2.0),
              "features": {"age": np.int64(41), "salary": np.float32(1.5)}}
    for fmt in ("json", "avro"):
        encoded = EventEncoder("predictions", fmt).encode(record)
        decoded = EventDecoder("predictions", max_bytes=MAX).decode(encoded)
        assert decoded["score"] == 0.5 and decoded["features"] == {"age": 41, "salary": 1.5}


def test_avro_fills_defaults() -> None:
    minimal = {k: v for k, v in FEATURE_EVENT.items() if k not in ("model", "ingested_at")}
    encoded = EventEncoder("features.valid", "avro").encode(minimal)
    decoded = EventDecoder("features.valid", max_bytes=MAX).decode(encoded)
    assert decoded == {**minimal, "model": None, "ingested_at": None}


def test_encode_errors() -> None:
    with pytest.raises(EncodeError):
        EventEncoder("predictions", "avro").encode({"prediction_id": "p"})
    with pytest.raises(EncodeError):
        EventEncoder("predictions", "avro").encode({**PREDICTION, "features": {"a": True}})
    with pytest.raises(EncodeError):
        EventEncoder("predictions", "json").encode({**PREDICTION, "x": object()})
    with pytest.raises(ConfigError):
        EventEncoder("predictions", "xml")  # type: ignore[arg-type]


_FEATURE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.text(max_size=8), st.binary(max_size=4),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(features=st.dictionaries(st.text(max_size=6), _FEATURE_VALUES, max_size=6),
       score=st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=2)))
def test_avro_union_values_are_written_as_fastavro_resolves_them(
    features: dict[str, Any], score: Any
) -> None:
    """The encoder names each union value's branch (a shortcut past fastavro's search through
    the branches): the bytes are the ones fastavro writes unaided, and what it rejects is
    still rejected."""
    record = {**PREDICTION, "features": features, "score": score}
    before = {**record, "features": dict(features)}
    try:
        expected: bytes | None = plain_avro("predictions", record)
    except Exception:
        expected = None
    encoder = EventEncoder("predictions", "avro")
    if expected is None:
        with pytest.raises(EncodeError):
            encoder.encode(record)
    else:
        assert encoder.encode(record) == expected
    assert record == before  # the caller's record is left alone


# Dead letters --------------------------------------------------------------------------------


def _dead(payload: bytes | None, **kwargs: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"topic": "t.features", "partition": 2, "offset": 41,
                              "reason": "not_json", "detail": "unexpected character",
                              "service": "ingest", "now_ms": 1763900000000}
    return dead_letter(payload, **{**fields, **kwargs})


@pytest.mark.parametrize("topic", ["features.dlq", "outcomes.dlq"])
@pytest.mark.parametrize("payload", [b"{oops", b"\x00\xff\x00", None])
def test_dead_letter_round_trips(topic: str, payload: bytes | None) -> None:
    record = _dead(payload)
    decoder = EventDecoder(topic, max_bytes=MAX)
    for fmt in ("json", "avro"):
        encoded = EventEncoder(topic, fmt).encode(record)
        assert decoder.decode(encoded) == record


def test_dead_letter_json_form() -> None:
    record = _dead(b"{oops")
    encoded = json.loads(EventEncoder("features.dlq", "json").encode(record))
    assert "payload" not in encoded
    assert base64.b64decode(encoded["payload_b64"]) == b"{oops"
    assert encoded["payload_text"] == "{oops"
    assert encoded["payload_size"] == 5 and encoded["payload_truncated"] is False
    assert record["payload"] == b"{oops"  # the caller's record is left alone
    bad = orjson.dumps({**encoded, "payload_b64": "%%%"})
    assert reason_of(EventDecoder("features.dlq", max_bytes=MAX), bad) == "not_json"


def test_dead_letter_fields() -> None:
    record = _dead(b"\xff" * 10, max_payload_bytes=4)
    assert record["payload"] == b"\xff" * 4
    assert record["payload_size"] == 10 and record["payload_truncated"] is True
    assert record["payload_text"] is None  # not UTF-8
    assert (record["topic"], record["partition"], record["offset"]) == ("t.features", 2, 41)
    assert (record["reason"], record["service"], record["failed_at"]) == (
        "not_json", "ingest", 1763900000000
    )
    text = "é" * 2000
    long = _dead(text.encode(), detail="x" * 5000)
    assert long["payload_text"] == "é" * 512  # 1 KiB, never half a character
    assert len(long["detail"]) <= 1024
    assert fastavro.validation.validate(long, schema_for("features.dlq"), raise_errors=True)


# Arbitrary bytes ----------------------------------------------------------------------------

_PREFIXES = st.sampled_from([b"", b"\x00", b"\x00\x00\x00\x00\x01", b"{", b" ", b"[", b"\n"])
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.tuples(_PREFIXES, st.binary(max_size=200)).map(b"".join),
    st.tuples(st.sampled_from([plain_avro("predictions", PREDICTION),
                               plain_avro("features", FEATURE_EVENT),
                               orjson.dumps(FEATURE_EVENT)]),
              st.integers(0, 400), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2]),
)


@pytest.mark.parametrize("topic", ["features", "predictions", "outcomes", "features.dlq"])
@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(payload=_PAYLOADS)
def test_arbitrary_bytes_only_raise_decode_error(topic: str, payload: bytes) -> None:
    decoder = EventDecoder(topic, max_bytes=MAX)
    try:
        event = decoder.decode(payload)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS
    else:
        assert isinstance(event, dict)


def test_arbitrary_bytes_with_registry(registry: FakeRegistry, registry_url: str) -> None:
    registry.add(schema_json("features"))
    decoder = EventDecoder("features", max_bytes=MAX, registry_url=registry_url)

    @settings(max_examples=300, deadline=None, database=None)
    @given(payload=_PAYLOADS)
    def check(payload: bytes) -> None:
        try:
            decoder.decode(payload)
        except DecodeError as exc:
            assert exc.reason in DECODE_REASONS

    check()
