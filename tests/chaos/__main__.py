"""``make chaos``: a chaos run on an embedded broker and Valkey of its own (see :mod:`.run`).

    python -m tests.chaos [--seconds 180] [--rate 300] [--kills 15] [--seed N] [--keep]
                          [--no-promote] [--no-retrain]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from services.models import ArtifactStore
from services.models.agrawal import ensure_demo_model, train_agrawal
from services.runtime.settings import Settings
from services.stack.embedded import start_broker
from services.stack.processes import free_port

from .cluster import RestartableValkey
from .run import run_chaos


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--seconds", type=float, default=180.0, help="load duration (default 180)")
    p.add_argument("--rate", type=float, default=300.0, help="feature events/s (default 300)")
    p.add_argument("--kills", type=int, default=15, help="kill -9s during the load (default 15)")
    p.add_argument("--seed", type=int, default=int(time.time()) % 10_000)
    p.add_argument("--keep", action="store_true", help="keep the logs directory")
    p.add_argument("--no-promote", action="store_true",
                   help="no challenger promoted and rolled back during the run")
    p.add_argument("--no-retrain", action="store_true",
                   help="no concept switch and no retraining jobs with the coordinator stopped "
                        "mid-job (they need --seconds 120 or more)")
    args = p.parse_args(argv)
    retrain = not args.no_retrain and args.seconds >= 120
    if not args.no_retrain and not retrain:
        print("retraining under chaos needs --seconds 120 or more: left out", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="modelstream-chaos-"))
    print(f"chaos run, seed {args.seed}; logs in {tmp}", flush=True)
    broker = start_broker(free_port(), tmp)
    valkey = RestartableValkey(free_port(), tmp / "valkey")
    try:
        valkey.start()
        store = ArtifactStore(tmp / "artifacts")
        ensure_demo_model(store)
        challenger = None if args.no_promote else train_agrawal(n=5000, seed=43)
        settings = Settings(kafka_bootstrap=broker.url, redis_url=valkey.url,
                            topic_prefix="chaos.", data_dir=tmp, artifact_dir=store.root)
        result = run_chaos(settings, valkey, tmp / "logs", seconds=args.seconds,
                           rate=args.rate, kills=args.kills, seed=args.seed,
                           log=lambda line: print(line, flush=True), challenger=challenger,
                           retrain=retrain)
    finally:
        valkey.stop()
        broker.stop()
    print()
    print(result.summary())
    if not args.keep and not result.problems:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
