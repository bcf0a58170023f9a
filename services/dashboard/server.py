"""The dashboard's HTTP endpoint: the page and its two static files, ``/api/state`` (the JSON
the page polls), and the service endpoints every modelstream service has (``/metrics``,
``/healthz``, ``/readyz``).

The page loads nothing from anywhere else: its script and stylesheet ship in the package, and
a Content-Security-Policy tells the browser to refuse any other origin.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


class DashboardServer:
    def __init__(self, host: str, port: int, board: Board, ready: Callable[[], bool]) -> None:
        files = _load_static()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path in files:
                    body, ctype = files[path]
                    self._send(200, body, ctype)
                elif path == "/api/state":
                    self._send(200, orjson.dumps(board.state()), "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    ok = ready()
                    self._send(200 if ok else 503, orjson.dumps({"ready": ok}),
                               "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # a poll a second would drown the log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
