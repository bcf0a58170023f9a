"""``modelstream run retrain``: the retraining coordinator in the foreground."""

from __future__ import annotations

from ..runtime.logs import configure_logging
from ..runtime.settings import Settings
from .app import RetrainApp

__all__ = ["run"]


def run(settings: Settings) -> None:
    configure_logging("retrain", settings.log_level, settings.log_format)
    RetrainApp(settings).run()
