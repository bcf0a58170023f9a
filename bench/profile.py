"""Where a service's time goes: one throughput run under cProfile.

    python -m bench.profile predict [--avro] [--events N]
    python -m bench.profile ingest [--partial] [--events N]
    python -m bench.profile join [--outcomes-first] [--events N]
    python -m bench.profile monitor [--events N]

The profiler runs for exactly the timed window (first batch handled → last flush returned), so
the group join and the set-up are not in it. cProfile roughly doubles the cost of Python calls:
read the shares, not the rate.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
from cProfile import Profile

from services.ingest.service import build as build_ingest
from services.predict.service import build as build_predict

from . import labels, throughput
from .join import measure_join
from .monitor import measure_monitor, warm_up
from .stack import BenchStack

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("service", choices=["predict", "ingest", "join", "monitor"])
    p.add_argument("--avro", action="store_true", help="predict: Avro output")
    p.add_argument("--partial", action="store_true", help="ingest: 20%% partial updates")
    p.add_argument("--outcomes-first", action="store_true",
                   help="join: outcomes stored first, then predictions (default: predictions)")
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)

    profiler = Profile()
    with BenchStack() as stack:
        if args.service in ("join", "monitor"):
            full, truth = labels.feature_events_with_truth(args.events)
            data = labels.labeled_records(stack.store, full, truth)
            if args.service == "join":
                j = measure_join(stack, "prof", data,
                                 "outcomes" if args.outcomes_first else "predictions",
                                 profiler=profiler)
                print(f"join: {j.note()} under the profiler\n")
            else:
                warm_up(stack, data)  # as bench.run does: one-time calibrations out of the window
                m = measure_monitor(stack, "prof", data, profiler=profiler)
                print(f"monitor: {m.note()} ({m.rate:,.0f} ev/s) under the profiler\n")
            _print_stats(profiler, args.top)
            return 0
        events = throughput.feature_events(args.events, partial=args.partial)
        if args.service == "predict":
            t = throughput.measure_service(
                stack, "prof", build_predict, lambda s: s.topics.features_valid,
                throughput.as_valid(events), profiler=profiler,
                output_format="avro" if args.avro else "json",
            )
        else:
            t = throughput.measure_service(
                stack, "prof", build_ingest, lambda s: s.topics.features, events,
                profiler=profiler,
            )
    print(f"{args.service}: {t.consumed:,} records in {t.seconds:.2f} s under the profiler "
          f"({t.rate:,.0f} ev/s)\n")
    _print_stats(profiler, args.top)
    return 0


def _print_stats(profiler: Profile, top: int) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(top)
        print(f"--- top {top} by {order} ---")
        print(out.getvalue().split("\n", 5)[-1] if order == "tottime" else out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
