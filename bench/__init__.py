"""``make bench``: modelstream's throughput and latency on the embedded stack, each figure next
to a raw confluent-kafka passthrough measured in the same run (see ``bench.run``).

Modules: ``run`` (the command), ``throughput`` (one-process loops), ``latency`` (chains of
processes under a paced load), ``passthrough`` (the baseline loop), ``stack`` (broker, Valkey,
demo model, topics), ``report`` (medians, ratios, tables), ``profile`` (cProfile of one run).
"""
