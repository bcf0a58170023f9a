"""Where the servers are, for commands run beside a stack: the environment wins, then the
endpoints ``modelstream up`` wrote, then the defaults."""

from __future__ import annotations

from ..runtime.settings import Settings
from ..stack.stack import read_state

__all__ = ["cli_settings"]


def cli_settings() -> Settings:
    settings = Settings()
    state = read_state(settings) or {}
    update: dict[str, object] = {}
    if not settings.kafka_bootstrap:
        update["kafka_bootstrap"] = state.get("broker") or f"127.0.0.1:{settings.kafka_port}"
    if not settings.redis_url:
        redis = state.get("redis")
        update["redis_url"] = (
            redis if redis and redis != "external" else f"redis://127.0.0.1:{settings.redis_port}/0"
        )
    return settings.model_copy(update=update) if update else settings
