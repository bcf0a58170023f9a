"""Event serde: JSON, plain Avro or Confluent-framed Avro in; JSON or Avro out.

Inputs are told apart per message by their first byte:

======================  ====================================================================
first byte              read as
======================  ====================================================================
``{`` or ``[``          JSON (orjson; NaN/Infinity literals are accepted, see below)
whitespace              JSON; if that fails and no registry is configured, plain Avro
UTF-8 byte order mark   JSON (what some Windows tools write)
``0x00``                Confluent framing: magic byte 0, 4-byte big-endian schema id, then
                        Avro written with that schema (resolved to the topic's schema)
anything else           plain Avro with the topic's schema; with a registry configured,
                        only JSON and framed Avro are accepted
======================  ====================================================================

The rule is unambiguous because every modelstream schema starts with a non-empty string
(an id or a name): plain Avro of a valid record starts with its length, which is never 0 and
never ``{`` or ``[`` (negative lengths), though it may be ``\\n`` (5 characters) or a space
(16 characters), hence the fallback for whitespace.

A payload that is not an event raises :class:`DecodeError` with one of the stable codes in
:data:`DECODE_REASONS`; services turn it into a dead-letter record (:func:`dead_letter`).
A registry that cannot be reached raises :class:`RegistryUnavailable` instead: the message is
fine, so it must be retried, not dead-lettered.

JSON and Avro decode to the same dict: maps are dicts, unions are plain values. The one
difference is ``bytes`` fields (the dead-letter ``payload``): the JSON form carries a bytes
field ``x`` as base64 text in ``x_b64``; both encoder and decoder convert.

orjson rejects the ``NaN`` and ``Infinity`` literals that many JSON producers (Python's
``json``, pandas) write; such payloads are read with the standard library instead so that the
feature validator can reject the values with a precise reason of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import warnings
from collections.abc import Mapping
from io import BytesIO
from typing import Any, Literal, cast

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from .errors import ConfigError, DecodeError, ModelstreamError
from .schemas import raw_schema, schema_for, schema_json

__all__ = [
    "AVRO_TRUNCATED",
    "BAD_MAGIC_BYTE",
    "DECODE_REASONS",
    "EMPTY",
    "INCOMPATIBLE_SCHEMA",
    "NOT_AN_OBJECT",
    "NOT_AVRO",
    "NOT_JSON",
    "TOO_LARGE",
    "UNKNOWN_SCHEMA_ID",
    "EncodeError",
    "EventDecoder",
    "EventEncoder",
    "RegistryUnavailable",
    "dead_letter",
]

EMPTY = "empty"  # None (tombstone) or zero bytes
TOO_LARGE = "too_large"  # longer than max_bytes; checked before any parsing
NOT_JSON = "not_json"  # looks like JSON but does not parse
NOT_AN_OBJECT = "not_an_object"  # valid JSON, but not an object
BAD_MAGIC_BYTE = "bad_magic_byte"  # registry configured; neither JSON nor framed Avro
UNKNOWN_SCHEMA_ID = "unknown_schema_id"  # framed, and the id is unknown (or no registry)
INCOMPATIBLE_SCHEMA = "incompatible_schema"  # writer schema not Avro or not resolvable
AVRO_TRUNCATED = "avro_truncated"  # the bytes end inside the record
NOT_AVRO = "not_avro"  # Avro that does not decode, or bytes left after the record

DECODE_REASONS: tuple[str, ...] = (
    EMPTY,
    TOO_LARGE,
    NOT_JSON,
    NOT_AN_OBJECT,
    BAD_MAGIC_BYTE,
    UNKNOWN_SCHEMA_ID,
    INCOMPATIBLE_SCHEMA,
    AVRO_TRUNCATED,
    NOT_AVRO,
)

_MAGIC = 0
_HEADER_SIZE = 5
_WHITESPACE = frozenset(b" \t\r\n")
_JSON_OPEN = frozenset(b"{[")
_OBJECT_OPEN, _OBJECT_CLOSE = ord("{"), ord("}")
_NON_FINITE = (b"NaN", b"Infinity")
_BOM = b"\xef\xbb\xbf"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_DETAIL_CHARS = 1024
_PREVIEW_BYTES = 1024
_MAX_UNKNOWN_IDS = 10_000
_SCHEMA_NOT_FOUND = 40403  # the registry's error_code for an unknown schema id


class RegistryUnavailable(ModelstreamError):
    """The schema registry did not answer (or refused us). Transient: retry, never dead-letter."""


class EncodeError(ModelstreamError):
    """A record that does not fit its topic's schema or cannot be written as JSON."""


