"""The baseline: a plain confluent-kafka consume → produce → flush → commit loop that does
nothing per message, batched like modelstream's StreamLoop (block for the first record, then
drain what is fetched, up to 1000), with the same client configuration.

Also runnable as a process, for the chained latency baseline::

    python -m bench.passthrough --bootstrap 127.0.0.1:9092 --source a --dest b --group g
"""

from __future__ import annotations

import argparse
import signal
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from services.runtime import kafka
from services.runtime.settings import Settings

__all__ = ["Passthrough", "PassthroughTiming"]


@dataclass
class PassthroughTiming:
    consumed: int = 0
    first_consumed: float | None = None  # perf_counter when the first batch arrived
    last_acked: float | None = None  # perf_counter when the batch reaching the target flushed
    flush_seconds: float = 0.0
    cpu_first_consumed: float | None = None  # process CPU time at those two moments
    cpu_last_acked: float | None = None

    @property
    def seconds(self) -> float:
        if self.first_consumed is None or self.last_acked is None:
            return float("nan")
        return self.last_acked - self.first_consumed


class Passthrough:
    def __init__(
        self, settings: Settings, source: str, dest: str, group: str, batch_size: int = 1000
    ) -> None:
        self.source = source
        self.dest = dest
        self.batch_size = batch_size
        self.consumer = kafka.consumer(settings, group)
        self.producer = kafka.producer(settings)
        self.failures: list[str] = []
        self.running = False

    def stop(self) -> None:
        self.running = False

    def run(self, target: int | None = None, timeout: float | None = None) -> PassthroughTiming:
        """Pass records on until ``target`` have been acknowledged (or until stopped)."""
        timing = PassthroughTiming()
        deadline = None if timeout is None else time.monotonic() + timeout
        consumer, producer, dest = self.consumer, self.producer, self.dest
        produce, size = producer.produce, self.batch_size
        consumer.subscribe([self.source])
        self.running = True
        try:
            while self.running:
                if deadline is not None and time.monotonic() > deadline:
                    break
                batch = consumer.consume(size, timeout=0)
                if not batch:
                    first = consumer.poll(0.2)
                    if first is None:
                        continue
                    batch = [first, *consumer.consume(size - 1, timeout=0)]
                if timing.first_consumed is None:
                    timing.first_consumed = time.perf_counter()
                    timing.cpu_first_consumed = time.process_time()
                n = 0
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    n += 1
                    while True:
                        try:
                            produce(dest, msg.value(), msg.key(), on_delivery=self._on_delivery)
                            break
                        except BufferError:
                            producer.poll(0.05)
                before = time.perf_counter()
                left = producer.flush(30)
                timing.flush_seconds += time.perf_counter() - before
                if left or self.failures:
                    raise RuntimeError(f"passthrough delivery failed: {self.failures[:3]}")
                consumer.commit(asynchronous=True)
                timing.consumed += n
                if target is not None and timing.consumed >= target:
                    timing.last_acked = time.perf_counter()
                    timing.cpu_last_acked = time.process_time()
                    break
        finally:
            consumer.close()
            producer.close()  # flushed above; its connections go now, not with the broker
        return timing

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failures.append(str(err))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--group", required=True)
    args = p.parse_args()
    settings = Settings(kafka_bootstrap=args.bootstrap)
    relay = Passthrough(settings, args.source, args.dest, args.group)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop())
    relay.run()


if __name__ == "__main__":
    main()
