"""Coverage-guided fuzzing with atheris (``make fuzz``): random bytes, mutated by libFuzzer
towards new code paths, through the decoders and validators of every input topic, the way the
services chain them. Any exception other than a :class:`DecodeError` with a documented reason
is a crash, and libFuzzer stops and saves the input.

    python -m tests.fuzz.atheris_run [-runs=N] [-max_total_time=S] [corpus dirs…]

(Arguments are libFuzzer's. The hypothesis tests under tests/fuzz run in ``make test``;
``make fuzz`` runs them again with many more examples, then this.)
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

SEEDS = [
    b'{"event_id":"e-1","entity_id":"c-1","event_time":1763900000000,"model":"agrawal",'
    b'"features":{"salary":52000.0,"commission":0,"age":41,"elevel":2,"car":3,"zipcode":1,'
    b'"hvalue":150000.0,"hyears":12,"loan":20000.0}}',
    b'{"event_id":"e-1","label":"1","outcome_time":1763900060000}',
    b"\x00\x00\x00\x00\x01\x06e-1",
    b"\x06e-1\x06c-1\x80\x80\x80\x80\x80\x80\x01",
]


def _targets() -> list[tuple[Any, Any]]:
    from services.ingest.validate import FeatureValidator, validate_envelope
    from services.join.service import validate_outcome
    from services.models import AGRAWAL_FEATURES
    from services.runtime.records import check_labeled, check_prediction
    from services.runtime.serde import EventDecoder

    validator = FeatureValidator("agrawal", AGRAWAL_FEATURES)
    decoders = {t: EventDecoder(t, max_bytes=65536) for t in (
        "features", "outcomes", "predictions", "predictions.labeled")}

    def features(event: dict) -> None:  # type: ignore[type-arg]
        *_, raw = validate_envelope(event, default_model="agrawal", fallback_time_ms=1)
        validator.features(raw)

    def outcome(event: dict) -> None:  # type: ignore[type-arg]
        orjson.dumps(validate_outcome(event, 1_763_900_000_000))

    return [(decoders["features"], features), (decoders["outcomes"], outcome),
            (decoders["predictions"], check_prediction),
            (decoders["predictions.labeled"], check_labeled)]


TARGETS: list[tuple[Any, Any]] = []


def one_input(data: bytes) -> None:
    from services.runtime.errors import DecodeError

    for decoder, check in TARGETS:
        try:
            check(decoder.decode(data))
        except DecodeError as exc:
            if not (isinstance(exc.reason, str) and isinstance(exc.detail, str)):
                raise


def main() -> None:
    import atheris

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        import tempfile
        from pathlib import Path

        corpus = Path(tempfile.mkdtemp(prefix="modelstream-fuzz-"))
        for i, seed in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(seed)
        argv.append(str(corpus))
    # Only modelstream's own code is instrumented: all of it would take minutes.
    with atheris.instrument_imports(include=["services"]):
        TARGETS.extend(_targets())
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