def _registry_client(url: str, conf: Mapping[str, Any] | None) -> Any:
    # Imported on first use: the client costs ~0.3 s to import. Its dependency authlib forces
    # its own DeprecationWarning filter to "always" while importing, so only recording the
    # warnings (and dropping them) keeps them off every service's stderr.
    with warnings.catch_warnings(record=True):
        from confluent_kafka.schema_registry import SchemaRegistryClient
    try:
        # The client waits forever by default; a hung registry must surface as unavailable.
        return SchemaRegistryClient({"url": url, "timeout": 10.0, **(conf or {})})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"schema registry {url!r}: {exc}") from exc


def _registry_error_class() -> type[Exception]:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return SchemaRegistryError


def _bytes_fields(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Top-level fields of type ``bytes`` or ``[null, bytes]``: base64 text in the JSON form."""
    names = []
    for field in schema["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if "bytes" in branches:
            names.append(field["name"])
    return tuple(names)


# The Python types a union value may be written from without a search, and their branch.
# ``bool`` is its own type here (not an int); an int goes to ``long`` only within its range.
_BRANCH_OF_TYPE: dict[type, str] = {
    type(None): "null", bool: "boolean", int: "long", float: "double", str: "string",
    bytes: "bytes",
}
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

_UnionFields = tuple[tuple[str, bool, dict[type, str]], ...]


def _union_fields(schema: Mapping[str, Any]) -> _UnionFields:
    """Top-level fields that are a union of primitive types, or a map of one:
    ``(name, is_map, {python type: branch})`` for :func:`_tagged`."""
    found = []
    for field in schema["fields"]:
        ftype, is_map = field["type"], False
        if isinstance(ftype, dict) and ftype.get("type") == "map":
            ftype, is_map = ftype["values"], True
        if isinstance(ftype, list) and all(isinstance(b, str) for b in ftype):
            table = {t: b for t, b in _BRANCH_OF_TYPE.items() if b in ftype}
            if table:
                found.append((field["name"], is_map, table))
    return tuple(found)


def _tag(value: Any, table: dict[type, str]) -> Any:
    """``value`` in fastavro's tuple notation, ``(branch, value)``, when its type names the
    branch; otherwise as it is, for fastavro to resolve (or reject) as usual."""
    branch = table.get(type(value))
    if branch is None or (branch == "long" and not _LONG_MIN <= value <= _LONG_MAX):
        return value
    return (branch, value)


def _tagged(record: dict[str, Any], fields: _UnionFields) -> dict[str, Any]:
    """A copy of ``record`` whose union values are tagged with their branch.

    fastavro resolves an untagged union value by validating it against each branch in turn:
    a string in the feature map's ``[null, long, double, string]`` costs four validations, a
    float three. Tagging costs ~0.3 µs a value. With three of a prediction's nine features
    strings the write took about a quarter less (interleaved runs); with numbers only, ~4%.
    """
    out = dict(record)
    for name, is_map, table in fields:
        value = out.get(name)
        if is_map:
            if type(value) is dict:
                out[name] = {k: _tag(v, table) for k, v in value.items()}
        elif name in out:
            out[name] = _tag(value, table)
    return out


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return _cut(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


class EventDecoder:
    """Decodes the value bytes of one topic's records into event dicts.

    ``registry_conf`` adds SchemaRegistryClient options (``basic.auth.user.info``,
    ``max.retries``...). Schema ids the registry does not know are remembered for
    ``unknown_id_ttl_s`` seconds, so a flood of bad frames costs one lookup per id.
    """

    def __init__(
        self,
        base_topic: str,
        *,
        max_bytes: int,
        registry_url: str | None = None,
        registry_conf: Mapping[str, Any] | None = None,
        unknown_id_ttl_s: float = 30.0,
    ) -> None:
        self.base_topic = base_topic
        self.max_bytes = max_bytes
        self._reader = schema_for(base_topic)
        self._reader_form = to_parsing_canonical_form(self._reader)
        self._bytes_fields = _bytes_fields(raw_schema(base_topic))
        self._registry = _registry_client(registry_url, registry_conf) if registry_url else None
        self._unknown_id_ttl_s = unknown_id_ttl_s
        # Registry ids are immutable, so a writer schema (or why it is unusable) is kept forever.
        self._writers: dict[int, dict[str, Any] | DecodeError] = {}
        self._unknown_until: dict[int, float] = {}

    def decode(self, payload: bytes | None) -> dict[str, Any]:
        """The event in ``payload``; raises :class:`DecodeError` when it is not one."""
        if not payload:
            raise DecodeError(EMPTY, "null payload" if payload is None else "empty payload")
        if len(payload) > self.max_bytes:
            raise DecodeError(TOO_LARGE, f"{len(payload)} bytes > max {self.max_bytes}")
        first = payload[0]
        if first in _JSON_OPEN:
            return self._json(payload)
        if first in _WHITESPACE:
            try:
                return self._json(payload)
            except DecodeError as exc:
                if exc.reason != NOT_JSON or self._registry is not None:
                    raise
                try:
                    return self._avro(payload, 0, self._reader)
                except DecodeError:
                    raise exc from None
        if first == _MAGIC:
            return self._framed(payload)
        if first == _BOM[0] and payload.startswith(_BOM):
            return self._json(payload[len(_BOM) :])
        if self._registry is not None:
            self._raise_if_json_scalar(payload)
            raise DecodeError(BAD_MAGIC_BYTE, f"first byte 0x{first:02x}: neither JSON nor 0x00")
        try:
            return self._avro(payload, 0, self._reader)
        except DecodeError:
            self._raise_if_json_scalar(payload)
            if _looks_like_text(payload):
                # Someone typed a line into a console producer: say so, not "truncated Avro".
                detail = f"text that is not JSON: {_preview(payload)!r}"
                raise DecodeError(NOT_JSON, detail) from None
            raise

    def decode_exact(self, payload: bytes | None) -> tuple[dict[str, Any], bytes | None]:
        """:meth:`decode`, and ``payload`` again if it is byte for byte the event's JSON object
        (a bare object that orjson read: no NaN or Infinity literal, nothing around it), else
        None: such bytes a service may keep or pass on as they came, not write them again."""
        if (payload and payload[0] == _OBJECT_OPEN and payload[-1] == _OBJECT_CLOSE
                and len(payload) <= self.max_bytes and not self._bytes_fields):
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:
                pass
            else:
                if type(value) is dict:
                    return value, payload
        return self.decode(payload), None

    # JSON ---------------------------------------------------------------------------------

    def _json(self, payload: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            value = self._json_non_finite(payload, exc)
        if type(value) is not dict:
            raise DecodeError(NOT_AN_OBJECT, f"JSON {type(value).__name__} where an object was due")
        if self._bytes_fields:
            self._from_base64(value)
        return value

    @staticmethod
    def _json_non_finite(payload: bytes, error: orjson.JSONDecodeError) -> Any:
        """Reads JSON that orjson refused only because of NaN/Infinity literals."""
        if not any(token in payload for token in _NON_FINITE):
            raise DecodeError(NOT_JSON, _cut(str(error))) from None
        try:
            # Decoded first: given bytes, json.loads would also take UTF-16 and UTF-32.
            value = json.loads(payload.decode("utf-8"))
            # What orjson cannot write back (lone surrogates, integers past 64 bits) stays out;
            # non-finite floats pass this check, they are written as null.
            orjson.dumps(value)
        except (ValueError, TypeError, RecursionError):
            raise DecodeError(NOT_JSON, _cut(str(error))) from None
        return value

    def _from_base64(self, value: dict[str, Any]) -> None:
        for name in self._bytes_fields:
            key = f"{name}_b64"
            if key not in value:
                continue
            text = value.pop(key)
            try:
                value[name] = None if text is None else base64.b64decode(text, validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise DecodeError(NOT_JSON, f"{key} is not base64: {_describe(exc)}") from None

    @staticmethod
    def _raise_if_json_scalar(payload: bytes) -> None:
        """A bare JSON number, string, true/false/null gets the clearer ``not_an_object``."""
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        raise DecodeError(NOT_AN_OBJECT, f"JSON {type(value).__name__} where an object was due")

    # Avro ---------------------------------------------------------------------------------

    def _framed(self, payload: bytes) -> dict[str, Any]:
        if len(payload) < _HEADER_SIZE:
            raise DecodeError(AVRO_TRUNCATED, f"{len(payload)} bytes: a Confluent frame needs 5")
        schema_id = int.from_bytes(payload[1:_HEADER_SIZE], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch_writer(schema_id)
        if isinstance(writer, DecodeError):
            raise DecodeError(writer.reason, writer.detail)
        # Schema resolution is skipped when the producer wrote with the topic's own schema.
        reader = None if writer is self._reader else self._reader
        return self._avro(payload, _HEADER_SIZE, writer, reader)

    def _fetch_writer(self, schema_id: int) -> dict[str, Any] | DecodeError:
        if self._registry is None:
            raise DecodeError(
                UNKNOWN_SCHEMA_ID, f"schema id {schema_id}: framed Avro but no registry configured"
            )
        unknown_until = self._unknown_until.get(schema_id)
        if unknown_until is not None and unknown_until > time.monotonic():
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry")
        try:
            schema = self._registry.get_schema(schema_id)
        except _registry_error_class() as exc:
            # Only "schema not found" (40403) condemns the message: any other 404 means a
            # wrong registry URL, which must not send every framed record to the DLQ.
            if getattr(exc, "error_code", None) != _SCHEMA_NOT_FOUND:
                raise RegistryUnavailable(f"schema id {schema_id}: {exc}") from exc
            if len(self._unknown_until) >= _MAX_UNKNOWN_IDS:
                self._unknown_until.clear()
            self._unknown_until[schema_id] = time.monotonic() + self._unknown_id_ttl_s
            raise DecodeError(
                UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry"
            ) from None
        except Exception as exc:  # transport errors and malformed answers alike
            raise RegistryUnavailable(f"schema id {schema_id}: {_describe(exc)}") from exc
        writer: dict[str, Any] | DecodeError
        if (schema.schema_type or "AVRO") != "AVRO":
            writer = DecodeError(
                INCOMPATIBLE_SCHEMA, f"schema id {schema_id} is {schema.schema_type}, not AVRO"
            )
        else:
            try:
                writer = cast(dict[str, Any], parse_schema(json.loads(schema.schema_str)))
                # Same layout (only docs, defaults or formatting differ): no resolution needed.
                if to_parsing_canonical_form(writer) == self._reader_form:
                    writer = self._reader
            except Exception as exc:  # whatever a foreign schema text may trip
                detail = f"schema id {schema_id}: {_describe(exc)}"
                writer = DecodeError(INCOMPATIBLE_SCHEMA, detail)
        self._writers[schema_id] = writer
        return writer

    def _avro(
        self,
        payload: bytes,
        start: int,
        writer: dict[str, Any],
        reader: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        buf = BytesIO(payload)
        buf.seek(start)
        try:
            record = schemaless_reader(buf, writer, reader)
        except EOFError as exc:
            raise DecodeError(AVRO_TRUNCATED, _describe(exc)) from None
        except SchemaResolutionError as exc:
            raise DecodeError(INCOMPATIBLE_SCHEMA, _describe(exc)) from None
        except Exception as exc:  # fastavro's failures on arbitrary bytes are many and untyped
            raise DecodeError(NOT_AVRO, _describe(exc)) from None
        left = len(payload) - buf.tell()
        if left:
            raise DecodeError(NOT_AVRO, f"{left} bytes left after the record")
        if type(record) is not dict:
            raise DecodeError(NOT_AVRO, f"decoded a {type(record).__name__}, not a record")
        return record


class EventEncoder:
    """Encodes event dicts for one topic as JSON or Avro.

    Avro is plain (schemaless) unless ``registry_url`` is set: then the topic's schema is
    registered under ``<topic>-value`` on first use and every record is Confluent-framed.
    ``topic`` is the full topic name (with prefix) for that subject; it defaults to
    ``base_topic``.
    """

    def __init__(
        self,
        base_topic: str,
        fmt: Literal["json", "avro"],
        registry_url: str | None = None,
        *,
        topic: str | None = None,
        registry_conf: Mapping[str, Any] | None = None,
    ) -> None:
        if fmt not in ("json", "avro"):
            raise ConfigError(f"unknown output format {fmt!r}: expected 'json' or 'avro'")
        self.base_topic = base_topic
        self.fmt = fmt
        self.subject = f"{topic or base_topic}-value"
        self._schema = schema_for(base_topic)
        self._bytes_fields = _bytes_fields(raw_schema(base_topic))
        self._union_fields = _union_fields(raw_schema(base_topic))
        self._registry = (
            _registry_client(registry_url, registry_conf)
            if registry_url and fmt == "avro"
            else None
        )
        # b"" for JSON and plain Avro; the Confluent frame once the schema is registered.
        self._header: bytes | None = None if self._registry is not None else b""
        self._encode = self._json if fmt == "json" else self._avro
        if fmt == "json" and self._bytes_fields:
            self._encode = self._json_with_bytes

    @property
    def schema_id(self) -> int | None:
        """The registry id of the topic's schema, once registered."""
        return int.from_bytes(self._header[1:], "big") if self._header else None

    def encode(self, record: dict[str, Any]) -> bytes:
        """The bytes of ``record``; raises :class:`EncodeError` when it breaks the schema."""
        return self._encode(record)

    def _json(self, record: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(record, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise EncodeError(f"{self.base_topic}: {exc}") from None

    def _json_with_bytes(self, record: dict[str, Any]) -> bytes:
        record = dict(record)
        for name in self._bytes_fields:
            if name in record:
                data = record.pop(name)
                record[f"{name}_b64"] = None if data is None else base64.b64encode(data).decode()
        return self._json(record)

    def _avro(self, record: dict[str, Any]) -> bytes:
        header = self._header if self._header is not None else self._register()
        buf = BytesIO()
        buf.write(header)
        if self._union_fields:
            record = _tagged(record, self._union_fields)
        try:
            schemaless_writer(buf, self._schema, record)
        except Exception as exc:  # fastavro raises ValueError, TypeError, struct.error...
            raise EncodeError(f"{self.base_topic}: {_describe(exc)}") from None
        return buf.getvalue()

    def _register(self) -> bytes:
        from confluent_kafka.schema_registry import Schema

        assert self._registry is not None
        try:
            schema_id = self._registry.register_schema(
                self.subject, Schema(schema_json(self.base_topic), "AVRO")
            )
        except _registry_error_class() as exc:
            if getattr(exc, "http_status_code", None) in (409, 422):
                raise ConfigError(f"registry refused the schema of {self.subject}: {exc}") from exc
            raise RegistryUnavailable(f"registering {self.subject}: {exc}") from exc
        except Exception as exc:  # transport errors and malformed answers alike
            raise RegistryUnavailable(f"registering {self.subject}: {_describe(exc)}") from exc
        self._header = bytes([_MAGIC]) + int(schema_id).to_bytes(4, "big")
        return self._header


def dead_letter(
    payload: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    detail: str,
    service: str,
    now_ms: int,
    max_payload_bytes: int | None = None,
) -> dict[str, Any]:
    """The dead-letter record (schema ``DeadLetter``) for a record that could not be processed.

    The original bytes are kept as ``payload`` (only the first ``max_payload_bytes`` when set,
    with ``payload_truncated``), so the record can be replayed; ``payload_text`` repeats them
    as text, cut to 1 KiB, when they are valid UTF-8. Use -1 for an unknown partition/offset.
    """
    size = 0 if payload is None else len(payload)
    kept = payload
    truncated = False
    if payload is not None and max_payload_bytes is not None and size > max_payload_bytes:
        kept, truncated = payload[:max_payload_bytes], True
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        # A detail may quote what the record held; lone surrogates would make it unencodable.
        "detail": _cut(detail, _DETAIL_CHARS).encode("utf-8", "backslashreplace").decode(),
        "service": service,
        "failed_at": now_ms,
        "payload": kept,
        "payload_size": size,
        "payload_truncated": truncated,
        "payload_text": _preview(payload),
    }


def _looks_like_text(payload: bytes) -> bool:
    try:
        text = payload[:256].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def _preview(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Valid UTF-8 cut at a byte limit can only end in a partial character, which "ignore" drops.
    return payload[:_PREVIEW_BYTES].decode("utf-8", "ignore")
