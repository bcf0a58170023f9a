"""`modelstream models export`: the bundle scores without modelstream, exactly like modelstream."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from services.batch.export import EXAMPLE, export_bundle
from services.models import ArtifactStore, OnnxModel, feature_matrix
from services.runtime.errors import ConfigError, ModelLoadError


def test_the_readme_example_scores_like_modelstream(
    demo_store: ArtifactStore, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    files = export_bundle(demo_store, "agrawal", "1", bundle)
    assert sorted(f.name for f in files) == sorted(
        ["model.onnx", "card.json", "sample.json", "README.md", "SHA256SUMS"])
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    assert hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest() == \
        demo_store.card("agrawal", "1").artifact.sha256

    readme = (bundle / "README.md").read_text()
    code = re.search(r"## Score it without modelstream.*?```python\n(.*?)```", readme, re.S)
    assert code is not None
    example = code.group(1)
    assert example == EXAMPLE and len(example.splitlines()) == 10
    # Run it as a user would, in the bundle; -I keeps the repository off the import path.
    done = subprocess.run([sys.executable, "-I", "-c", example], cwd=bundle,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()

    model = OnnxModel.load(demo_store, "agrawal", "1")
    sample = orjson.loads((bundle / "sample.json").read_bytes())
    labels, _ = model.predict(feature_matrix(sample, model.card.features))
    proba = model.predict_proba(feature_matrix(sample, model.card.features))
    assert len(out) == len(sample) == len(labels) > 0
    for line, label, p in zip(out, labels, proba, strict=True):
        got_label, got_proba = line.split(" ", 1)
        assert got_label == label
        assert np.allclose(orjson.loads(got_proba), p, atol=1e-6)


def test_export_refuses_a_used_directory_and_a_tampered_artifact(
    demo_store: ArtifactStore, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        export_bundle(demo_store, "agrawal", "1", used)
    assert (used / "x").read_text() == "mine"

    import shutil

    copy = ArtifactStore(tmp_path / "store")
    shutil.copytree(demo_store.root, copy.root)
    onnx_path = copy.path("agrawal", "1") / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        export_bundle(copy, "agrawal", "1", tmp_path / "out")
    assert not (tmp_path / "out").exists()
