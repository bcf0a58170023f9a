"""Monitor state as bytes, with no pickle: JSON for the structure, ``.npz`` for the arrays.

``encode(state)`` walks dicts, lists and tuples; every numpy array becomes a reference into an
``.npz`` archive, which ``numpy.load(..., allow_pickle=False)`` reads back safely.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

__all__ = ["decode", "encode"]

_JSON = "__json__"


def encode(state: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    doc = orjson.dumps(_pack(state, arrays))
    arrays[_JSON] = np.frombuffer(doc, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _pack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    # A module-level function, not a closure: a closure that calls itself is a reference cycle
    # (function -> cell -> function) holding ``arrays`` (a copy of every window, ~MBs) until
    # the cyclic collector runs, which a service calling ``tune_gc`` makes rare. It grew the
    # monitor's RSS by ~2 MB a checkpoint.
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be checkpointed without pickle")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__nd__": name}
    if isinstance(obj, dict):
        return {str(k): _pack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_pack(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def decode(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    doc = orjson.loads(arrays.pop(_JSON).tobytes())
    return _unpack(doc, arrays)


def _unpack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__nd__"}:
            return arrays[obj["__nd__"]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj
