"""``modelstream kcat``: Debian's kcat, made to work with the embedded broker.

kcat 1.7.1 links librdkafka 2.0.2, whose ApiVersions handshake the embedded broker rejects.
The confluent-kafka wheel ships a current librdkafka; we put it first on the library path under
the soname kcat asks for, and add ``-b`` when the user gave none.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import confluent_kafka

from ..runtime.errors import ConfigError

__all__ = ["kcat_argv_env", "run_kcat"]


def _bundled_librdkafka() -> Path:
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise ConfigError(f"no librdkafka found in {libs}")
    return found[0]


def library_dir() -> Path:
    """A directory holding ``librdkafka.so.1`` → the wheel's librdkafka (made once)."""
    lib = _bundled_librdkafka()
    target = Path(tempfile.gettempdir()) / f"modelstream-rdkafka-{lib.stat().st_ino}"
    link = target / "librdkafka.so.1"
    if not link.exists():
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".link.{os.getpid()}"
        tmp.symlink_to(lib)
        os.replace(tmp, link)
    return target


def kcat_argv_env(args: list[str], bootstrap: str) -> tuple[list[str], dict[str, str]]:
    binary = shutil.which("kcat") or shutil.which("kafkacat")
    if binary is None:
        raise ConfigError("kcat is not installed: `apt-get install kcat` (Debian/Ubuntu)")
    argv = [binary, *args]
    if not any(a == "-b" or a.startswith("-b") for a in args) and "-V" not in args:
        argv[1:1] = ["-b", bootstrap]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(library_dir()), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return argv, env


def run_kcat(args: list[str], bootstrap: str) -> None:
    argv, env = kcat_argv_env(args, bootstrap)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
