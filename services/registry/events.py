"""``ModelEvent``: one transition of a model version, the unit of the registry.

The Avro contract is ``schemas/model.events.avsc``; :meth:`ModelEvent.to_record` and
:meth:`ModelEvent.from_record` convert between this model and that record (the card and the
lineage travel as JSON text there, so that any language can read them without our types).
"""

from __future__ import annotations

import time
from typing import Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ..models.card import MODEL_NAME_PATTERN, ModelCard
from .exceptions import RegistryError

__all__ = ["TRANSITIONS", "Lineage", "ModelEvent", "Transition", "TrainingWindow", "now_ms"]

Transition = Literal[
    "registered", "rejected", "shadow", "canary", "champion", "archived", "rolled_back"
]
TRANSITIONS: tuple[str, ...] = get_args(Transition)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TrainingWindow(BaseModel):
    """Event-time range of the training data, epoch milliseconds, ``start`` inclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int
    end: int


class Lineage(BaseModel):
    """Where a version came from. Extra keys (a job id, a data source) are kept as given."""

    model_config = ConfigDict(frozen=True, extra="allow")

    training_window: TrainingWindow | None = None
    parent_version: str | None = None
    trigger: str | None = None  # e.g. "alert:<alert_id>", "schedule", "manual", "demo"


class ModelEvent(BaseModel):
    """One record of ``model.events``.

    ``version`` is ``""`` only for a ``rejected`` registration, whose artifact never got a
    number. ``traffic_fraction`` is set for ``canary`` (the share of entities it serves).
    ``card`` is set on ``registered`` events; the other transitions repeat ``artifact_uri`` and
    ``sha256`` of the version so that each record stands on its own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(pattern=MODEL_NAME_PATTERN)
    version: str = Field(pattern=r"^([1-9][0-9]{0,17})?$")
    transition: Transition
    time: int = Field(default_factory=now_ms)
    actor: str = Field(min_length=1)
    reason: str | None = None
    artifact_uri: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    card: ModelCard | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    traffic_fraction: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def key(self) -> bytes:
        """The Kafka key: the model name (one ordered partition keeps all models in order)."""
        return self.model.encode()

    def to_record(self) -> dict[str, Any]:
        """The ``model.events`` record (Avro field names; card and lineage as JSON text)."""
        lineage = self.lineage.model_dump(mode="json", exclude_none=True)
        return {
            "model": self.model,
            "version": self.version,
            "transition": self.transition,
            "time": self.time,
            "actor": self.actor,
            "reason": self.reason,
            "artifact_uri": self.artifact_uri,
            "sha256": self.sha256,
            "card": self.card.model_dump_json() if self.card is not None else None,
            "metrics": dict(self.metrics),
            "lineage": orjson.dumps(lineage).decode() if lineage else None,
            "traffic_fraction": self.traffic_fraction,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelEvent:
        """Parse a decoded ``model.events`` record; ``RegistryError`` if it is not one."""
        try:
            fields = dict(record)
            card = fields.get("card")
            fields["card"] = ModelCard.model_validate_json(card) if card else None
            lineage = fields.get("lineage")
            fields["lineage"] = _json_object(lineage) if lineage else {}
            fields["metrics"] = fields.get("metrics") or {}
            return cls.model_validate(fields)
        except (ValidationError, ValueError, TypeError) as exc:
            raise RegistryError(f"not a model event: {exc}") from exc

    def describe(self) -> str:
        """One line for logs and the CLI."""
        what = f"{self.model} v{self.version or '-'} {self.transition}"
        if self.transition == "canary" and self.traffic_fraction is not None:
            what += f" ({self.traffic_fraction:.0%})"
        return f"{what} by {self.actor}" + (f": {self.reason}" if self.reason else "")


def _json_object(text: str) -> dict[str, JsonValue]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError("lineage must be a JSON object")
    return value
