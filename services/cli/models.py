"""``modelstream models …``: the registry from the command line.

Reading (``list``, ``show``, ``history``) replays ``model.events``; writing (``register``,
``promote``, ``rollback``, ``stage``, ``archive``) needs the admin token configured for the
deployment (``MODELSTREAM_ADMIN_TOKEN`` or ``MODELSTREAM_ADMIN_TOKEN_FILE``), given as
``--token`` or ``MODELSTREAM_TOKEN``.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import os
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ..models import ModelCard
from ..registry import (
    ModelEvent,
    ModelRecord,
    RegistryState,
    Transition,
    VersionRecord,
    read_state,
    register,
    rollback,
    transition,
)
from ..runtime.errors import ConfigError, ModelstreamError
from ..runtime.settings import Settings

__all__ = ["AdminTokenError", "add_models_parser", "check_admin_token", "run_models"]

ADMIN = ("register", "promote", "rollback", "stage", "archive")


class AdminTokenError(ModelstreamError):
    """An admin action without the right token."""


def add_models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="the model registry: list, show, history, register, "
                       "promote, rollback, stage")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = msub.add_parser("list", help="every model: champion, canary, shadows")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = msub.add_parser("show", help="a model's versions, or one version in detail")
    show.add_argument("name")
    show.add_argument("version", nargs="?")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    hist = msub.add_parser("history", help="every transition of a model, and who was champion when")
    hist.add_argument("name")
    hist.add_argument("--json", action="store_true", help="machine-readable output")

    def admin(name: str, help_text: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = msub.add_parser(name, help=f"{help_text} (admin)")
        a.add_argument("--token", help="admin token (default: $MODELSTREAM_TOKEN)")
        a.add_argument("--reason", help="why; recorded on model.events")
        a.add_argument("--actor", help="who; recorded on model.events (default: cli:<user>)")
        return a

    reg = admin("register", "validate and store an ONNX artifact with its card")
    reg.add_argument("onnx", type=Path)
    reg.add_argument("card", type=Path)
    reg.add_argument("--parent-version", help="lineage: the version this one was derived from")
    reg.add_argument("--trigger", default="manual", help="lineage: what caused it (default manual)")
    pro = admin("promote", "make a version the champion (the old one is archived)")
    pro.add_argument("name")
    pro.add_argument("version")
    rb = admin("rollback", "demote the champion and restore the previous one")
    rb.add_argument("name")
    st = admin("stage", "make a version a shadow, or a canary serving a share of entities")
    st.add_argument("name")
    st.add_argument("version")
    role = st.add_mutually_exclusive_group(required=True)
    role.add_argument("--shadow", action="store_true", help="score every event, serve none")
    role.add_argument("--canary", type=float, metavar="FRACTION",
                      help="serve this share (0..1] of entities instead of the champion")
    ar = admin("archive", "take a challenger out of service")
    ar.add_argument("name")
    ar.add_argument("version")
    from .export import add_export_parser

    add_export_parser(msub)


def check_admin_token(settings: Settings, given: str | None) -> None:
    """Raise ``AdminTokenError`` unless ``given`` (or ``$MODELSTREAM_TOKEN``) is the admin token."""
    expected = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not expected:
        raise AdminTokenError(
            "admin actions are disabled: no admin token is configured (set"
            " MODELSTREAM_ADMIN_TOKEN or MODELSTREAM_ADMIN_TOKEN_FILE for this deployment)"
        )
    token = given if given is not None else os.environ.get("MODELSTREAM_TOKEN", "")
    if not token:
        raise AdminTokenError("an admin token is required: pass --token or set MODELSTREAM_TOKEN")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise AdminTokenError("the admin token is not valid")


def run_models(settings: Settings, args: argparse.Namespace) -> int:
    action = args.models_command
    if action == "export":  # from the artifact store alone: no broker needed
        from .export import run_export

        return run_export(settings, args)
    if action in ADMIN:
        check_admin_token(settings, args.token)
        return _admin(settings, args)
    console = Console(quiet=args.json)
    state = read_state(settings)
    if action == "list":
        result: Any = _list(state, console)
    elif action == "show":
        result = _show(_record(state, args.name), args.version, console)
    else:
        result = _history(_record(state, args.name), console)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


# -- admin -------------------------------------------------------------------------------------


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    actor = args.actor or f"cli:{getpass.getuser()}"
    action, reason = args.models_command, args.reason
    if action == "register":
        card = _read_card(args.card)
        try:
            onnx_bytes = args.onnx.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.onnx}: {exc}") from exc
        lineage = {"trigger": args.trigger, "parent_version": args.parent_version}
        event = register(settings, onnx_bytes, card, actor=actor, reason=reason,
                         lineage={k: v for k, v in lineage.items() if v})
    elif action == "promote":
        event = transition(settings, args.name, args.version, "champion", actor=actor,
                           reason=reason)
    elif action == "rollback":
        event = rollback(settings, args.name, actor=actor, reason=reason)
    elif action == "archive":
        event = transition(settings, args.name, args.version, "archived", actor=actor,
                           reason=reason)
    else:
        kind: Transition = "shadow" if args.shadow else "canary"
        event = transition(settings, args.name, args.version, kind, fraction=args.canary,
                           actor=actor, reason=reason)
    print(event.describe())
    if event.transition == "rolled_back":
        record = read_state(settings).model(event.model)
        if record is not None and record.champion:
            print(f"{event.model} champion is now v{record.champion}")
    return 1 if event.transition == "rejected" and action == "register" else 0


def _read_card(path: Path) -> ModelCard:
    try:
        return ModelCard.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the card {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid model card: {exc}") from exc


# -- reading -----------------------------------------------------------------------------------


def _record(state: RegistryState, name: str) -> ModelRecord:
    record = state.model(name)
    if record is None:
        known = ", ".join(sorted(state.models)) or "none"
        raise ConfigError(f"no model {name!r} in the registry (known: {known})")
    return record


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _list(state: RegistryState, console: Console) -> list[dict[str, Any]]:
    table = Table(title=f"models ({len(state.models)})", header_style="bold")
    for col in ("model", "champion", "canary", "shadows", "versions", "last change"):
        table.add_column(col)
    out = []
    for name, r in sorted(state.models.items()):
        canary = f"v{r.canary} ({r.canary_fraction:.0%})" if r.canary else "-"
        last = r.history[-1].event.time if r.history else None
        table.add_row(name, f"v{r.champion}" if r.champion else "-", canary,
                      ", ".join(f"v{s}" for s in r.shadows) or "-", str(len(r.versions)),
                      _when(last))
        out.append({"model": name, "champion": r.champion, "canary": r.canary,
                    "canary_fraction": r.canary_fraction if r.canary else None,
                    "shadows": list(r.shadows), "versions": sorted(r.versions, key=int),
                    "updated_at": last})
    console.print(table)
    return out


def _version_json(v: VersionRecord) -> dict[str, Any]:
    card = v.card
    return {
        "model": v.model, "version": v.version, "status": v.status,
        "registered_at": v.registered_at, "updated_at": v.updated_at,
        "artifact_uri": v.artifact_uri, "sha256": v.sha256, "metrics": v.metrics,
        "lineage": v.lineage.model_dump(mode="json", exclude_none=True),
        "traffic_fraction": v.traffic_fraction,
        "task": card.task if card else None,
        "features": [f.model_dump(exclude_none=True) for f in card.features] if card else None,
        "labels": card.labels if card else None,
    }


def _show(r: ModelRecord, version: str | None, console: Console) -> dict[str, Any]:
    if version is not None:
        v = r.versions.get(version)
        if v is None:
            raise ConfigError(f"{r.name} has no version {version!r}"
                              f" (versions: {', '.join(sorted(r.versions, key=int)) or 'none'})")
        out = _version_json(v)
        for key, value in out.items():
            if value not in (None, {}, []):
                console.print(f"[bold]{key:<16}[/bold] {value}")
        return out
    table = Table(title=f"{r.name}", header_style="bold")
    for col in ("version", "status", "registered", "sha256", "metrics"):
        table.add_column(col)
    for key in sorted(r.versions, key=int):
        v = r.versions[key]
        status = v.status + (f" {v.traffic_fraction:.0%}" if v.traffic_fraction else "")
        shown = ", ".join(f"{k} {m:.4g}" for k, m in sorted(v.metrics.items())[:4])
        table.add_row(f"v{key}", status, _when(v.registered_at), (v.sha256 or "-")[:12], shown)
    console.print(table)
    return {"model": r.name, "champion": r.champion, "canary": r.canary,
            "canary_fraction": r.canary_fraction if r.canary else None, "shadows": r.shadows,
            "versions": [_version_json(r.versions[k]) for k in sorted(r.versions, key=int)]}


def _history(r: ModelRecord, console: Console) -> dict[str, Any]:
    table = Table(title=f"{r.name}: history", header_style="bold")
    for col in ("time", "version", "transition", "actor", "reason"):
        table.add_column(col)
    events = []
    for entry in r.history:
        e: ModelEvent = entry.event
        what = e.transition + (f" {e.traffic_fraction:.0%}" if e.traffic_fraction else "")
        if entry.archived:
            what += f" (v{entry.archived} archived)"
        if entry.restored:
            what += f" (v{entry.restored} restored)"
        if not entry.applied:
            what += f" — not applied: {entry.note}"
        table.add_row(_when(e.time), f"v{e.version}" if e.version else "-", what, e.actor,
                      (e.reason or "")[:120])
        record = e.to_record()
        record.pop("card")
        events.append({**record, "applied": entry.applied, "note": entry.note,
                       "archived": entry.archived, "restored": entry.restored})
    console.print(table)
    periods = Table(title="champions", header_style="bold")
    for col in ("version", "from", "until", "ended by"):
        periods.add_column(col)
    champions = []
    for p in r.champions:
        periods.add_row(f"v{p.version}", _when(p.start), _when(p.end) if p.end else "now",
                        p.ended_by or "-")
        champions.append({"version": p.version, "start": p.start, "end": p.end,
                          "ended_by": p.ended_by})
    console.print(periods)
    return {"model": r.name, "events": events, "champions": champions}
