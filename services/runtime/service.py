"""Running one service in the foreground: logs, the /metrics endpoint, signals, the loop."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import redis

from .logs import configure_logging
from .loop import StreamLoop
from .metrics import ServiceEndpoint
from .settings import Settings

__all__ = ["redis_client", "run_service", "tune_gc"]

log = logging.getLogger(__name__)


def redis_client(settings: Settings) -> redis.Redis:
    kwargs = settings.redis_kwargs()
    url = kwargs.pop("url")
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **kwargs
    )


def tune_gc() -> None:
    """Batches allocate many short-lived dicts, freed by reference counting; the cyclic
    collector's frequent passes over the long-lived heap (models, clients, metrics) cost up to a
    third of a batch. Freeze what start-up built and run the collector far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_service(name: str, settings: Settings, build: Callable[[Settings], StreamLoop]) -> None:
    configure_logging(name, settings.log_level, settings.log_format)
    loop = build(settings)
    tune_gc()
    endpoint = ServiceEndpoint(settings.metrics_host, settings.service_port(name), loop.ready)
    endpoint.start()
    log.info("%s consuming %s; metrics on :%d", name, ", ".join(loop.topics), endpoint.port)
    loop.install_signal_handlers()
    try:
        loop.run()
    finally:
        endpoint.stop()
