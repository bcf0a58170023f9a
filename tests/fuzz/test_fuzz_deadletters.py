"""Dead letters of hostile records: whatever the bytes, the DLQ record encodes (JSON and Avro)
and decodes back to the original payload — except an oversize one, which keeps only its head,
so that a flood of them cannot cost the DLQ many times the valid traffic."""

from __future__ import annotations

from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.deadletter import TOO_LARGE_KEPT, DeadLetters
from services.runtime.serde import DECODE_REASONS, TOO_LARGE, EventDecoder
from services.runtime.settings import Settings
from tests.fuzz.hostile import FUZZ, hostile_payloads

DLQ = EventDecoder("features.dlq", max_bytes=1 << 24)
LETTERS = {fmt: DeadLetters(Settings(output_format=fmt), "ingest", "features.dlq")
           for fmt in ("json", "avro")}


@FUZZ
@given(payload=st.one_of(hostile_payloads(), st.binary(min_size=70_000, max_size=70_100)),
       reason=st.sampled_from(DECODE_REASONS), fmt=st.sampled_from(["json", "avro"]))
def test_a_dead_letter_keeps_the_payload_and_its_provenance(
    payload: bytes, reason: str, fmt: str
) -> None:
    letters = LETTERS[fmt]
    msg = Message(topic="features", partition=3, offset=41, key=b"k", value=payload)
    out = letters.output(msg, reason, "detail \ud800 with a lone surrogate", 1_763_900_000_000)
    record = DLQ.decode(out.value)
    assert (record["partition"], record["offset"], record["reason"]) == (3, 41, reason)
    assert record["detail"] == "detail \\ud800 with a lone surrogate"  # found by this test
    assert record["payload_size"] == len(payload)
    if reason == TOO_LARGE and len(payload) > TOO_LARGE_KEPT:
        assert record["payload"] == payload[:TOO_LARGE_KEPT] and record["payload_truncated"]
        assert len(out.value) < 2 * TOO_LARGE_KEPT + 3000
    else:
        assert record["payload"] == payload and not record["payload_truncated"]
