"""The times producers give on the input topics: epoch milliseconds, or ISO-8601 text.

``event_time`` on ``features`` and ``outcome_time`` on ``outcomes`` are epoch milliseconds in
the contracts, and every service writes them so. A producer may also send an ISO-8601 time
with a UTC offset (``"2026-12-01T10:00:00Z"``, ``"2026-12-01T11:00:00.250+01:00"``), as most
tools print one; it is read as the same instant in milliseconds. Text with no offset is
rejected: the service cannot know which zone it meant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["MAX_TIME_MS", "MIN_TIME_MS", "epoch_ms"]

# Between 2001 and 2286: catches seconds or microseconds sent by mistake, and stays far inside
# Avro's long.
MIN_TIME_MS, MAX_TIME_MS = 1_000_000_000_000, 10_000_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_TEXT = 64


def epoch_ms(value: Any) -> int | None:
    """``value`` as epoch milliseconds within the bounds, or None when it is not a time: an int
    as it is, a string when it is ISO-8601 with a UTC offset (sub-millisecond digits dropped)."""
    t = type(value)
    if t is int:
        return value if MIN_TIME_MS <= value <= MAX_TIME_MS else None
    if t is not str or len(value) > _MAX_TEXT:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return None
    ms = (when - _EPOCH) // _MS
    return ms if MIN_TIME_MS <= ms <= MAX_TIME_MS else None
