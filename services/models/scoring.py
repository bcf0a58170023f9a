"""Scoring with onnxruntime: one session per model version, whole batches per call.

The session is checked against the card when it is built, so a model whose input width, input
type or outputs disagree with its card never serves a single event. Scoring stays in numpy: the
only per-row Python is turning label indices into the label strings of the card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ..runtime.errors import ModelLoadError
from .card import ModelCard
from .matrix import feature_matrix

if TYPE_CHECKING:
    from .store import ArtifactStore

__all__ = ["OnnxModel"]

_FLOAT_TENSOR = "tensor(float)"
_LABEL_TYPES = frozenset({"tensor(int64)", "tensor(string)"})
_PROBABILITY_SUM_TOLERANCE = 1e-3


class OnnxModel:
    """A loaded model version: its card and an onnxruntime session that agrees with it.

    ``threads`` is the intra-op thread count. The default of one suits the service layout
    (parallelism comes from partitions and replicas, and extra threads only contend); sequential
    execution and a single inter-op thread keep latency predictable.
    """

    def __init__(self, card: ModelCard, onnx_bytes: bytes, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.card = card
        self.threads = threads
        self._where = f"{card.name} v{card.version or '(unpublished)'}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own RuntimeError subclasses
            raise ModelLoadError(
                f"{self._where}: onnxruntime cannot load the model: {exc}"
            ) from exc
        self._check_interface()
        self._input_name = card.input_name
        self._width = len(card.features)
        self._outputs = [card.score_output]
        # Object dtype: indexing hands back the card's own str objects, no per-row allocation.
        self._labels = np.array(card.labels, dtype=object)

    @classmethod
    def load(
        cls, store: ArtifactStore, model: str, version: str | None = None, threads: int = 1
    ) -> OnnxModel:
        """Load ``model`` at ``version`` (``None``: the latest) and smoke-test it."""
        if version is None:
            version = store.latest(model)
            if version is None:
                raise ModelLoadError(f"{model}: no published version in {store.root}")
        loaded = cls(store.card(model, version), store.load_bytes(model, version), threads=threads)
        loaded.smoke_test()
        return loaded

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def __repr__(self) -> str:
        return f"OnnxModel({self._where}, task={self.card.task}, threads={self.threads})"

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels and scores for a ``(n, n_features)`` batch.

        Scores: binary, P(``labels[1]``) with shape ``(n,)``; multiclass, the ``(n, k)``
        probability matrix; regression, the ``(n,)`` predictions (and no labels: ``[]``).
        """
        out = self._run(x)
        if not self.card.is_classifier:
            return [], out.reshape(out.shape[0])
        labels: list[str] = self._labels[out.argmax(axis=1)].tolist()
        if self.card.task == "binary":
            return labels, np.ascontiguousarray(out[:, 1])
        return labels, out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The ``(n, len(labels))`` probability matrix of a classifier."""
        if not self.card.is_classifier:
            raise TypeError(f"{self._where} is a regression model: it has no probabilities")
        return self._run(x)

    def smoke_test(self) -> None:
        """Score the card's reference sample; ``ModelLoadError`` unless the outputs look right."""
        rows = self.card.reference.sample or [{}]
        x = feature_matrix(rows, self.card.features)
        n = x.shape[0]
        try:
            labels, scores = self.predict(x)
        except Exception as exc:
            raise ModelLoadError(f"{self._where}: smoke prediction failed: {exc}") from exc
        task = self.card.task
        expected = (n, len(self.card.labels)) if task == "multiclass" else (n,)
        if scores.shape != expected:
            raise ModelLoadError(
                f"{self._where}: smoke prediction gave scores of shape {scores.shape},"
                f" expected {expected}"
            )
        if not np.all(np.isfinite(scores)):
            raise ModelLoadError(f"{self._where}: smoke prediction gave non-finite scores")
        if not self.card.is_classifier:
            return
        if len(labels) != n:
            raise ModelLoadError(
                f"{self._where}: smoke prediction gave {len(labels)} labels for {n}"
            )
        proba = self.predict_proba(x)
        bad_range = np.any(proba < 0.0) or np.any(proba > 1.0)
        bad_sum = np.any(np.abs(proba.sum(axis=1) - 1.0) > _PROBABILITY_SUM_TOLERANCE)
        if bad_range or bad_sum:
            raise ModelLoadError(
                f"{self._where}: output {self.card.score_output!r} is not a probability matrix"
                " (was the classifier converted with zipmap=False?)"
            )

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self._width:
            raise ValueError(f"{self._where} takes (n, {self._width}) batches, got {x.shape}")
        if x.shape[0] == 0:
            width = len(self.card.labels) if self.card.is_classifier else 1
            return np.empty((0, width), dtype=np.float32)
        # No copy when the caller already hands over a C-ordered float32 matrix.
        x = np.ascontiguousarray(x, dtype=np.float32)
        result: np.ndarray = self._session.run(self._outputs, {self._input_name: x})[0]
        return result

    def _check_interface(self) -> None:
        """Refuse a session whose input or outputs do not match the card."""
        card, where = self.card, self._where
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelLoadError(f"{where}: expected one input tensor, the model has {names}")
        (arg,) = inputs
        if arg.name != card.input_name:
            raise ModelLoadError(
                f"{where}: input is {arg.name!r}, the card says {card.input_name!r}"
            )
        if arg.type != _FLOAT_TENSOR or len(arg.shape) != 2:
            raise ModelLoadError(
                f"{where}: input must be a 2-D float tensor, is {arg.type} {arg.shape}"
            )
        if arg.shape[1] != len(card.features):
            raise ModelLoadError(
                f"{where}: the model takes {arg.shape[1]} features per row, the card lists"
                f" {len(card.features)} ({', '.join(card.feature_names)})"
            )
        outputs = {o.name: o for o in self._session.get_outputs()}
        score = outputs.get(card.score_output)
        if score is None or score.type != _FLOAT_TENSOR:
            raise ModelLoadError(
                f"{where}: no float output {card.score_output!r}; the model has {sorted(outputs)}"
            )
        if not card.is_classifier:
            if len(score.shape) not in (1, 2) or (len(score.shape) == 2 and score.shape[1] != 1):
                raise ModelLoadError(
                    f"{where}: a regression output is (n,) or (n, 1), not {score.shape}"
                )
            return
        label = outputs.get(card.label_output or "")
        if label is None or label.type not in _LABEL_TYPES:
            raise ModelLoadError(
                f"{where}: no label output {card.label_output!r}; the model has {sorted(outputs)}"
            )
        width = score.shape[1] if len(score.shape) == 2 else None
        if len(score.shape) != 2 or (isinstance(width, int) and width != len(card.labels)):
            raise ModelLoadError(
                f"{where}: probabilities must be (n, {len(card.labels)}), the model gives"
                f" {score.shape} (was the classifier converted with zipmap=False?)"
            )
