"""modelstream: deploy and monitor machine-learning models on Kafka.

Each subpackage is one service (``ingest``, ``predict``) or a shared part: ``runtime`` (settings,
the consume-process-produce loop, serde, metrics, Redis), ``models`` (model cards, artifact
store, ONNX scoring), ``stack`` (the embedded broker and Valkey, the supervisor) and ``cli``.
"""

__version__ = "0.1.0"
