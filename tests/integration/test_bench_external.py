"""The benchmark pointed at a running broker and Redis (``--kafka``/``--redis``): it starts
neither, measures on them, and leaves no topic or key of its own behind. On the way, the
hand-wired join baseline labels every outcome once, whichever side comes first."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka.admin import AdminClient

from bench import labels
from bench.join import First, build_handwired, measure_join
from bench.stack import BenchStack
from bench.throughput import PASSTHROUGH_OUT, feature_events, measure_passthrough
from services.stack.embedded import EmbeddedServer

pytestmark = pytest.mark.integration


def test_bench_measures_on_an_external_broker_and_cleans_up(
        servers: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    broker, valkey = servers
    with BenchStack(broker.url, valkey.url) as stack:
        assert stack.external and stack.broker is None and stack.valkey is None
        assert stack.describe() == (f"the external broker at {broker.url} and an external "
                                    "Redis")
        timing = measure_passthrough(stack, feature_events(2000, partial=False))
        assert timing.consumed == 2000 and timing.outputs == {PASSTHROUGH_OUT: 2000}
        data = labels.labeled_records(stack.store, *labels.feature_events_with_truth(300))
        firsts: tuple[First, ...] = ("predictions", "outcomes")
        for first in firsts:
            j = measure_join(stack, f"hw{first[0]}", data, first, build=build_handwired)
            assert j.labeled == j.outcomes == len(data.outcomes) == 300
            assert j.loop.first_phase_records == 300 and j.loop.consumed == 600
        s = stack.settings("keys")
        client = redis.Redis.from_url(valkey.url)
        client.set(f"{s.topic_prefix}k", b"1")
        stack.drop_keys(s)
        assert client.get(f"{s.topic_prefix}k") is None
        stack.drop_topics(s)
    names = AdminClient({"bootstrap.servers": broker.url}).list_topics(timeout=10).topics
    assert not [n for n in names if n.startswith(("b1-raw-", "b2-keys-", "b3-hwp-", "b4-hwo-"))]
    # The servers it was given still run: the bench stops only what it started.
    assert broker.alive() and valkey.alive()
