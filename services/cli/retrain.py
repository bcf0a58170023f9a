"""``modelstream retrain NAME``: ask the retrain service for a new version of a model."""

from __future__ import annotations

import argparse
import getpass
import time
from typing import Any

from rich.console import Console

from ..retrain.jobs import TERMINAL, job_id_for, manual_request, replay_jobs, send_request
from ..runtime.errors import ConfigError
from ..runtime.settings import Settings

__all__ = ["add_retrain_parser", "run_retrain"]


def add_retrain_parser(sub: Any) -> None:
    p = sub.add_parser(
        "retrain", help="request a retraining job (the retrain service runs it)",
        description="Puts a request on retrain.requests. The retrain service trains on the "
        "latest labeled predictions, validates against the champion, stages the candidate as "
        "shadow and promotes or rejects it; every step is a record on retrain.jobs.",
    )
    p.add_argument("name", help="model to retrain")
    p.add_argument("--reason", help="why; recorded on retrain.jobs and in the lineage")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer parameter, e.g. n_estimators=200 (repeatable)")
    p.add_argument("--wait", action="store_true",
                   help="follow the job's steps on retrain.jobs until it ends")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait (3600)")


def run_retrain(settings: Settings, args: argparse.Namespace) -> int:
    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param takes KEY=VALUE, not {item!r}")
        params[key] = value
    request = manual_request(args.name, requested_by=f"cli:{getpass.getuser()}",
                             reason=args.reason, params=params)
    send_request(settings, request)
    job_id = job_id_for(request.request_id)
    console = Console(highlight=False)
    console.print(f"requested: {args.name} (request {request.request_id}, job {job_id})")
    if not args.wait:
        console.print(f"follow it with: modelstream tail retrain.jobs -f  (job_id {job_id})")
        return 0
    return _follow(settings, job_id, args.timeout, console)


def _follow(settings: Settings, job_id: str, timeout: float, console: Console) -> int:
    shown = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [r for r in replay_jobs(settings) if r["job_id"] == job_id]
        for r in steps[shown:]:
            version = f" v{r['new_version']}" if r.get("new_version") else ""
            why = r.get("error") or r.get("reason") or ""
            console.print(f"{r['step']:<14} {r['status']:<11}{version}  {why}", soft_wrap=True)
        shown = len(steps)
        if steps and steps[-1].get("step") in TERMINAL:
            return 0 if steps[-1]["status"] in ("succeeded", "rejected") else 1
        time.sleep(1.0)
    console.print(f"job {job_id}: still running after {timeout:g} s")
    return 1
