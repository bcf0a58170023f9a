"""Input times: epoch milliseconds, or ISO-8601 with a UTC offset, within 2001–2286."""

from __future__ import annotations

import pytest

from services.join.service import validate_outcome
from services.runtime.errors import ValidationError
from services.runtime.times import MAX_TIME_MS, MIN_TIME_MS, epoch_ms


@pytest.mark.parametrize(("value", "ms"), [
    (1_796_119_200_000, 1_796_119_200_000),
    ("2026-12-01T10:00:00Z", 1_796_119_200_000),
    ("2026-12-01T10:00:00+00:00", 1_796_119_200_000),
    ("2026-12-01T05:00:00-05:00", 1_796_119_200_000),
    ("2026-12-01T10:00:00.999999Z", 1_796_119_200_999),  # below a millisecond: dropped
    (MIN_TIME_MS, MIN_TIME_MS),
    (MAX_TIME_MS, MAX_TIME_MS),
])
def test_times_read_as_epoch_milliseconds(value, ms):
    assert epoch_ms(value) == ms


@pytest.mark.parametrize("value", [
    1_796_119_200,  # seconds, sent by mistake
    1_796_119_200_000_000,  # microseconds
    MIN_TIME_MS - 1, MAX_TIME_MS + 1,
    True, 1.7e12, None, [], {},
    "2026-12-01T10:00:00",  # no offset: the zone is unknown
    "2026-12-01",
    "1796119200000",  # digits in a string are not ISO-8601
    "today", "", "2026-12-01T10:00:00Z" + " " * 60,
    "1969-12-31T23:59:59Z",  # before 2001
])
def test_what_is_not_a_time(value):
    assert epoch_ms(value) is None


def test_an_outcome_time_may_be_iso_8601_and_is_kept_in_milliseconds():
    out = validate_outcome({"event_id": "e", "label": "1",
                            "outcome_time": "2026-12-01T11:00:00.250+01:00"}, 0)
    assert out["outcome_time"] == 1_796_119_200_250
    with pytest.raises(ValidationError) as exc:
        validate_outcome({"event_id": "e", "label": "1", "outcome_time": "2026-12-01"}, 0)
    assert exc.value.reason == "bad_outcome_time"
    assert "ISO-8601" in exc.value.detail
