"""``modelstream run dashboard``: scrape the services, follow the topics, serve the page."""

from __future__ import annotations

import logging
import signal
import threading
import time

from ..runtime import metrics
from ..runtime.logs import configure_logging
from ..runtime.service import tune_gc
from ..runtime.settings import Settings
from .board import Board
from .feed import TopicFeed
from .scrape import discover_targets, scrape_all
from .server import DashboardServer

__all__ = ["SERVICE", "Dashboard", "run"]

SERVICE = "dashboard"
log = logging.getLogger(__name__)


class Dashboard:
    """The board, the topic feed, the HTTP server and the scrape cycle, started together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.board = Board(settings)
        self.feed = TopicFeed(settings, self.board.topics, self.board.lock)
        self.server = DashboardServer(settings.metrics_host, settings.service_port(SERVICE),
                                      self.board, ready=self.feed.assigned.is_set)
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host = self.settings.metrics_host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.port}/"

    def scrape_once(self) -> None:
        targets = discover_targets(self.settings)
        results = scrape_all(targets, timeout=min(2.0, self.settings.dashboard_scrape_seconds))
        for target, samples in results.items():
            metrics.DASHBOARD_SCRAPES.labels(target.service,
                                             "ok" if samples is not None else "down").inc()
        with self.board.lock:
            self.board.targets = targets
            self.board.scrapes.add(time.time(), results)
            self.board.scraped_at = time.time()

    def run(self) -> None:
        self.feed.start()
        self.server.start()
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                self.scrape_once()
                self.stopping.wait(max(0.0, self.settings.dashboard_scrape_seconds
                                       - (time.monotonic() - started)))
        finally:
            self.server.stop()
            self.feed.stop()


def run(settings: Settings) -> None:
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    dashboard = Dashboard(settings)
    tune_gc()

    def _stop(*_: object) -> None:
        dashboard.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("dashboard on %s (scraping every %.1fs)", dashboard.url,
             settings.dashboard_scrape_seconds)
    dashboard.run()
