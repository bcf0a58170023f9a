"""``RegistryState``: the registry as the fold of ``model.events``.

Replaying the topic from its first record through :meth:`RegistryState.apply` gives, per model,
the champion, the canary and its traffic fraction, the shadows, every version's status, and the
history ("who was champion when"). The fold is deterministic and total: a record the state does
not allow (promoting a rejected version, a second canary, ...) is kept in the history marked
*not applied*, with why, and changes nothing — so every replica of every service that replays the
same topic agrees on the same state, whatever a buggy or racing writer appended.

Rules, per model:

- ``registered`` adds a version (status ``registered``); its card, sha256 and artifact URI are
  remembered. A version number is registered once.
- ``rejected`` with an empty version records a refused upload; with a version, retires it for
  good (it can never serve again). The champion cannot be rejected.
- ``shadow`` adds the version to the shadows; ``canary`` makes it the canary with
  ``traffic_fraction`` of the entities (one canary per model; a new fraction for the same canary
  is a re-weighting). Neither applies to the champion.
- ``champion`` promotes the version (from any role, or from ``registered``/``archived``); the old
  champion is archived and remembered, so that a rollback can restore it.
- ``archived`` takes a challenger out of service; the champion cannot be archived (promote another
  version or roll back instead).
- ``rolled_back`` (on the champion) demotes it and restores the most recent earlier champion that
  was not rejected since.

Serving periods: every applied transition that changes what serves a model (once it has a
champion) starts a :class:`ServingPeriod` at the event's time (never before the previous
period's start, so the periods stay in order whatever clocks the writers had).
:meth:`ModelRecord.serving_at` answers "what served at t", which predict uses to pick the
versions for a record by its timestamp, not by when it is processed (see ``SWITCH_DELAY_MS``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..models.card import ModelCard
from .events import Lineage, ModelEvent

__all__ = [
    "ChampionPeriod",
    "HistoryEntry",
    "ModelRecord",
    "SWITCH_DELAY_MS",
    "RegistryState",
    "ServingPeriod",
    "ServingSet",
    "VersionRecord",
]

# A transition serves records stamped at least this long after its time: predict scores a record
# with the versions in force at (record timestamp - SWITCH_DELAY_MS), and the delay lets the
# transition reach every predict replica before any record it governs is scored.
SWITCH_DELAY_MS = 250


@dataclass
class VersionRecord:
    """One version as the registry knows it. ``status`` is its latest applied transition."""

    model: str
    version: str
    status: str
    registered_at: int
    updated_at: int
    artifact_uri: str | None = None
    sha256: str | None = None
    card: ModelCard | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    traffic_fraction: float | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """A record of the model's history; ``applied`` False means the fold refused it (``note``).

    ``archived`` is the champion a promotion replaced; ``restored`` the champion a rollback
    brought back.
    """

    event: ModelEvent
    applied: bool
    note: str | None = None
    archived: str | None = None
    restored: str | None = None


@dataclass
class ChampionPeriod:
    """``version`` served as champion from ``start`` until ``end`` (``None``: still does)."""

    version: str
    start: int
    end: int | None = None
    ended_by: str | None = None  # "champion" (promotion of another) or "rolled_back"


@dataclass(frozen=True)
class ServingSet:
    """What should serve one model now: what predict loads."""

    model: str
    champion: VersionRecord | None
    canary: VersionRecord | None
    canary_fraction: float
    shadows: tuple[VersionRecord, ...]

    def key(self) -> tuple[object, ...]:
        """Equal keys mean the same versions in the same roles (and the same canary share)."""
        return (
            self.champion.version if self.champion else None,
            self.canary.version if self.canary else None,
            self.canary_fraction if self.canary else 0.0,
            tuple(s.version for s in self.shadows),
        )


@dataclass(frozen=True)
class ServingPeriod:
    """``serving`` was in force from ``start`` (epoch ms) until the next period's start."""

    start: int
    serving: ServingSet


