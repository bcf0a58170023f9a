"""The dashboard's HTTP endpoint: the page and its two static files, ``/api/state`` (the JSON
the page polls), and the service endpoints every modelstream service has (``/metrics``,
``/healthz``, ``/readyz``).

The page loads nothing from anywhere else: its script and stylesheet ship in the package, and
a Content-Security-Policy tells the browser to refuse any other origin.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import orjson

from ..runtime.metrics import Route, ServiceEndpoint
from .board import Board

__all__ = ["CSP", "DashboardServer", "STATIC"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# path -> (file in static/, content type)
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = resources.files(__package__) / "static"
    return {path: ((root / name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}


def _constant(body: bytes, ctype: str) -> Route:
    return lambda: (200, body, ctype)


# On every response: the page may load nothing from elsewhere, and nothing is cached.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardServer(ServiceEndpoint):
    """A service endpoint with the page, its static files and ``/api/state``."""

    def __init__(self, host: str, port: int, board: Board, ready: Callable[[], bool]) -> None:
        routes: dict[str, Route] = {path: _constant(body, ctype)
                                    for path, (body, ctype) in _load_static().items()}
        routes["/api/state"] = lambda: (200, orjson.dumps(board.state()), "application/json")
        super().__init__(host, port, lambda: {"ready": ready()}, routes, HEADERS)
