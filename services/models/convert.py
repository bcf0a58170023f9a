"""scikit-learn to ONNX, the way every modelstream classifier is exported.

Two choices matter to the scorer: the input is one float tensor ``[None, n_features]`` (named as
the card's ``input_name``), and classifiers are converted with ``zipmap=False`` so their
probabilities come out as a plain ``[N, n_labels]`` tensor instead of a list of dicts, which
would cost a Python object per row.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sklearn_to_onnx"]


def sklearn_to_onnx(
    estimator: Any, n_features: int, *, input_name: str = "features", name: str | None = None
) -> bytes:
    """Serialized ONNX for a fitted scikit-learn estimator (ZipMap off for classifiers)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else None
    model = convert_sklearn(
        estimator,
        name=name or type(estimator).__name__,
        initial_types=[(input_name, FloatTensorType([None, n_features]))],
        options=options,
    )
    data: bytes = model.SerializeToString()
    return data
