"""The alternative "stream processor in Python": a faust-streaming agent scoring event by event.

Built the way faust's documentation shows an agent: ``async for`` over a topic's stream, one
onnxruntime call per event (the same model file, one intra-op thread, as predict runs it), and
``await topic.send()`` of the prediction. It reads complete feature vectors (``features.valid``
JSON, what predict reads) and writes the core fields of a prediction as JSON.

    python -m bench.faust_agent --bootstrap HOST:PORT --source T --dest T --group G \\
        --artifacts DIR --datadir DIR [--model agrawal]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from services.models import ArtifactStore

__all__ = ["main", "model_session"]


def model_session(artifacts: Path, model: str) -> tuple[ort.InferenceSession, list[str], str]:
    """The latest version of ``model`` as a user would load it: a plain InferenceSession over the
    checksummed ONNX file (never a pickle), one thread.

    Returns (session, feature names, version).
    """
    store = ArtifactStore(artifacts)
    version = store.latest(model)
    if version is None:
        raise SystemExit(f"no published version of {model} in {artifacts}")
    card = store.card(model, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        store.load_bytes(model, version), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, [f.name for f in card.features], version


def _app(args: argparse.Namespace) -> Any:
    import faust

    session, names, version = model_session(args.artifacts, args.model)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=str(args.datadir),
        topic_partitions=args.partitions,
        topic_allow_declare=False,  # the bench creates every topic it uses
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    source = app.topic(args.source, key_serializer="raw", value_serializer="raw")
    dest = app.topic(args.dest, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def score(stream: Any) -> None:
        async for event in stream:
            e = orjson.loads(event)
            x = np.array([[e["features"][n] for n in names]], dtype=np.float32)
            label, proba = session.run(None, {"features": x})
            now = int(time.time() * 1000)
            prediction = {
                "event_id": e["event_id"],
                "entity_id": e["entity_id"],
                "model": args.model,
                "model_version": version,
                "label": str(label[0]),
                "score": float(proba[0][1]),
                "features": e["features"],
                "event_time": e["event_time"],
                "predicted_at": now,
            }
            await dest.send(key=e["entity_id"].encode(), value=orjson.dumps(prediction))

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--model", default="agrawal")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--datadir", type=Path, required=True, help="faust's working directory")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = _app(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel=warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
