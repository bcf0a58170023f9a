"""Which entities a canary serves: a deterministic share, by a hash of ``entity_id``.

The same entity always lands in the same bucket — in every replica, process and language (the
hash is BLAKE2b, not Python's salted ``hash``) — so an entity sees one version consistently, and
raising the fraction only adds entities to the canary, never swaps them.
"""

from __future__ import annotations

import hashlib

__all__ = ["entity_bucket", "serves_canary"]

_SCALE = float(1 << 64)


def entity_bucket(entity_id: str) -> float:
    """A number in [0, 1): the first 8 bytes of BLAKE2b(entity_id, 8 bytes), big-endian, / 2**64."""
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def serves_canary(entity_id: str, fraction: float) -> bool:
    """True when the canary (with ``fraction`` of the entities) serves ``entity_id``."""
    return entity_bucket(entity_id) < fraction
