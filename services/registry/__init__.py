"""The model registry, event-sourced on ``model.events``.

Every transition of a model version is one record on the single-partition topic
``model.events`` (keyed by model name, schema ``schemas/model.events.avsc``); the registry *is*
that topic. Any process rebuilds it by replaying the topic from the first record, and follows it
live by reading on. Artifacts live in the artifact store (``services.models.ArtifactStore``),
written once and verified by sha256 on every load.

The API (everything below is importable from ``services.registry``)::

    # Events and state
    ModelEvent            pydantic: model, version, transition (registered | rejected | shadow |
                          canary | champion | archived | rolled_back), time (epoch ms), actor,
                          reason, artifact_uri, sha256, card (ModelCard, on `registered`),
                          metrics, lineage (Lineage: training_window {start, end}, parent_version,
                          trigger, extra keys kept), traffic_fraction (canary).
                          .to_record() / ModelEvent.from_record(dict) ↔ the Avro record.
    RegistryState         the fold: .models[name] → ModelRecord (.champion, .canary,
                          .canary_fraction, .shadows, .versions[v] → VersionRecord with status,
                          card, sha256, metrics, lineage; .history → HistoryEntry list;
                          .champions → ChampionPeriod list; .champion_at(ms); .periods →
                          ServingPeriod list; .serving_at(ms) → (index, ServingSet)),
                          .serving(name) → ServingSet | None, .check(event) → why not | None,
                          RegistryState.fold(events).

    # Reading
    read_state(settings) -> RegistryState         replay model.events to its end
    RegistryFollower(settings)                    .catch_up() then .poll(timeout) → new events,
                                                  folded into .state (live followers)

    # Writing (each validates against the replayed state, then appends and waits for the ack)
    register(settings, onnx_bytes, card, *, actor, reason=None, lineage=None) -> ModelEvent
        validates (no pickle, ONNX checker, card checksum if set, input/outputs vs. the card's
        feature spec and task, smoke prediction on the reference sample), stores the artifact
        once (next version number), publishes `registered`; or publishes `rejected` (version "",
        reason) and stores nothing. Always returns the event: check `.transition`.
    transition(settings, model, version, kind, *, fraction=None, actor, reason=None,
               metrics=None) -> ModelEvent
        kind: shadow | canary (fraction in (0, 1]) | champion (old champion archived) |
        archived | rejected | rolled_back. Raises TransitionRefused when the state forbids it.
    rollback(settings, model, *, actor, reason=None) -> ModelEvent
        `rolled_back` on the champion; the fold restores the previous champion.
    adopt_store(settings, store) -> list[ModelEvent]
        registers + crowns the newest stored version of each model the registry lacks
        (what `modelstream up` does on a fresh broker).
    load_version(store, version_record, threads=1) -> OnnxModel
        load a registered version, checked against the store card and the registry sha256.

    # Routing
    entity_bucket(entity_id) -> float in [0, 1); serves_canary(entity_id, fraction) -> bool

Example::

    from services.registry import read_state, register, transition, rollback

    event = register(settings, onnx_bytes, card, actor="alice", lineage={"trigger": "manual"})
    if event.transition == "registered":
        transition(settings, "agrawal", event.version, "shadow", actor="alice")
        transition(settings, "agrawal", event.version, "canary", fraction=0.1, actor="alice")
        transition(settings, "agrawal", event.version, "champion", actor="alice")
    rollback(settings, "agrawal", actor="alice", reason="accuracy dropped")
    state = read_state(settings)
    state.models["agrawal"].champion            # the restored version
    state.models["agrawal"].champion_at(t_ms)   # who was champion at t
"""

from __future__ import annotations

from .actions import adopt_store, load_version, read_state, register, rollback, transition
from .events import TRANSITIONS, Lineage, ModelEvent, TrainingWindow, Transition, now_ms
from .exceptions import RegistryError, TransitionRefused
from .journal import RegistryFollower, publish_events, replay
from .routing import entity_bucket, serves_canary
from .state import (
    SWITCH_DELAY_MS,
    ChampionPeriod,
    HistoryEntry,
    ModelRecord,
    RegistryState,
    ServingPeriod,
    ServingSet,
    VersionRecord,
)

__all__ = [
    "SWITCH_DELAY_MS",
    "TRANSITIONS",
    "ChampionPeriod",
    "HistoryEntry",
    "Lineage",
    "ModelEvent",
    "ModelRecord",
    "RegistryError",
    "RegistryFollower",
    "RegistryState",
    "ServingPeriod",
    "ServingSet",
    "TrainingWindow",
    "Transition",
    "TransitionRefused",
    "VersionRecord",
    "adopt_store",
    "entity_bucket",
    "load_version",
    "now_ms",
    "publish_events",
    "read_state",
    "register",
    "replay",
    "rollback",
    "serves_canary",
    "transition",
]
