"""Reconciliation from the topics themselves: what was sent against what every topic holds.

* every record on ``features`` is valid (its event id on ``features.valid``) or dead-lettered
  by ingest (its partition/offset on ``features.dlq``) — exact counts, no record both or
  neither, and each rejected one with the reason its defect calls for;
* every valid event has exactly one distinct served champion prediction id; copies of a record
  (on ``features.valid``, ``predictions``, ``predictions.labeled``) are exact replays —
  identical but for the time they were made;
* every outcome is joined (each prediction of its event labeled), rejected (on
  ``outcomes.dlq`` with its reason) or unmatched (no such event); no prediction id has two
  different labeled records;
* the monitor's counts (its latest ``monitor.metrics`` snapshot) equal the distinct
  predictions and labeled predictions on the topics.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.cli.inspect import GROUPS
from services.runtime.serde import EventDecoder
from services.runtime.settings import Settings

from .load import Sent

__all__ = ["Report", "read_topic", "reconcile", "reconcile_counts"]

RAW = {"features", "outcomes"}
# Fields that legitimately differ between a record and its replay: when it was (re)made.
REMADE = {"features.valid": {"ingested_at"},
          "predictions": {"predicted_at", "latency_ms"},
          "predictions.labeled": {"predicted_at", "latency_ms", "labeled_at",
                                  "label_delay_ms"}}


@dataclass
class Record:
    partition: int
    offset: int
    value: dict[str, Any]


def read_topic(settings: Settings, base: str, idle: float = 1.0,
               timeout: float = 120.0) -> list[Record]:
    """Every record of a topic from the beginning, read until nothing new comes for ``idle``
    seconds (the embedded broker's end offsets cannot be trusted to stop at)."""
    topic = settings.topics.name(base)
    c = Consumer(settings.kafka_config(**{"group.id": "chaos-reconcile",
                                          "enable.auto.commit": False,
                                          "fetch.wait.max.ms": 50}))
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        # The inputs hold deliberately broken records: those are counted, not decoded.
        decode = (lambda v: {"bytes": v}) if base in RAW else EventDecoder(
            base, max_bytes=1 << 24).decode
        out: list[Record] = []
        last = time.monotonic()
        deadline = last + timeout
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            msgs = c.consume(5000, 0.2)
            for m in msgs:
                if m.error():
                    continue
                out.append(Record(m.partition() or 0, m.offset() or 0, decode(m.value())))
            if msgs:
                last = time.monotonic()
        return out
    finally:
        c.close()


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def fact(self, text: str) -> None:
        self.lines.append(text)

    def check(self, ok: bool, text: str) -> None:
        self.lines.append(("ok    " if ok else "WRONG ") + text)
        if not ok:
            self.problems.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


def _replays(records: list[Record], key: str, ignore: set[str]) -> tuple[dict[str, dict], int,
                                                                            list[str]]:
    """Distinct records by ``key``; how many copies; the keys whose copies differ."""
    first: dict[str, dict] = {}
    copies = 0
    differ: list[str] = []
    for r in records:
        k = r.value[key]
        seen = first.get(k)
        if seen is None:
            first[k] = r.value
            continue
        copies += 1
        if {a: b for a, b in seen.items() if a not in ignore} != {
                a: b for a, b in r.value.items() if a not in ignore}:
            differ.append(k)
    return first, copies, differ


class GroupLag:
    """Each service's consumer-group lag: high watermarks minus committed offsets.

    One consumer per group, never subscribed (so never a member), asks for its group's
    committed offsets. Not the AdminClient: librdkafka aborts the process when an admin
    offsets request times out (confluentinc/librdkafka#4605), which a loaded broker causes."""

    def __init__(self, settings: Settings, services: Iterable[str] = GROUPS) -> None:
        self._consumers = {service: Consumer(settings.kafka_config(**{
            "group.id": f"{settings.topic_prefix}modelstream-{service}",
            "enable.auto.commit": False})) for service in services}
        md = next(iter(self._consumers.values())).list_topics(timeout=10)
        self._partitions = {
            service: [TopicPartition(settings.topics.name(b), p) for b in GROUPS[service]
                      for p in md.topics[settings.topics.name(b)].partitions]
            for service in self._consumers}

    def positions(self, service: str,
                  timeout: float = 5.0) -> list[tuple[TopicPartition, int, int]]:
        """Per partition of the group's topics: (partition, committed offset (0 if none),
        high watermark)."""
        c = self._consumers[service]
        return [(tp, max(tp.offset, 0),
                 c.get_watermark_offsets(tp, timeout=timeout, cached=False)[1])
                for tp in c.committed(self._partitions[service], timeout=timeout)]

    def sample(self, timeout: float = 5.0) -> dict[str, int] | None:
        """Records behind, per service (None when the broker did not answer in time)."""
        try:
            return {service: sum(max(high - at, 0)
                                 for _, at, high in self.positions(service, timeout))
                    for service in self._consumers}
        except KafkaException:
            return None

    def close(self) -> None:
        for c in self._consumers.values():
            c.close()


def reconcile(settings: Settings, sent: Sent) -> Report:
    rep = Report()
    topics = {b: read_topic(settings, b) for b in (
        "features", "features.valid", "features.dlq", "predictions", "outcomes",
        "outcomes.dlq", "predictions.labeled", "monitor.metrics")}
    features, valid_recs = topics["features"], topics["features.valid"]

    # features → features.valid + features.dlq
    ingest_dlq = [r for r in topics["features.dlq"] if r.value["service"] == "ingest"]
    rejected = {(r.value["partition"], r.value["offset"]): r.value for r in ingest_dlq}
    valid, valid_copies, valid_differ = _replays(valid_recs, "event_id", REMADE["features.valid"])
    rep.counts.update(features_in=len(features), valid=len(valid), rejected=len(rejected))
    rep.check(len(features) == sent.features,
              f"features: {len(features):,} records on the topic, {sent.features:,} sent")
    rep.check(len(features) == len(valid) + len(rejected),
              f"features in {len(features):,} = valid {len(valid):,} + rejected "
              f"{len(rejected):,}")
    rep.check(set(valid) == sent.valid, f"valid event ids are exactly the {len(sent.valid):,} "
              f"good ones sent (missing {len(sent.valid - set(valid))}, unexpected "
              f"{len(set(valid) - sent.valid)})")
    reasons: Counter[str] = Counter(dead["reason"] for dead in rejected.values())
    expected_reasons = Counter(sent.bad.values())
    rep.check(reasons == expected_reasons,
              f"dead letters by reason {dict(sorted(reasons.items()))} match the defects sent")
    rep.fact(f"features.valid copies (exact replays): {valid_copies:,}")
    rep.check(not valid_differ, f"features.valid copies that differ: {len(valid_differ)}")

    # predictions: one distinct served champion prediction id per valid event
    served = [r for r in topics["predictions"]
              if r.value["role"] == "champion" and r.value["served"]]
    preds, pred_copies, pred_differ = _replays(served, "prediction_id", REMADE["predictions"])
    per_event: dict[str, set[str]] = defaultdict(set)
    for pid, p in preds.items():
        per_event[p["event_id"]].add(pid)
    multi = [e for e, ids in per_event.items() if len(ids) > 1]
    rep.counts.update(predictions=len(preds), prediction_copies=pred_copies)
    rep.check(set(per_event) == set(valid) and not multi,
              f"every valid event has exactly one served champion prediction id "
              f"({len(per_event):,} events; without one: {len(set(valid) - set(per_event))}; "
              f"with several: {len(multi)}; predicted but not valid: "
              f"{len(set(per_event) - set(valid))})")
    across = [e for e in multi if len({preds[pid]["model_version"] for pid in per_event[e]}) > 1]
    if multi:
        rep.fact(f"events with several served ids scored by different versions (a replay "
                 f"across a champion change): {len(across)} of {len(multi)}")
    rep.fact(f"prediction copies (exact replays): {pred_copies:,}")
    rep.check(not pred_differ, f"prediction copies that differ: {len(pred_differ)}")

    # outcomes → joined, rejected or unmatched
    all_preds, _, _ = _replays(topics["predictions"], "prediction_id", REMADE["predictions"])
    event_preds: dict[str, set[str]] = defaultdict(set)
    for pid, p in all_preds.items():
        event_preds[p["event_id"]].add(pid)
    labeled, labeled_copies, labeled_differ = _replays(
        topics["predictions.labeled"], "prediction_id", REMADE["predictions.labeled"])
    join_dlq = {(r.value["partition"], r.value["offset"]): r.value["reason"]
                for r in topics["outcomes.dlq"] if r.value["service"] == "join"}
    rep.counts.update(outcomes=len(topics["outcomes"]), labeled=len(labeled),
                      outcomes_rejected=len(join_dlq))
    rep.check(len(topics["outcomes"]) == sent.outcome_records,
              f"outcomes: {len(topics['outcomes']):,} on the topic, {sent.outcome_records:,} sent")
    labeled_ids = set(labeled)
    unjoined = [e for e in sent.outcomes
                if e in event_preds and not event_preds[e] <= labeled_ids]
    joined = sum(1 for e in sent.outcomes if e in event_preds and event_preds[e] <= labeled_ids)
    unmatched = sum(1 for e in [*sent.outcomes, *sent.ghost_outcomes] if e not in event_preds)
    rep.check(not unjoined and joined + unmatched + len(join_dlq) == sent.outcome_records,
              f"outcomes {sent.outcome_records:,} = joined {joined:,} + rejected "
              f"{len(join_dlq):,} + unmatched {unmatched:,} (outcomes whose predictions were "
              f"not all labeled: {len(unjoined)})")
    rep.check(Counter(join_dlq.values()) == Counter(sent.malformed_outcomes.values()),
              f"rejected outcomes by reason {dict(Counter(join_dlq.values()))} match those "
              "sent malformed")
    wrong_label = [pid for pid, r in labeled.items()
                   if r["outcome_label"] != sent.outcomes.get(r["event_id"])]
    rep.check(not wrong_label, f"labeled records carrying another event's outcome: "
                               f"{len(wrong_label)}")
    rep.fact(f"labeled copies (exact replays): {labeled_copies:,}")
    rep.check(not labeled_differ,
              f"prediction ids with two different labeled records: {len(labeled_differ)}")

    # monitor: its counts equal the distinct records
    snaps = [r.value for r in topics["monitor.metrics"]]
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in sorted(snaps, key=lambda s: s["emitted_at"]):
        last[(s["model"], s["model_version"], s["role"])] = s
    want_p: Counter[tuple[str, str, str]] = Counter(
        (p["model"], p["model_version"], p["role"]) for p in all_preds.values())
    want_l: Counter[tuple[str, str, str]] = Counter(
        (p["model"], p["model_version"], p["role"]) for p in labeled.values())
    for key in sorted(set(want_p) | set(last)):
        s = last.get(key, {})
        rep.check(s.get("predictions") == want_p[key] and s.get("labeled") == want_l[key],
                  f"monitor {'/'.join(key)}: predictions {s.get('predictions')} (topic: "
                  f"{want_p[key]:,}), labeled {s.get('labeled')} (topic: {want_l[key]:,})")
    return rep


def reconcile_counts(settings: Settings, sent: Sent) -> Report:
    """The reconciliation of a run too long to hold every topic in memory: the dead-letter
    topics in full, the rest through the monitor's exact counts."""
    rep = Report()
    dlq = read_topic(settings, "features.dlq")
    rejected = {(r.value["partition"], r.value["offset"]): r.value["reason"] for r in dlq
                if r.value["service"] == "ingest"}
    rep.check(len(rejected) == len(sent.bad) and
              Counter(rejected.values()) == Counter(sent.bad.values()),
              f"features rejected {len(rejected):,} (sent malformed: {len(sent.bad):,}), "
              "reasons matching")
    join_dlq = {(r.value["partition"], r.value["offset"]): r.value["reason"]
                for r in read_topic(settings, "outcomes.dlq") if r.value["service"] == "join"}
    rep.check(Counter(join_dlq.values()) == Counter(sent.malformed_outcomes.values()),
              f"outcomes rejected {len(join_dlq):,} (sent malformed: "
              f"{len(sent.malformed_outcomes):,})")
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in sorted(read_topic(settings, "monitor.metrics"), key=lambda r: r.value["emitted_at"]):
        s = r.value
        last[(s["model"], s["model_version"], s["role"])] = s
    predictions = sum(s["predictions"] for s in last.values())
    labeled = sum(s["labeled"] for s in last.values())
    rep.check(predictions == len(sent.valid),
              f"monitor predictions {predictions:,} = valid events sent {len(sent.valid):,}")
    rep.check(labeled == len(sent.outcomes),
              f"monitor labeled {labeled:,} = good outcomes sent {len(sent.outcomes):,}")
    return rep
