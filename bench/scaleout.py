"""Scale-out: 1, 2 and 4 predict replicas (``modelstream run predict`` processes) in one consumer
group on a 4-partition ``features.valid``.

Each count gets a fresh chain: the replicas start together, warm-up events flow until one comes
out, the bench waits for the group to report Stable, then a burst of N events is timed to its
last prediction (``chains.ProcessChain.burst``). The CPU seconds of every replica, of the broker
and of the bench's own driver are reported beside the rate: on a 2-core machine the sum of
those over the wall time says where the ceiling is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka.admin import AdminClient

from .chains import BurstResult, Events, ProcessChain, predict_replicas
from .stack import BenchStack

__all__ = ["REPLICAS", "measure_replicas", "wait_stable"]

REPLICAS = (1, 2, 4)


def measure_replicas(
    stack: BenchStack, events: Events, warmup: Events, replicas: int, n: int
) -> BurstResult:
    with ProcessChain(stack, f"scale{replicas}", predict_replicas(replicas),
                      lambda s: s.topics.features_valid, lambda s: s.topics.predictions) as c:
        c.warm(warmup, 1000.0, 1.0)
        wait_stable(c, f"{c.settings.topic_prefix}modelstream-predict")
        return c.burst(events, n)


def wait_stable(chain: ProcessChain, group: str, timeout: float = 20.0) -> bool:
    """Wait until the group reports Stable twice in a row (its members have their partitions)."""
    admin = AdminClient(chain.settings.kafka_config())
    deadline = time.monotonic() + timeout
    stable = 0
    while time.monotonic() < deadline:
        try:
            state = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            stable = stable + 1 if state.state.name == "STABLE" else 0
        except Exception:  # a broker without DescribeGroups: fall back on the timeout
            stable = 0
        if stable >= 2:
            return True
        time.sleep(0.5)
    return False


def cores_note(results: Sequence[tuple[int, BurstResult]]) -> list[str]:
    lines = []
    for replicas, r in results:
        per = ", ".join(f"{v:.2f}" for v in r.cpu.values())
        lines.append(f"{replicas} replica(s): {r.rate:,.0f} ev/s; CPU s per replica [{per}], "
                     f"broker {r.broker_cpu:.2f}, driver {r.driver_cpu:.2f} over "
                     f"{r.seconds:.2f} s wall = {r.cores_busy:.2f} cores busy (the machine: "
                     f"{r.machine_cores:.2f}, other users included)")
    return lines
