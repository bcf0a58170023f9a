"""What predict serves, following ``model.events`` live.

A :class:`ModelServing` is the set of versions scoring one model — the champion, an optional
canary with its share of entities, and the shadows — as scorers that are already loaded. The
:class:`RegistryWatch` replays the registry on start, then reads new events between batches
(:meth:`RegistryWatch.poll`, a non-blocking read); when what should serve changes it loads the new
versions in a background thread and publishes a new immutable plan. The handler picks the plan up
at the start of a batch, so a batch is scored by exactly one set of versions: no event is scored
twice by a version, none waits more than the batch in hand.

A challenger (canary or shadow) that fails to load is isolated: counted, logged, left out of the
plan and retired with a ``rejected`` event. A new champion that fails to load leaves the old
champion serving (it cannot be rejected while it is champion; an operator rolls back or promotes
another version).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from ..models import ArtifactStore, OnnxModel
from ..registry import ModelEvent, RegistryFollower, ServingSet, VersionRecord, load_version
from ..runtime import metrics
from ..runtime.errors import ModelLoadError
from ..runtime.settings import Settings
from .scorer import VersionScorer

__all__ = ["ModelServing", "RegistryWatch"]

log = logging.getLogger(__name__)

ACTOR = "predict"
_POLL_SECONDS = 0.05  # how often the registry is read between batches


@dataclass(frozen=True)
class ModelServing:
    """The loaded versions of one model, by role. Immutable: a change is a new object."""

    champion: VersionScorer
    canary: VersionScorer | None = None
    fraction: float = 0.0
    shadows: tuple[VersionScorer, ...] = ()

    def without(self, version: str) -> ModelServing:
        """This set minus a failed challenger."""
        canary = self.canary if self.canary and self.canary.version != version else None
        return replace(
            self,
            canary=canary,
            fraction=self.fraction if canary else 0.0,
            shadows=tuple(s for s in self.shadows if s.version != version),
        )

    def describe(self) -> str:
        parts = [f"champion v{self.champion.version}"]
        if self.canary:
            parts.append(f"canary v{self.canary.version} ({self.fraction:.0%})")
        parts += [f"shadow v{s.version}" for s in self.shadows]
        return ", ".join(parts)

    def roles(self) -> set[tuple[str, str]]:
        out = {(self.champion.version, "champion")}
        if self.canary:
            out.add((self.canary.version, "canary"))
        out.update((s.version, "shadow") for s in self.shadows)
        return out


Plan = dict[str, ModelServing]


class RegistryWatch:
    """Follows ``model.events`` and keeps :attr:`plan` (model → :class:`ModelServing`) current.

    Only models with a champion in the registry are in the plan; predict serves any other model
    from the artifact store as before (the registry does not know it).
    """

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self._follower = RegistryFollower(settings)
        self._follower.catch_up()
        self._models: dict[tuple[str, str], OnnxModel] = {}
        self._failed: set[tuple[str, str]] = set()
        self._rejections: list[ModelEvent] = []
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._dirty = False
        self._polled = time.monotonic()
        self.plan: Plan = {}
        self._build()  # synchronous on start: the first batch already has its versions
        if self.plan:
            serving = "; ".join(f"{m}: {s.describe()}" for m, s in self.plan.items())
            log.info("registry: %s", serving)

    def knows(self, model: str) -> bool:
        """True when ``model.events`` has any record of ``model``."""
        return self._follower.state.model(model) is not None

    def poll(self) -> list[ModelEvent]:
        """Read new registry events (non-blocking); start a background load if serving changes.

        Returns the ``rejected`` events of challengers that failed to load, for the caller to
        publish.
        """
        now = time.monotonic()
        if now - self._polled >= _POLL_SECONDS:
            self._polled = now
            with self._lock:  # the loader snapshots the state under the same lock
                changed = bool(self._follower.poll(0))
            if changed:
                self._schedule()
        with self._lock:
            out, self._rejections = self._rejections, []
        return out

    def isolate(self, model: str, version: str, role: str, error: BaseException) -> ModelEvent:
        """A challenger failed to score: never load it again here; the ``rejected`` event."""
        self._failed.add((model, version))
        metrics.VERSION_FAILURES.labels(model, version, role, "score").inc()
        metrics.SERVING_VERSIONS.labels(model, version, role).set(0)
        log.error("%s v%s (%s) failed to score and is unloaded: %s", model, version, role, error)
        return self._rejection(model, version, f"failed to score as {role}: {error}")

    def without_failed(self, plan: Plan) -> Plan:
        """``plan`` minus challengers that failed since it was built (a load racing a failure)."""
        failed = self._failed
        if not any((m, v) in failed for m, s in plan.items() for v, _ in s.roles()):
            return plan
        out = {}
        for model, serving in plan.items():
            for version, role in serving.roles():
                if role != "champion" and (model, version) in failed:
                    serving = serving.without(version)
            out[model] = serving
        return out

    def close(self) -> None:
        with self._lock:
            loader = self._loader
        if loader is not None:
            loader.join(30)  # a load in flight still uses the store, not the consumer
        with self._lock:
            self._follower.close()

    # -- loading --------------------------------------------------------------------------

    def _schedule(self) -> None:
        with self._lock:
            if self._loader is not None:
                self._dirty = True  # the running load goes round once more
                return
            self._loader = threading.Thread(target=self._load_loop, name="registry-load",
                                            daemon=True)
            self._loader.start()

    def _load_loop(self) -> None:
        while True:
            try:
                self._build()
            except Exception:  # a bug here must not take the data plane down
                log.exception("registry: building the serving plan failed")
            with self._lock:
                if not self._dirty:
                    self._loader = None  # under the lock: a new change starts a new loader
                    return
                self._dirty = False

    def _build(self) -> None:
        with self._lock:
            snapshot = [r.serving() for r in self._follower.state.models.values() if r.champion]
        plan: Plan = {}
        for wanted in snapshot:
            name = wanted.model
            serving = self._serving(wanted, self.plan.get(name))
            if serving is not None:
                plan[name] = serving
        for name, serving in plan.items():
            old = self.plan.get(name)
            if old is None or old.roles() != serving.roles() or old.fraction != serving.fraction:
                metrics.SERVING_SWAPS.labels(name).inc()
                log.info("registry: %s now serves %s", name, serving.describe())
                for version, role in (old.roles() if old else set()) - serving.roles():
                    metrics.SERVING_VERSIONS.labels(name, version, role).set(0)
                for version, role in serving.roles():
                    metrics.SERVING_VERSIONS.labels(name, version, role).set(1)
        self.plan = plan  # one reference assignment: the handler sees the old plan or this one
        in_use = {(m, v) for m, s in plan.items() for v, _ in s.roles()}
        for key in list(self._models):
            if key not in in_use:
                del self._models[key]  # unloaded: the session goes with the last reference

    def _serving(self, wanted: ServingSet, current: ModelServing | None) -> ModelServing | None:
        assert wanted.champion is not None
        champion_model = self._load(wanted.champion, "champion")
        if champion_model is None:
            if current is None:
                return None
            champion = current.champion  # the old champion keeps serving
        else:
            champion = VersionScorer(champion_model, "champion", True)
        canary = None
        if wanted.canary is not None:
            loaded = self._load(wanted.canary, "canary")
            canary = VersionScorer(loaded, "canary", True) if loaded else None
        shadows = []
        for record in wanted.shadows:
            loaded = self._load(record, "shadow")
            if loaded is not None:
                shadows.append(VersionScorer(loaded, "shadow", False))
        return ModelServing(
            champion=champion,
            canary=canary,
            fraction=wanted.canary_fraction if canary else 0.0,
            shadows=tuple(shadows),
        )

    def _load(self, record: VersionRecord, role: str) -> OnnxModel | None:
        key = (record.model, record.version)
        if key in self._failed:
            return None
        found = self._models.get(key)
        if found is not None:
            return found
        try:
            loaded = load_version(self.store, record, threads=self.settings.ort_threads)
        except ModelLoadError as exc:
            self._failed.add(key)
            metrics.VERSION_FAILURES.labels(record.model, record.version, role, "load").inc()
            if role == "champion":
                log.error("%s v%s cannot serve as champion; the current champion stays: %s",
                          record.model, record.version, exc)
            else:
                log.error("%s v%s (%s) failed to load and is left out: %s",
                          record.model, record.version, role, exc)
                event = self._rejection(record.model, record.version,
                                        f"failed to load as {role}: {exc}")
                with self._lock:
                    self._rejections.append(event)
            return None
        self._models[key] = loaded
        return loaded

    def _rejection(self, model: str, version: str, reason: str) -> ModelEvent:
        record = self._follower.state.model(model)
        known = record.versions.get(version) if record else None
        return ModelEvent(
            model=model, version=version, transition="rejected", actor=ACTOR,
            reason=reason[:2000], artifact_uri=known.artifact_uri if known else None,
            sha256=known.sha256 if known else None,
        )
