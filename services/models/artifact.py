"""What a model artifact may be: a well-formed ONNX model, and never a pickle.

Unpickling runs arbitrary code, so a pickled model (``joblib``, ``torch.save``, ``pickle``) is
refused by looking at its first bytes, before anything tries to parse it. Everything else must
parse as an ONNX ``ModelProto`` and pass the ONNX checker, so a truncated or foreign file fails
here with a clear message rather than deep inside onnxruntime.
"""

from __future__ import annotations

import hashlib

import onnx

from ..runtime.errors import ModelLoadError

__all__ = ["check_onnx", "refuse_pickle", "sha256_hex"]

# Pickle protocols 2-5 open with the PROTO opcode; protocol 0/1 pickles and anything else that
# is not ONNX fail the parse below. No serialized ONNX model starts with this byte: protobuf
# writers emit ir_version (tag 0x08) first.
_PICKLE_PROTO = b"\x80"
# torch.save and some joblib dumps are zip archives full of pickles.
_ZIP_MAGIC = b"PK\x03\x04"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refuse_pickle(data: bytes, where: str) -> None:
    """Raise ``ModelLoadError`` if ``data`` looks like a pickle or a zip of them; never parse it."""
    if data.startswith(_PICKLE_PROTO):
        raise ModelLoadError(
            f"{where}: the artifact is a Python pickle, not ONNX; pickles are never loaded"
            " (they can run arbitrary code): export the model to ONNX"
        )
    if data.startswith(_ZIP_MAGIC):
        raise ModelLoadError(
            f"{where}: the artifact is a zip archive (e.g. a torch/joblib file holding pickles),"
            " not ONNX; pickles are never loaded: export the model to ONNX"
        )


def check_onnx(data: bytes, where: str) -> onnx.ModelProto:
    """Parse and check ``data`` as ONNX, or raise ``ModelLoadError`` naming ``where``."""
    if not data:
        raise ModelLoadError(f"{where}: the artifact is empty")
    refuse_pickle(data, where)
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf and the checker raise several unrelated types
        raise ModelLoadError(
            f"{where}: not a valid ONNX model ({type(exc).__name__}: {exc})"
        ) from exc
    return proto
