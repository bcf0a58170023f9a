"""The ``modelstream`` command."""

from __future__ import annotations

import argparse
import sys

import orjson

from ..runtime.errors import ModelstreamError
from ..runtime.settings import Settings

__all__ = ["main"]

SERVICES = ("ingest", "predict", "join", "monitor", "dashboard", "retrain")

EPILOG = """\
Servers: `up` and `demo` start an embedded broker (127.0.0.1:9092) and Valkey (127.0.0.1:6379)
unless MODELSTREAM_KAFKA_BOOTSTRAP / MODELSTREAM_REDIS_URL point at real ones. Every setting is
an environment variable MODELSTREAM_<NAME>; see the README.

examples:
  modelstream up                                  # run the stack until Ctrl-C
  modelstream status                              # endpoints, topics, lag, health
  echo '{"event_id":"e-1","entity_id":"c-1",...}' | modelstream produce features
  modelstream tail predictions -n 5               # the last five predictions
  modelstream metrics                             # accuracy and drift per model version
  modelstream alerts --history                    # alerts as they fired and resolved
  modelstream kcat -C -t predictions -o -5 -e     # Debian's kcat, working with the broker
  modelstream models list                         # champion, canary and shadows per model
  modelstream models stage agrawal 2 --canary 0.1 --token $TOKEN
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelstream",
        description="Deploy and monitor machine-learning models on Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the embedded stack and every service; Ctrl-C stops all")
    up.add_argument("--partitions", type=int, help="partitions per topic (default 4)")

    demo = sub.add_parser("demo", help="start a stack, stream demo traffic through it, summarise")
    demo.add_argument("--rate", type=float, default=1500, help="events per second (default 1500)")
    demo.add_argument("--normal-seconds", type=float, default=30,
                      help="seconds of normal traffic before the drift (default 30)")
    demo.add_argument("--max-seconds", type=float, default=150,
                      help="seconds the loop has after the drift to recover (default 150)")
    demo.add_argument("--tail-seconds", type=float, default=8,
                      help="seconds of traffic after accuracy has recovered (default 8)")

    status = sub.add_parser("status", help="endpoints, topics, consumer lag and service health")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("topics", help="create missing topics and list them with partitions")

    met = sub.add_parser("metrics", help="quality and drift of every model version, now")
    met.add_argument("--json", action="store_true", help="machine-readable output")
    al = sub.add_parser("alerts", help="alerts firing now (--history: every alert event)")
    al.add_argument("--history", action="store_true")
    al.add_argument("--json", action="store_true", help="machine-readable output")

    produce = sub.add_parser("produce", help="send JSON lines (stdin or a file) to a topic")
    produce.add_argument("topic", help="topic base name, e.g. features or outcomes")
    produce.add_argument("file", nargs="?", default="-", help="JSON-lines file (default stdin)")
    produce.add_argument("--key-field", default="entity_id",
                         help="field used as the record key (default entity_id; '' for none)")

    tail = sub.add_parser("tail", help="print records of a topic as JSON lines")
    tail.add_argument("topic", help="topic base name, e.g. predictions or features.dlq")
    tail.add_argument("-n", type=int, default=None, help="stop after N records (the last N)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("-f", "--follow", action="store_true", help="keep waiting for records")

    run = sub.add_parser("run", help="run one service in the foreground (containers use this)")
    run.add_argument("service", choices=SERVICES)

    from .models import add_models_parser

    add_models_parser(sub)

    from .score import add_score_parser

    add_score_parser(sub)

    from .retrain import add_retrain_parser

    add_retrain_parser(sub)

    kc = sub.add_parser("kcat", help="run Debian's kcat against the broker (extra args pass on)")
    kc.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kcat"] and argv[1:2] != ["--help"]:
        # Everything after `kcat` is kcat's own, flags included: no argparse in between.
        argv = ["kcat", "--", *argv[1:]]
    args = _parser().parse_args(argv)
    try:
        sys.exit(_dispatch(args) or 0)
    except ModelstreamError as exc:
        print(f"modelstream: {exc}", file=sys.stderr)
        sys.exit(2)


def _dispatch(args: argparse.Namespace) -> int | None:
    from .context import cli_settings

    if args.command == "up":
        return _up(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(Settings(), rate=args.rate, normal_seconds=args.normal_seconds,
                        max_seconds=args.max_seconds, tail_seconds=args.tail_seconds)
    if args.command == "run":
        return _run(args.service)
    settings = cli_settings()
    if args.command == "status":
        return _status(settings, args.json)
    if args.command == "topics":
        from ..runtime.kafka import create_topics

        for name, parts in sorted(create_topics(settings).items()):
            print(f"{name:<28} {parts} partitions")
        return 0
    if args.command in ("metrics", "alerts"):
        from rich.console import Console

        from .observe import print_alerts, print_metrics

        console = Console(quiet=args.json)
        if args.command == "metrics":
            result: object = print_metrics(settings, console)
        else:
            result = print_alerts(settings, console, args.history)
        if args.json:
            print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.command == "score":
        from .score import run_score

        return run_score(settings, args)
    if args.command == "retrain":
        from .retrain import run_retrain

        return run_retrain(settings, args)
    if args.command == "models":
        from .models import run_models

        return run_models(settings, args)
    if args.command == "produce":
        from .records import produce_lines

        stream = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
        with stream:
            sent, _ = produce_lines(settings, args.topic, stream, args.key_field or None)
        print(f"produced {sent} records to {settings.topics.name(args.topic)}", file=sys.stderr)
        return 0
    if args.command == "tail":
        from .records import tail

        tail(settings, args.topic, count=args.n, from_beginning=args.from_beginning,
             follow=args.follow)
        return 0
    if args.command == "kcat":
        from .kcat import run_kcat

        kcat_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        run_kcat(kcat_args, settings.kafka_bootstrap or "127.0.0.1:9092")
    return 0


def _up(args: argparse.Namespace) -> int:
    from ..runtime.logs import configure_logging
    from ..stack.stack import Stack

    settings = Settings()
    configure_logging("up", settings.log_level, settings.log_format)
    if args.partitions:
        settings = settings.model_copy(update={"partitions": args.partitions})
    stack = Stack(settings)
    stack.start()  # on failure, what it started is stopped before it raises
    try:
        ready = stack.wait_ready(60)
        print("modelstream is up" + ("" if ready else " (some services still starting)")
              + f"; state in {settings.data_dir / 'stack.json'}; Ctrl-C stops everything",
              flush=True)
        stack.supervise_until_signal()
    finally:
        stack.stop()
        print("modelstream stopped", flush=True)
    return 0


def _run(service: str) -> int:
    from ..runtime.service import run_service

    settings = Settings()
    if service == "retrain":  # the faust app of the control plane, not a stream loop
        from ..retrain.service import run as run_retrain

        run_retrain(settings)
        return 0
    if service == "dashboard":  # a web page over the others, not a stream loop
        from ..dashboard.service import run

        run(settings)
        return 0
    if service == "ingest":
        from ..ingest.service import build
    elif service == "predict":
        from ..predict.service import build
    elif service == "join":
        from ..join.service import build
    else:
        from ..monitor.service import build
    run_service(service, settings, build)
    return 0


def _status(settings: Settings, as_json: bool) -> int:
    from .inspect import status_report

    report = status_report(settings)
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"broker  {report['broker']}")
    print(f"redis   {report['redis']}")
    print("topics")
    for name, t in sorted(report["topics"].items()):
        print(f"  {name:<28} {t['partitions']:>3} partitions {t['messages']:>12,} messages")
    print("consumer groups")
    for g in report["consumer_groups"].values():
        print(f"  {g['group']:<28} on {g['topic']:<20} lag {g['lag']:,}")
    print("services")
    for name, h in report["services"].items():
        print(f"  {name:<8} {h['status']:<8} {h.get('metrics', '')}")
    return 0


if __name__ == "__main__":
    main()
