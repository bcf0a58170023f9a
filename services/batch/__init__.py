"""Batch and edge: scoring files and topic ranges offline, and exporting a model bundle.

``modelstream score`` reads rows (``sources``: CSV, JSON lines, Parquet; ``topic``: a time range
of ``features.valid`` or ``predictions``), checks and encodes them a column at a time
(``columns``), scores them in batches of thousands with one onnxruntime session (``score``) and
writes the predictions (``sinks``). ``modelstream models export`` writes a self-contained
bundle that scores with onnxruntime and numpy alone (``export``).
"""

from __future__ import annotations

from .columns import ColumnEncoder, EncodedBatch
from .score import BatchScorer, ScoreSummary, score_all
from .sinks import ScoredRows, open_sink
from .sources import Rejection, RowBatch, detect_format, read_file

__all__ = [
    "BatchScorer",
    "ColumnEncoder",
    "EncodedBatch",
    "Rejection",
    "RowBatch",
    "ScoreSummary",
    "ScoredRows",
    "detect_format",
    "open_sink",
    "read_file",
    "score_all",
]
