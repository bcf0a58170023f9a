"""The Kafka side of per-event REST serving: consume, POST each event, produce the prediction.

The loop users write in front of a model server: a confluent-kafka consumer (modelstream's
client settings), one keep-alive HTTP request per event (``requests.Session``), the server's
answer merged into a prediction record and produced, offsets committed after each consumed
batch's predictions are flushed (at-least-once, as modelstream delivers).

    python -m bench.rest_consumer --bootstrap HOST:PORT --source T --dest T --group G --url URL
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

import orjson
import requests

from services.runtime import kafka
from services.runtime.settings import Settings

__all__ = ["RestScorer", "main"]


class RestScorer:
    def __init__(self, settings: Settings, source: str, dest: str, group: str, url: str) -> None:
        self.source, self.dest, self.url = source, dest, url
        self.consumer = kafka.consumer(settings, group)
        self.producer = kafka.producer(settings)
        self.http = requests.Session()
        self.running = False

    def score(self, value: bytes) -> tuple[bytes, bytes]:
        event: dict[str, Any] = orjson.loads(value)
        response = self.http.post(self.url, data=orjson.dumps({"features": event["features"]}),
                                  headers={"content-type": "application/json"}, timeout=10)
        response.raise_for_status()
        prediction = {"event_id": event["event_id"], "entity_id": event["entity_id"],
                      **response.json(), "features": event["features"],
                      "event_time": event["event_time"]}
        return event["entity_id"].encode(), orjson.dumps(prediction)

    def run(self) -> None:
        consumer, producer = self.consumer, self.producer
        consumer.subscribe([self.source])
        self.running = True
        try:
            while self.running:
                batch = consumer.consume(500, timeout=0.2)
                for msg in batch:
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    key, prediction = self.score(value)
                    producer.produce(self.dest, prediction, key)
                    producer.poll(0)
                if batch:
                    if producer.flush(30):
                        raise RuntimeError("predictions were not acknowledged")
                    consumer.commit(asynchronous=True)
        finally:
            consumer.close()

    def stop(self) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--url", required=True)
    args = p.parse_args(argv)
    scorer = RestScorer(Settings(kafka_bootstrap=args.bootstrap), args.source, args.dest,
                        args.group, args.url)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: scorer.stop())
    scorer.run()


if __name__ == "__main__":
    main()
