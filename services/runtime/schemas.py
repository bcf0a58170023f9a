"""The Avro schema of every topic, read from ``<topic base name>.avsc``.

The ``.avsc`` files live in the repository's ``schemas/`` directory; the wheel ships them as
``services/_schemas``. Both lookups are cached: a schema is read and parsed once per process.
The parsed schemas are shared, so callers must treat them as read-only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, cast

from .errors import ConfigError

__all__ = ["raw_schema", "schema_dir", "schema_for", "schema_json"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def schema_dir() -> Path:
    """The directory holding the ``.avsc`` files: the installed copy first, else the repo's."""
    for candidate in (_PACKAGE_ROOT / "_schemas", _PACKAGE_ROOT.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"no schema directory: neither {_PACKAGE_ROOT / '_schemas'} "
        f"nor {_PACKAGE_ROOT.parent / 'schemas'} exists"
    )


@functools.cache
def raw_schema(base_topic: str) -> dict[str, Any]:
    """The schema of ``base_topic`` exactly as written in its ``.avsc`` file (unparsed JSON)."""
    path = schema_dir() / f"{base_topic}.avsc"
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no Avro schema for topic {base_topic!r} (looked for {path})") from None
    return schema


@functools.cache
def schema_for(base_topic: str) -> dict[str, Any]:
    """The parsed schema of ``base_topic`` (``fastavro.parse_schema``), ready for fastavro."""
    import fastavro

    return cast(dict[str, Any], fastavro.parse_schema(raw_schema(base_topic)))


@functools.cache
def schema_json(base_topic: str) -> str:
    """The schema of ``base_topic`` as compact, stable JSON text, for a schema registry.

    This is deliberately not Avro's Parsing Canonical Form: that form strips ``default`` and
    ``doc``, and a registry needs the defaults to check compatibility between versions.
    """
    return json.dumps(raw_schema(base_topic), separators=(",", ":"), ensure_ascii=False)
