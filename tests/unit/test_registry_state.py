"""The registry fold: roles, promotion, rollback, refusals and "who was champion when"."""

from __future__ import annotations

import pytest

from services.registry import ModelEvent, RegistryState, entity_bucket, serves_canary
from services.registry.exceptions import RegistryError

SHA = "ab" * 32


def ev(kind: str, version: str, t: int, fraction: float | None = None, **kw: object) -> ModelEvent:
    return ModelEvent(model="m", version=version, transition=kind, time=t, actor="test",
                      sha256=SHA, traffic_fraction=fraction, **kw)  # type: ignore[arg-type]


def fold(*events: ModelEvent) -> RegistryState:
    return RegistryState.fold(events)


def test_registered_versions_do_not_serve_until_promoted():
    state = fold(ev("registered", "1", 1), ev("registered", "2", 2))
    assert state.serving("m") is None
    state.apply(ev("champion", "1", 3))
    serving = state.serving("m")
    assert serving is not None and serving.champion is not None
    assert serving.champion.version == "1" and serving.canary is None and serving.shadows == ()


def test_promotion_archives_the_old_champion_and_rollback_restores_it():
    state = fold(
        ev("registered", "1", 1), ev("champion", "1", 2),
        ev("registered", "2", 3), ev("shadow", "2", 4), ev("champion", "2", 5),
    )
    m = state.models["m"]
    assert m.champion == "2" and m.shadows == []
    assert m.versions["1"].status == "archived"
    assert m.history[-1].archived == "1"
    entry = state.apply(ev("rolled_back", "2", 6, reason="accuracy fell"))
    assert entry.applied and entry.restored == "1"
    assert m.champion == "1"
    assert m.versions["2"].status == "rolled_back"
    assert m.versions["1"].status == "champion"
    # Who was champion when: v1 until 5, v2 from 5 to 6, v1 again from 6.
    assert [m.champion_at(t) for t in (0, 2, 4, 5, 6, 100)] == [None, "1", "1", "2", "1", "1"]
    assert [(p.version, p.ended_by) for p in m.champions] == [
        ("1", "champion"), ("2", "rolled_back"), ("1", None)]


def test_rollback_skips_earlier_champions_rejected_since():
    state = fold(
        ev("registered", "1", 1), ev("champion", "1", 2),
        ev("registered", "2", 3), ev("champion", "2", 4),
        ev("registered", "3", 5), ev("champion", "3", 6),
        ev("rejected", "2", 7, reason="found broken"),
        ev("rolled_back", "3", 8),
    )
    assert state.models["m"].champion == "1"
    # Nothing left to restore: a second rollback is refused and changes nothing.
    entry = state.apply(ev("rolled_back", "1", 9))
    assert not entry.applied and "no earlier champion" in (entry.note or "")
    assert state.models["m"].champion == "1"


def test_canary_and_shadows_are_roles_of_their_own():
    state = fold(
        ev("registered", "1", 1), ev("champion", "1", 2),
        ev("registered", "2", 3), ev("registered", "3", 4), ev("registered", "4", 5),
        ev("shadow", "2", 6), ev("shadow", "3", 7), ev("canary", "4", 8, 0.1),
    )
    s = state.serving("m")
    assert s is not None and s.canary is not None
    assert (s.canary.version, s.canary_fraction) == ("4", 0.1)
    assert [v.version for v in s.shadows] == ["2", "3"]
    # A shadow moved to canary leaves the shadows; re-weighting the canary keeps it.
    refused = state.apply(ev("canary", "2", 9, 0.5))
    assert not refused.applied and "already the canary" in (refused.note or "")
    state.apply(ev("canary", "4", 10, 0.25))
    state.apply(ev("archived", "3", 11))
    s = state.serving("m")
    assert s is not None and s.canary is not None
    assert s.canary_fraction == 0.25 and [v.version for v in s.shadows] == ["2"]
    before = s.key()
    state.apply(ev("champion", "4", 12))
    s = state.serving("m")
    assert s is not None and s.champion is not None
    assert s.champion.version == "4" and s.canary is None and s.key() != before


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (ev("champion", "9", 5), "not registered"),
        (ev("archived", "1", 5), "is the champion"),
        (ev("shadow", "1", 5), "is the champion"),
        (ev("rejected", "1", 5), "is the champion"),
        (ev("canary", "2", 5, 0.0), "fraction above 0"),
        (ev("registered", "2", 5), "already registered"),
        (ev("rolled_back", "2", 5), "not the champion"),
        (ev("champion", "1", 5), "already the champion"),
    ],
)
def test_refused_events_are_kept_in_the_history_and_change_nothing(event, why):
    state = fold(ev("registered", "1", 1), ev("champion", "1", 2), ev("registered", "2", 3))
    assert why in (state.check(event) or "")
    entry = state.apply(event)
    assert not entry.applied and why in (entry.note or "")
    m = state.models["m"]
    assert m.champion == "1" and m.canary is None and m.shadows == []
    assert m.history[-1] is entry


