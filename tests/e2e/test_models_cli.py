"""``modelstream models …`` as a user runs it: separate processes against the real broker, the
admin token checked, the registry's answers read back as JSON."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.models import ArtifactStore
from services.models.agrawal import train_agrawal
from services.registry import adopt_store
from tests.conftest import settings_env

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "services.cli.main", "models"]
TOKEN = "s3cret-admin-token"


def test_models_cli_registers_stages_promotes_rolls_back_behind_the_token(
    settings, demo_store, tmp_path: Path
):
    root = tmp_path / "artifacts"
    shutil.copytree(demo_store.path("agrawal", "1"), root / "agrawal" / "1")
    s = settings.model_copy(update={"artifact_dir": root})
    adopt_store(s, ArtifactStore(root))
    onnx_bytes, card = train_agrawal(n=2000, seed=11)
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    (tmp_path / "card.json").write_text(card.model_dump_json())
    base = {k: v for k, v in settings_env(s).items() if k != "MODELSTREAM_TOKEN"}
    admin = {**base, "MODELSTREAM_ADMIN_TOKEN": TOKEN}

    def cli(*args: str, env: dict[str, str] = admin, rc: int = 0) -> str:
        res = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == rc, (args, res.stdout, res.stderr)
        assert TOKEN not in res.stdout + res.stderr
        return res.stdout + res.stderr

    register = ("register", str(tmp_path / "model.onnx"), str(tmp_path / "card.json"))
    assert "admin actions are disabled" in cli(*register, env=base, rc=2)
    assert "not valid" in cli(*register, "--token", "guess", rc=2)
    assert "agrawal v2 registered" in cli(*register, env={**admin, "MODELSTREAM_TOKEN": TOKEN})
    assert "canary (25%)" in cli("stage", "agrawal", "2", "--canary", "0.25", "--token", TOKEN)

    listed = orjson.loads(cli("list", "--json"))
    assert listed == [{"model": "agrawal", "champion": "1", "canary": "2",
                       "canary_fraction": 0.25, "shadows": [], "versions": ["1", "2"],
                       "updated_at": listed[0]["updated_at"]}]
    cli("promote", "agrawal", "2", "--token", TOKEN, "--reason", "canary looked good")
    assert "champion is now v1" in cli("rollback", "agrawal", "--token", TOKEN)

    history = orjson.loads(cli("history", "agrawal", "--json"))
    assert [(e["transition"], e["version"]) for e in history["events"]] == [
        ("registered", "1"), ("champion", "1"), ("registered", "2"), ("canary", "2"),
        ("champion", "2"), ("rolled_back", "2")]
    assert history["events"][4]["archived"] == "1" and history["events"][5]["restored"] == "1"
    assert [(c["version"], c["ended_by"]) for c in history["champions"]] == [
        ("1", "champion"), ("2", "rolled_back"), ("1", None)]
    shown = orjson.loads(cli("show", "agrawal", "2", "--json"))
    assert shown["status"] == "rolled_back" and shown["task"] == "binary"
    assert shown["lineage"] == {"trigger": "manual"} and len(shown["sha256"]) == 64