@dataclass
class ModelRecord:
    """The fold of one model's events."""

    name: str
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    champion: str | None = None
    canary: str | None = None
    canary_fraction: float = 0.0
    shadows: list[str] = field(default_factory=list)
    previous_champions: list[str] = field(default_factory=list)
    champions: list[ChampionPeriod] = field(default_factory=list)
    periods: list[ServingPeriod] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)

    # -- queries -------------------------------------------------------------------------------

    def champion_at(self, time_ms: int) -> str | None:
        """The version that was champion at ``time_ms`` (epoch ms), if any."""
        for period in reversed(self.champions):
            if period.start <= time_ms and (period.end is None or time_ms < period.end):
                return period.version
        return None

    def serving_at(self, time_ms: int) -> tuple[int, ServingSet] | None:
        """The index and serving set of the period in force at ``time_ms``; before the first
        champion, the first period (records older than the registry are served by its first
        champion). ``None`` when the model never had a champion."""
        if not self.periods:
            return None
        i = max(bisect_right(self.periods, time_ms, key=_start) - 1, 0)
        return i, self.periods[i].serving

    def serving(self) -> ServingSet:
        v = self.versions
        return ServingSet(
            model=self.name,
            champion=v[self.champion] if self.champion else None,
            canary=v[self.canary] if self.canary else None,
            canary_fraction=self.canary_fraction if self.canary else 0.0,
            shadows=tuple(v[s] for s in self.shadows),
        )

    def role_of(self, version: str) -> str | None:
        if version == self.champion:
            return "champion"
        if version == self.canary:
            return "canary"
        if version in self.shadows:
            return "shadow"
        return None

    def latest_version(self) -> str | None:
        return max(self.versions, key=int) if self.versions else None

    # -- the fold ------------------------------------------------------------------------------

    def refusal(self, e: ModelEvent) -> str | None:
        """Why ``e`` cannot apply to the current state, or ``None`` if it can."""
        kind, version = e.transition, e.version
        if kind == "rejected" and not version:
            return None
        if not version:
            return f"a {kind} event needs a version"
        known = self.versions.get(version)
        if kind == "registered":
            return f"v{version} is already registered" if known else None
        if known is None:
            return f"v{version} is not registered"
        if known.status == "rejected":
            return f"v{version} was rejected and can never serve"
        is_champion = version == self.champion
        if kind == "rejected" or kind == "archived" or kind == "shadow":
            return f"v{version} is the champion: promote another version or roll back" \
                if is_champion else None
        if kind == "canary":
            if is_champion:
                return f"v{version} is the champion"
            if not e.traffic_fraction or e.traffic_fraction <= 0.0:
                return "a canary needs a traffic fraction above 0"
            if self.canary and self.canary != version:
                return f"v{self.canary} is already the canary: promote or archive it first"
            return None
        if kind == "champion":
            return f"v{version} is already the champion" if is_champion else None
        if kind == "rolled_back":
            if not is_champion:
                return f"v{version} is not the champion (v{self.champion} is)"
            if self._restorable() is None:
                return f"no earlier champion to restore before v{version}"
            return None
        return f"unknown transition {kind!r}"

    def apply(self, e: ModelEvent) -> HistoryEntry:
        why = self.refusal(e)
        if why is not None:
            entry = HistoryEntry(e, applied=False, note=why)
            self.history.append(entry)
            return entry
        kind, version = e.transition, e.version
        archived = restored = None
        if kind == "registered":
            self.versions[version] = VersionRecord(
                model=self.name, version=version, status="registered", registered_at=e.time,
                updated_at=e.time, artifact_uri=e.artifact_uri, sha256=e.sha256, card=e.card,
                metrics=dict(e.metrics), lineage=e.lineage,
            )
        elif kind == "rejected" and not version:
            pass
        elif kind == "rolled_back":
            restored = self._restorable()
            assert restored is not None  # refusal() checked it
            while self.previous_champions and self.previous_champions[-1] != restored:
                self.previous_champions.pop()  # rejected since: skipped for good
            self.previous_champions.pop()
            self._leave_roles(version)
            self._set_status(version, "rolled_back", e)
            self._crown(restored, e, ended_by="rolled_back")
        elif kind == "champion":
            archived = self.champion
            if archived is not None:
                self.previous_champions.append(archived)
                self._set_status(archived, "archived", e)
            self._crown(version, e, ended_by="champion")
        else:
            self._leave_roles(version)
            if kind == "shadow":
                self.shadows.append(version)
            elif kind == "canary":
                self.canary, self.canary_fraction = version, float(e.traffic_fraction or 0.0)
            self._set_status(version, kind, e)
        if e.metrics and kind != "registered" and version in self.versions:
            self.versions[version].metrics.update(e.metrics)
        self._new_period(e.time)
        entry = HistoryEntry(e, applied=True, archived=archived, restored=restored)
        self.history.append(entry)
        return entry

    def _new_period(self, time_ms: int) -> None:
        if self.champion is None:
            return
        now = self.serving()
        last = self.periods[-1] if self.periods else None
        if last is None or last.serving.key() != now.key():
            self.periods.append(ServingPeriod(max(time_ms, last.start if last else time_ms), now))

    def _restorable(self) -> str | None:
        for candidate in reversed(self.previous_champions):
            if self.versions[candidate].status != "rejected":
                return candidate
        return None

    def _crown(self, version: str, e: ModelEvent, *, ended_by: str) -> None:
        if self.champions and self.champions[-1].end is None:
            self.champions[-1].end = e.time
            self.champions[-1].ended_by = ended_by
        self._leave_roles(version)
        self.champion = version
        self.champions.append(ChampionPeriod(version, e.time))
        self._set_status(version, "champion", e)

    def _leave_roles(self, version: str) -> None:
        if self.canary == version:
            self.canary, self.canary_fraction = None, 0.0
        if version in self.shadows:
            self.shadows.remove(version)
        if self.champion == version:
            self.champion = None

    def _set_status(self, version: str, status: str, e: ModelEvent) -> None:
        record = self.versions[version]
        record.status = status
        record.updated_at = e.time
        record.traffic_fraction = e.traffic_fraction if status == "canary" else None


def _start(period: ServingPeriod) -> int:
    return period.start


@dataclass
class RegistryState:
    """Every model's record, folded from ``model.events``; ``offset`` is the next to read."""

    models: dict[str, ModelRecord] = field(default_factory=dict)
    offset: int = 0

    @classmethod
    def fold(cls, events: Iterable[ModelEvent]) -> RegistryState:
        state = cls()
        for e in events:
            state.apply(e)
        return state

    def apply(self, e: ModelEvent) -> HistoryEntry:
        record = self.models.get(e.model)
        if record is None:
            record = self.models[e.model] = ModelRecord(e.model)
        return record.apply(e)

    def model(self, name: str) -> ModelRecord | None:
        return self.models.get(name)

    def serving(self, name: str) -> ServingSet | None:
        """What serves ``name``, or ``None`` when the registry has no champion for it."""
        record = self.models.get(name)
        if record is None or record.champion is None:
            return None
        return record.serving()

    def check(self, e: ModelEvent) -> str | None:
        """Why ``e`` would not apply now (``None``: it would). Does not change the state."""
        record = self.models.get(e.model) or ModelRecord(e.model)
        return record.refusal(e)
