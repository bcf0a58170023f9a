"""Which models ingest accepts events for, and their validators, refreshed from the store."""

from __future__ import annotations

import logging
import time

from ..models import ArtifactStore
from ..runtime.errors import ModelLoadError
from .validate import FeatureValidator

__all__ = ["ModelCatalog"]

log = logging.getLogger(__name__)


class ModelCatalog:
    def __init__(self, store: ArtifactStore, *, reject_unknown: bool, refresh_seconds: float = 10):
        self.store = store
        self.reject_unknown = reject_unknown
        self.refresh_seconds = refresh_seconds
        self.validators: dict[str, FeatureValidator] = {}
        self.required: dict[str, list[str]] = {}
        self._versions: dict[str, str] = {}
        self._refreshed = 0.0
        self.refresh()

    def refresh(self) -> None:
        self._refreshed = time.monotonic()
        for model in self.store.models():
            version = self.store.latest(model)
            if version is None or self._versions.get(model) == version:
                continue
            try:
                card = self.store.card(model, version)
            except ModelLoadError as exc:
                log.error("cannot read the card of %s v%s: %s", model, version, exc)
                continue
            validator = FeatureValidator(model, card.features, reject_unknown=self.reject_unknown)
            self.validators[model] = validator
            self.required[model] = validator.required
            self._versions[model] = version
            log.info("accepting events for %s (feature spec of v%s)", model, version)

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._refreshed > self.refresh_seconds:
            self.refresh()
