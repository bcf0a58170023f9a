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

    def walk(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                raise TypeError("object arrays cannot be checkpointed without pickle")
            name = f"a{len(arrays)}"
            arrays[name] = obj
            return {"__nd__": name}
        if isinstance(obj, dict):
            return {str(k): walk(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [walk(v) for v in obj]
        if isinstance(obj, np.generic):
            return obj.item()
        return obj

    doc = orjson.dumps(walk(state))
    arrays[_JSON] = np.frombuffer(doc, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    doc = orjson.loads(arrays.pop(_JSON).tobytes())

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if set(obj) == {"__nd__"}:
                return arrays[obj["__nd__"]]
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(doc)
