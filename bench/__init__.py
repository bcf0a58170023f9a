"""``make bench``: modelstream's throughput and latency on the embedded stack, each figure next
to a raw confluent-kafka passthrough measured in the same run (see ``bench.run``).

Modules: ``run`` (the command), ``throughput`` (one-process loops), ``latency`` (chains of
processes under a paced load), ``passthrough`` (the baseline loop), ``stack`` (broker, Valkey,
demo model, topics), ``report`` (medians, ratios, tables), ``profile`` (cProfile of one run).
Against the limits and the alternatives (``suite`` runs them): ``limits`` (onnxruntime and Redis
alone), ``chains`` (process chains under a burst or a steady load), ``rest_server`` and
``rest_consumer`` (per-event REST serving), ``faust_agent``, ``drift_batch`` (Evidently vs the
online drift detector), ``curve`` (latency under load), ``scaleout``, ``memory``, ``procstat``.
"""