def test_a_rejected_version_never_serves_and_a_rejected_upload_has_no_version():
    state = fold(
        ev("registered", "1", 1), ev("champion", "1", 2),
        ev("rejected", "", 3, reason="pickle"),
        ev("registered", "2", 4), ev("shadow", "2", 5), ev("rejected", "2", 6),
    )
    m = state.models["m"]
    assert m.shadows == [] and m.versions["2"].status == "rejected"
    assert "" not in m.versions and m.history[2].applied
    assert not state.apply(ev("champion", "2", 7)).applied


def test_the_avro_record_round_trips(demo_store):
    card = demo_store.card("agrawal", "1")
    e = ModelEvent(model="agrawal", version="1", transition="registered", time=5, actor="a",
                   card=card, sha256=card.artifact.sha256, metrics=dict(card.metrics),
                   lineage={"training_window": {"start": 1, "end": 2}, "trigger": "manual",
                            "job_id": "j-1"})
    from services.runtime.serde import EventDecoder, EventEncoder

    for fmt in ("json", "avro"):
        data = EventEncoder("model.events", fmt).encode(e.to_record())  # type: ignore[arg-type]
        back = ModelEvent.from_record(EventDecoder("model.events", max_bytes=1 << 24).decode(data))
        assert back == e
    with pytest.raises(RegistryError):
        ModelEvent.from_record({"model": "m", "version": "1", "transition": "promoted",
                                "time": 1, "actor": "a"})


def test_canary_buckets_are_stable_and_uniform():
    ids = [f"c-{i}" for i in range(20000)]
    share = sum(serves_canary(i, 0.2) for i in ids) / len(ids)
    assert 0.19 < share < 0.21
    assert entity_bucket("c-42") == entity_bucket("c-42")
    # Raising the fraction only adds entities.
    assert {i for i in ids if serves_canary(i, 0.1)} <= {i for i in ids if serves_canary(i, 0.3)}


def test_serving_periods_answer_what_served_at_a_time_in_order_whatever_the_clocks():
    state = fold(
        ev("registered", "1", 1), ev("registered", "2", 2), ev("champion", "1", 10),
        ev("shadow", "2", 20), ev("canary", "2", 30, fraction=0.2), ev("champion", "2", 40),
        ev("rolled_back", "2", 35),  # a writer with a slow clock: still after the promotion
    )
    m = state.models["m"]
    assert [p.start for p in m.periods] == [10, 20, 30, 40, 40]

    def at(t: int) -> tuple[int, object, object, tuple[str, ...]]:
        found = m.serving_at(t)
        assert found is not None
        s = found[1]
        return (found[0], s.champion and s.champion.version, s.canary and s.canary.version,
                tuple(v.version for v in s.shadows))

    assert at(0) == (0, "1", None, ())  # older than the registry: its first champion
    assert at(25) == (1, "1", None, ("2",))
    assert at(39) == (2, "1", "2", ())
    assert at(40) == (4, "1", None, ())  # the same instant: the later record wins
    assert fold(ev("registered", "1", 1)).models["m"].serving_at(5) is None
