"""What predict serves, following ``model.events`` live.

A :class:`ModelServing` is the set of versions scoring one model — the champion, an optional
canary with its share of entities, and the shadows — as scorers that are already loaded. The
:class:`RegistryWatch` replays the registry on start, then reads new events between batches
(:meth:`RegistryWatch.poll`, a non-blocking read); when what should serve changes it loads the new
versions in a background thread, ahead of the moment they take effect.

Which set scores a record is a function of the record, not of when it is processed: the set in
force (``ModelRecord.serving_at``) at the record's Kafka timestamp minus ``SWITCH_DELAY_MS``. A
batch replayed after a promotion (predict killed with the batch in hand) is scored by the same
versions as the first time, so a replay repeats prediction ids exactly and never adds a second
served one. Before choosing, :meth:`RegistryWatch.ensure_known` makes sure ``model.events`` has
been read up to the newest record's time (a local check of the last fetch's high watermark; it
blocks only when the follower is behind). Sets of earlier periods are loaded on demand from the
artifact store (sha256-checked as always) and a few are kept.

A challenger (canary or shadow) that fails to load is isolated: counted, logged, left out of the
plan and retired with a ``rejected`` event. A new champion that fails to load leaves the old
champion serving (it cannot be rejected while it is champion; an operator rolls back or promotes
another version).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..models import ArtifactStore, OnnxModel
from ..registry import (
    ModelEvent,
    ModelRecord,
    RegistryFollower,
    ServingPeriod,
    ServingSet,
    VersionRecord,
    load_version,
    now_ms,
)
from ..runtime import metrics
from ..runtime.errors import ModelLoadError
from ..runtime.settings import Settings
from .scorer import VersionScorer

__all__ = ["ModelServing", "RegistryWatch"]

log = logging.getLogger(__name__)

ACTOR = "predict"
_POLL_SECONDS = 0.05  # how often the registry is read between batches
_CONFIRM_SECONDS = 0.05  # how often the broker is asked where model.events ends
_CATCH_UP_SECONDS = 5.0  # then a batch is served by what is known, with a warning
_KEEP_SETS = 8  # serving sets (and loaded versions) kept for records of earlier periods


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
SetKey = tuple[str, tuple[object, ...]]
Period = tuple[int, int | None, "ModelServing | None"]
_OPEN_START = -(1 << 62)  # the first period also serves records older than the registry


class RegistryWatch:
    """Follows ``model.events`` and loads what serves each model, period by period.

    :attr:`plan` (model → :class:`ModelServing`) is the latest period's set of each model with a
    champion; :meth:`serving_at` the set for a record's time. Only models with a champion in the
    registry are served here; predict serves any other model from the artifact store as before.
    """

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self._follower = RegistryFollower(settings)
        self._follower.catch_up()
        # model.events is read up to this time (epoch ms); confirmed every _CONFIRM_SECONDS.
        self.known_ms = self._follower.read_up_to() or 0
        self._models: OrderedDict[tuple[str, str], OnnxModel] = OrderedDict()
        self._sets: OrderedDict[SetKey, ModelServing | None] = OrderedDict()
        self._failed: set[tuple[str, str]] = set()
        self._rejections: list[ModelEvent] = []
        self._lock = threading.Lock()  # the follower's state, the loader thread's bookkeeping
        self._loading = threading.RLock()  # the caches above; held while loading
        self._loader: threading.Thread | None = None
        self._dirty = False
        self._polled = time.monotonic()
        self.plan: Plan = {}
        self._build()  # synchronous on start: the first batch already has its versions
        self._closing = threading.Event()
        self._stalled = False  # the broker stopped confirming; batches do not wait for it
        self._confirmer = threading.Thread(target=self._confirm_loop, name="registry-confirm",
                                           daemon=True)
        self._confirmer.start()
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
            self._read(0)
        with self._lock:
            out, self._rejections = self._rejections, []
        return out

    def ensure_known(self, time_ms: int) -> None:
        """Return once ``model.events`` is read up to ``time_ms`` (a record's time to serve).

        Free when the background confirmation is recent enough; otherwise reads on and waits
        for the next one. A record stamped ahead of this machine's clock is served by what is
        known when it is scored; so is a batch when the broker does not confirm for
        ``_CATCH_UP_SECONDS`` (availability first: it is logged). Without any registered model
        (everything served from the store) there is nothing to wait for."""
        if time_ms <= self.known_ms or not self._follower.state.models:
            return
        if self._stalled:  # no confirmation since the last wait gave up: no wait per batch
            self._read(0)
            return
        deadline = time.monotonic() + _CATCH_UP_SECONDS
        timeout = 0.0
        while True:
            self._read(timeout)
            if time_ms <= self.known_ms or time_ms > now_ms():
                return
            if time.monotonic() > deadline:
                log.warning("%s: not confirmed read up to %d after %.0f s (at offset %d); this"
                            " batch is served by the registry as read so far",
                            self._follower.topic, time_ms, _CATCH_UP_SECONDS,
                            self._follower.state.offset)
                self._stalled = True
                return
            timeout = 0.02

    def serving_at(self, model: str, time_ms: int) -> Period:
        """The period in force at ``time_ms`` as ``(start, end, loaded set)``: the set is
        ``None`` when nothing of it loads; ``start`` is open for the first period and ``end`` for
        the latest. ``KeyError`` when the model never had a champion."""
        record = self._follower.state.model(model)
        found = record.serving_at(time_ms) if record else None
        if record is None or found is None:
            raise KeyError(model)
        return self._period(record.periods, found[0])

    def latest(self, model: str) -> Period | None:
        """The model's latest period (see :meth:`serving_at`), or ``None`` without a champion."""
        record = self._follower.state.model(model)
        if record is None or not record.periods:
            return None
        return self._period(record.periods, len(record.periods) - 1)

    def _period(self, periods: list[ServingPeriod], index: int) -> Period:
        start = periods[index].start if index else _OPEN_START
        end = periods[index + 1].start if index + 1 < len(periods) else None
        return start, end, self._set(periods, index)

    def isolate(self, model: str, version: str, role: str, error: BaseException) -> ModelEvent:
        """A challenger failed to score: never load it again here; the ``rejected`` event."""
        self._failed.add((model, version))
        with self._loading:
            for key, serving in self._sets.items():
                if key[0] == model and serving is not None:
                    self._sets[key] = serving.without(version)
            if model in self.plan:
                self.plan = {**self.plan, model: self.plan[model].without(version)}
        metrics.VERSION_FAILURES.labels(model, version, role, "score").inc()
        metrics.SERVING_VERSIONS.labels(model, version, role).set(0)
        log.error("%s v%s (%s) failed to score and is unloaded: %s", model, version, role, error)
        return self._rejection(model, version, f"failed to score as {role}: {error}")

    def close(self) -> None:
        self._closing.set()
        self._confirmer.join(10)
        with self._lock:
            loader = self._loader
        if loader is not None:
            loader.join(30)  # a load in flight still uses the store, not the consumer
        with self._lock:
            self._follower.close()

    # -- reading ---------------------------------------------------------------------------

    def _read(self, timeout: float) -> None:
        with self._lock:  # the loader snapshots the state under the same lock
            changed = bool(self._follower.poll(timeout))
        if changed:
            self._schedule()

    def _confirm_loop(self) -> None:
        while not self._closing.wait(_CONFIRM_SECONDS):
            try:
                read_up_to = self._follower.read_up_to()
            except Exception:  # never let the confirmations stop silently
                log.exception("registry: confirming model.events' end failed")
                continue
            if read_up_to is not None:
                self.known_ms = max(self.known_ms, read_up_to)
                self._stalled = False

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
        """Load the latest period of every model (ahead of its taking effect) into :attr:`plan`."""
        with self._lock:
            snapshot = [list(r.periods) for r in self._follower.state.models.values()
                        if r.periods]
        plan: Plan = {}
        for periods in snapshot:
            serving = self._set(periods, len(periods) - 1)
            if serving is not None:
                plan[periods[-1].serving.model] = serving
        for name, serving in plan.items():
            old = self.plan.get(name)
            if old is None or old.roles() != serving.roles() or old.fraction != serving.fraction:
                metrics.SERVING_SWAPS.labels(name).inc()
                log.info("registry: %s now serves %s", name, serving.describe())
                for version, role in (old.roles() if old else set()) - serving.roles():
                    metrics.SERVING_VERSIONS.labels(name, version, role).set(0)
                for version, role in serving.roles():
                    metrics.SERVING_VERSIONS.labels(name, version, role).set(1)
        self.plan = plan  # one reference assignment: readers see the old plan or this one

    def _set(self, periods: list[ServingPeriod], index: int) -> ModelServing | None:
        """The loaded set of ``periods[index]``, from the cache or loaded now."""
        wanted = periods[index].serving
        key: SetKey = (wanted.model, (periods[index].start, *wanted.key()))
        with self._loading:
            if key in self._sets:
                self._sets.move_to_end(key)
                return self._sets[key]
            serving = self._serving(wanted, periods, index)
            self._sets[key] = serving
            while len(self._sets) > _KEEP_SETS:
                self._sets.popitem(last=False)
            return serving

    def _serving(
        self, wanted: ServingSet, periods: list[ServingPeriod], index: int
    ) -> ModelServing | None:
        assert wanted.champion is not None
        champion_model = self._load(wanted.champion, "champion")
        if champion_model is None:
            # A champion that does not load leaves the one before it serving.
            before = self._set(periods, index - 1) if index > 0 else None
            if before is None:
                return None
            champion = before.champion
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
            self._models.move_to_end(key)
            return found
        try:
            loaded = load_version(self.store, record, threads=self.settings.ort_threads)
        except ModelLoadError as exc:
            self._failed.add(key)
            metrics.VERSION_FAILURES.labels(record.model, record.version, role, "load").inc()
            if role == "champion":
                log.error("%s v%s cannot serve as champion; the champion before it stays: %s",
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
        while len(self._models) > _KEEP_SETS:
            self._models.popitem(last=False)  # unloaded with the last set that uses it
        return loaded

    def _rejection(self, model: str, version: str, reason: str) -> ModelEvent:
        record: ModelRecord | None = self._follower.state.model(model)
        known = record.versions.get(version) if record else None
        return ModelEvent(
            model=model, version=version, transition="rejected", actor=ACTOR,
            reason=reason[:2000], artifact_uri=known.artifact_uri if known else None,
            sha256=known.sha256 if known else None,
        )
