"""The registry's writes: register a version, move it between roles, roll back, adopt a store.

Every function validates against the state replayed from ``model.events`` and appends one
record per transition; the topic, not this module, is the registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..models import ArtifactStore, ModelCard, OnnxModel
from ..models.artifact import sha256_hex
from ..models.card import ArtifactRef
from ..runtime.errors import ModelLoadError
from ..runtime.settings import Settings
from .events import Lineage, ModelEvent, Transition, now_ms
from .exceptions import TransitionRefused
from .journal import publish_events, replay
from .state import SWITCH_DELAY_MS, RegistryState, VersionRecord

__all__ = [
    "adopt_store",
    "load_version",
    "read_state",
    "register",
    "rollback",
    "transition",
]

log = logging.getLogger(__name__)

_MAX_REASON = 2000


def read_state(settings: Settings, timeout: float = 15.0) -> RegistryState:
    """The registry now: ``model.events`` replayed from its first record to its end."""
    return replay(settings, timeout)


def register(
    settings: Settings,
    onnx_bytes: bytes,
    card: ModelCard,
    *,
    actor: str,
    reason: str | None = None,
    lineage: Lineage | Mapping[str, Any] | None = None,
    store: ArtifactStore | None = None,
) -> ModelEvent:
    """Validate an artifact, store it once, and publish ``registered`` — or ``rejected``.

    Validation, before anything is written: not a pickle (nor a zip of them), the ONNX checker,
    the card's checksum if it carries one (an exported card does), one float input as wide as the
    card's feature spec, outputs that fit the card's task and labels, and a smoke prediction on
    the card's reference sample. A refused artifact gets a ``rejected`` event (version ``""``,
    the artifact's sha256, the reason) and is not stored. Returns the published event: check
    ``event.transition``. The version number is assigned by the store, whatever the card says.
    """
    store = store or ArtifactStore.from_settings(settings)
    lineage = lineage if isinstance(lineage, Lineage) else Lineage.model_validate(lineage or {})
    digest = sha256_hex(onnx_bytes) if onnx_bytes else None
    try:
        claimed = card.artifact.sha256
        if claimed and claimed != digest:
            raise ModelLoadError(
                f"{card.name}: checksum mismatch: the card says sha256 {claimed}, the artifact"
                f" has {digest}; the file was changed or corrupted"
            )
        merged = {**card.lineage, **lineage.model_dump(mode="json", exclude_none=True)}
        candidate = card.model_copy(
            update={"version": "", "artifact": ArtifactRef(), "lineage": merged}
        )
        published = store.publish(onnx_bytes, candidate)
    except ModelLoadError as exc:
        event = ModelEvent(
            model=card.name, version="", transition="rejected", actor=actor,
            reason=_cut(str(exc)), sha256=digest, metrics=dict(card.metrics), lineage=lineage,
        )
        publish_events(settings, [event])
        log.warning("%s", event.describe())
        return event
    event = ModelEvent(
        model=published.name, version=published.version, transition="registered", actor=actor,
        reason=reason, artifact_uri=store.artifact_uri(published.name, published.version),
        sha256=published.artifact.sha256, card=published, metrics=dict(published.metrics),
        lineage=lineage,
    )
    publish_events(settings, [event])
    return event


def transition(
    settings: Settings,
    model: str,
    version: str,
    kind: Transition,
    *,
    fraction: float | None = None,
    actor: str,
    reason: str | None = None,
    metrics: Mapping[str, float] | None = None,
    state: RegistryState | None = None,
    store: ArtifactStore | None = None,
) -> ModelEvent:
    """Move ``model`` v``version`` to ``kind`` and publish it; ``TransitionRefused`` if the
    registry does not allow it now.

    ``kind``: ``shadow``, ``canary`` (with ``fraction`` in (0, 1]: the share of entities it
    serves instead of the champion), ``champion`` (the old champion is archived), ``archived``,
    ``rejected`` (for good) or ``rolled_back`` (see :func:`rollback`). Before a version is given a
    serving role its artifact is read back from the store and checked against the sha256 it was
    registered with. ``state`` skips the replay when the caller has just folded the topic.

    Returns once the transition is in force: predict serves records stamped
    ``SWITCH_DELAY_MS`` after the event's time with the new versions, so this waits that long
    after the append (every record produced after the call returns is served by them).
    """
    if kind == "registered":
        raise TransitionRefused("use register() to add a version")
    where = f"{model} v{version}"
    if kind == "canary":
        if fraction is None or not 0.0 < fraction <= 1.0:
            raise TransitionRefused(f"{where}: a canary needs a fraction in (0, 1], not {fraction}")
    elif fraction is not None:
        raise TransitionRefused(f"{where}: only a canary takes a traffic fraction")
    state = state or read_state(settings)
    record = state.model(model)
    known = record.versions.get(version) if record else None
    event = ModelEvent(
        model=model, version=version, transition=kind, actor=actor, reason=reason,
        artifact_uri=known.artifact_uri if known else None,
        sha256=known.sha256 if known else None, metrics=dict(metrics or {}),
        lineage=known.lineage if known else Lineage(), traffic_fraction=fraction,
    )
    why = state.check(event)
    if why is not None:
        raise TransitionRefused(f"{where}: cannot make it {kind}: {why}")
    if kind in ("shadow", "canary", "champion") and known is not None:
        try:
            _verify_artifact(store or ArtifactStore.from_settings(settings), known)
        except ModelLoadError as exc:
            raise TransitionRefused(f"{where}: cannot make it {kind}: {exc}") from exc
    # Stamped just before the append: the time is when the transition takes effect, so the
    # artifact check above must not age it.
    event = event.model_copy(update={"time": now_ms()})
    publish_events(settings, [event])
    left = event.time + SWITCH_DELAY_MS - now_ms()
    if left > 0:
        time.sleep(left / 1000)
    else:  # predict may have scored records of the first moments without it
        log.warning("%s: acknowledged %d ms after its time, beyond the %d ms switch delay",
                    event.describe(), SWITCH_DELAY_MS - left, SWITCH_DELAY_MS)
    return event


def rollback(
    settings: Settings,
    model: str,
    *,
    actor: str,
    reason: str | None = None,
    metrics: Mapping[str, float] | None = None,
    state: RegistryState | None = None,
) -> ModelEvent:
    """Demote the champion of ``model`` (``rolled_back``) and restore the previous champion."""
    state = state or read_state(settings)
    record = state.model(model)
    if record is None or record.champion is None:
        raise TransitionRefused(f"{model}: no champion to roll back")
    return transition(
        settings, model, record.champion, "rolled_back", actor=actor, reason=reason,
        metrics=metrics, state=state,
    )


def adopt_store(
    settings: Settings,
    store: ArtifactStore,
    *,
    actor: str = "modelstream up",
    reason: str = "adopted from the artifact store",
) -> list[ModelEvent]:
    """Register and crown the newest stored version of every model the registry does not know.

    What ``modelstream up`` runs: on a new (or memory-backed, hence empty) ``model.events`` the
    models already in the store keep serving, and the topic says so.
    """
    state = read_state(settings)
    events: list[ModelEvent] = []
    for name in store.models():
        if state.model(name) is not None:
            continue
        version = store.latest(name)
        assert version is not None  # models() lists only models with a version
        card = store.card(name, version)
        common: dict[str, Any] = {
            "model": name, "version": version, "actor": actor, "reason": reason,
            "artifact_uri": store.artifact_uri(name, version), "sha256": card.artifact.sha256,
        }
        events.append(ModelEvent(
            transition="registered", card=card, metrics=dict(card.metrics),
            lineage=_lineage_of(card), **common,
        ))
        events.append(ModelEvent(transition="champion", **common))
    if events:
        publish_events(settings, events)
    return events


def load_version(
    store: ArtifactStore, record: VersionRecord, *, threads: int = 1
) -> OnnxModel:
    """Load a registered version, checked against the store's card *and* the registry's sha256,
    and smoke-tested; ``ModelLoadError`` otherwise."""
    data = _verify_artifact(store, record)
    model = OnnxModel(store.card(record.model, record.version), data, threads=threads)
    model.smoke_test()
    return model


def _verify_artifact(store: ArtifactStore, record: VersionRecord) -> bytes:
    data = store.load_bytes(record.model, record.version)
    if record.sha256 and sha256_hex(data) != record.sha256:
        raise ModelLoadError(
            f"{record.model} v{record.version}: checksum mismatch: model.events registered"
            f" sha256 {record.sha256}, the store holds {sha256_hex(data)}"
        )
    return data


def _lineage_of(card: ModelCard) -> Lineage:
    known = {k: card.lineage.get(k) for k in ("training_window", "parent_version", "trigger")}
    try:
        return Lineage.model_validate({k: v for k, v in known.items() if v is not None})
    except ValueError:
        return Lineage()


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
