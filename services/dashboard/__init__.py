"""dashboard: one live web page over a running modelstream.

It scrapes every service's ``/metrics`` (events per second, consumer lag, latency, CPU and
memory, dead letters by reason), follows ``monitor.metrics``, ``monitor.alerts`` and
``model.events`` (quality and the label-free estimate per version, drift per feature, alerts,
the champion timeline), and serves the page with the JSON it polls. Everything the page
loads ships in this package.
"""

from .board import Board
from .service import Dashboard, run

__all__ = ["Board", "Dashboard", "run"]
