"""Container health check for the modelstream image: GET /healthz of the running service.

The image's HEALTHCHECK runs ``python /usr/local/bin/modelstream-healthcheck``. The port is
``$MODELSTREAM_METRICS_PORT`` when set; otherwise the default port of the service named by
``modelstream run SERVICE`` on PID 1's command line. Containers that run a one-shot command
(``modelstream topics``, the model initialiser) have no endpoint, and pass.

Usage: modelstream-healthcheck [PATH]   (default /healthz; /readyz checks readiness instead)
Exit status 0 when the endpoint answers 200, 1 otherwise (Docker's "unhealthy").
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

TIMEOUT_SECONDS = 3.0


def metrics_port(environ: Mapping[str, str], argv: Sequence[str]) -> int | None:
    """The port of this container's /metrics endpoint, or None if it runs no service."""
    explicit = environ.get("MODELSTREAM_METRICS_PORT", "").strip()
    if explicit:
        return int(explicit)
    for i, arg in enumerate(argv[:-1]):
        if arg == "run":
            from services.runtime.settings import SERVICE_PORTS

            return SERVICE_PORTS.get(argv[i + 1])
    return None


def probe_url(environ: Mapping[str, str], port: int, path: str = "/healthz") -> str:
    """The URL to probe: the bound address, or loopback when bound to every address."""
    host = environ.get("MODELSTREAM_METRICS_HOST", "").strip() or "127.0.0.1"
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def pid1_argv() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def main(args: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    path = args[0] if args else "/healthz"
    port = metrics_port(os.environ, pid1_argv())
    if port is None:
        return 0
    url = probe_url(os.environ, port, path)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
