"""``modelstream models export``: a model version as a bundle that runs wherever onnxruntime runs.

The bundle is a directory holding ``model.onnx`` (verified against the store's checksum on the
way out), ``card.json`` (feature order and encoding, labels, metrics, lineage), ``sample.json``
(the card's reference rows, so the example runs as it is), ``SHA256SUMS`` (``sha256sum -c``
format) and a ``README.md`` whose ten-line Python example scores the model with onnxruntime and
numpy only. The example is the contract: the tests run it from the README of a fresh bundle and
compare its output with modelstream's own scores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import orjson

from ..models.card import ModelCard
from ..models.store import ArtifactStore
from ..runtime.errors import ConfigError

__all__ = ["BUNDLE_FILES", "EXAMPLE", "export_bundle"]

BUNDLE_FILES: tuple[str, ...] = ("model.onnx", "card.json", "sample.json", "README.md")

# Ten lines; string categories are fed as their position in the card, everything else as is.
EXAMPLE = """\
import json, numpy as np, onnxruntime as ort
card = json.load(open("card.json"))
rows = json.load(open("sample.json"))  # your rows: a list of {feature: value} objects
def encode(f, v):  # NaN for a missing value; string categories as their position
    cats = f.get("categories") or [0]
    return float("nan") if v is None else cats.index(v) if isinstance(cats[0], str) else v
x = np.array([[encode(f, r.get(f["name"])) for f in card["features"]] for r in rows], "float32")
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
out = session.run([card["score_output"]], {card["input_name"]: x})[0]
for p in out: print(card["labels"][p.argmax()] if card["labels"] else p.item(), p.tolist())
"""


def export_bundle(store: ArtifactStore, model: str, version: str, target: Path) -> list[Path]:
    """Write the bundle of ``model`` ``version`` to ``target`` (new or empty); returns its files."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} exists and is not an empty directory; choose a new one")
    card = store.card(model, version)
    onnx_bytes = store.load_bytes(model, version)  # sha256 verified here
    files: dict[str, bytes] = {
        "model.onnx": onnx_bytes,
        "card.json": card.model_dump_json(indent=2).encode(),
        "sample.json": orjson.dumps(card.reference.sample, option=orjson.OPT_INDENT_2),
        "README.md": _readme(card).encode(),
    }
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    files["SHA256SUMS"] = sums.encode()

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / name for name in files]


def _readme(card: ModelCard) -> str:
    rows = "\n".join(
        f"| {i} | `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {_domain(f)} |"
        for i, f in enumerate(card.features)
    )
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(card.metrics.items())) or "none recorded"
    outputs = (
        f"`{card.score_output}`: an `(n, {len(card.labels)})` float matrix of probabilities, "
        f"columns in label order {card.labels}"
        if card.is_classifier
        else f"`{card.score_output}`: the predicted value per row"
    )
    return f"""# {card.name} v{card.version} — a modelstream model bundle

A {card.task} model exported by `modelstream models export`. It runs anywhere onnxruntime runs;
modelstream is not needed.

| file | what it is |
|---|---|
| `model.onnx` | the model (sha256 `{card.artifact.sha256}`) |
| `card.json` | feature order and encoding, labels, metrics, lineage, training reference profile |
| `sample.json` | {len(card.reference.sample)} reference rows from the training data |
| `SHA256SUMS` | checksums of the files above: `sha256sum -c SHA256SUMS` |

Holdout metrics at training: {metrics}.

## Input

One float32 tensor `{card.input_name}` of shape `(n, {len(card.features)})`, columns in this
order. Numbers are fed as they are; a category is fed as its value when every category is an
integer, otherwise as its position in the card's `categories`; a missing optional feature is NaN.

| column | feature | type | required | range / categories |
|---|---|---|---|---|
{rows}

## Output

{outputs}.

## Score it without modelstream

With `pip install onnxruntime numpy`, in this directory:

```python
{EXAMPLE}```
"""


def _domain(f: object) -> str:
    from ..models.card import FeatureSpec

    assert isinstance(f, FeatureSpec)
    if f.categories is not None:
        return ", ".join(str(c) for c in f.categories)
    low = "" if f.min is None else f"{f.min:g}"
    high = "" if f.max is None else f"{f.max:g}"
    return f"{low} – {high}" if low or high else "any"
