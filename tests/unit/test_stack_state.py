"""One stack per data directory, and which stack the commands beside it find: `up`'s, or the
demo's (``<data_dir>/demo``) when only the demo runs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from services.runtime.errors import StackError
from services.runtime.settings import Settings
from services.stack.stack import DEMO_DIR, Stack, read_state


@pytest.fixture
def other_pid() -> Iterator[int]:
    """A process that runs for the test: another stack's."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write(path: Path, pid: int, broker: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"pid": pid, "broker": broker}))


def test_the_commands_find_up_then_the_demo_then_a_stale_file(
    tmp_path: Path, other_pid: int, dead_pid: int
) -> None:
    s = Settings(data_dir=tmp_path)
    assert read_state(s) is None
    _write(tmp_path / DEMO_DIR / "stack.json", other_pid, "demo:1")
    assert read_state(s) == {"pid": other_pid, "broker": "demo:1"}  # only the demo runs
    _write(tmp_path / "stack.json", dead_pid, "up:1")  # left by a killed `up`
    assert read_state(s)["broker"] == "demo:1"  # type: ignore[index]
    _write(tmp_path / "stack.json", os.getpid(), "up:2")
    assert read_state(s)["broker"] == "up:2"  # type: ignore[index]
    (tmp_path / DEMO_DIR / "stack.json").unlink()
    _write(tmp_path / "stack.json", dead_pid, "up:1")
    assert read_state(s)["broker"] == "up:1"  # type: ignore[index]  # neither runs


def test_a_second_stack_in_the_same_directory_is_refused_and_the_first_left_alone(
    tmp_path: Path, other_pid: int
) -> None:
    s = Settings(data_dir=tmp_path)
    _write(tmp_path / "stack.json", other_pid, "127.0.0.1:9092")
    stack = Stack(s, say=lambda _: None)
    with pytest.raises(StackError, match=rf"already running from .*pid {other_pid}.*"
                                         "MODELSTREAM_DATA_DIR"):
        stack.start()
    stack.stop()  # as `up` does on its way out
    assert read_state(s) == {"pid": other_pid, "broker": "127.0.0.1:9092"}
