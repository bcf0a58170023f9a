"""The artifact store: numbered immutable versions, checksums, and no pickle ever loaded."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from services.models import ArtifactStore, ModelCard, sha256_hex, train_agrawal
from services.runtime.errors import ModelLoadError, ModelstreamError


@pytest.fixture(scope="module")
def trained() -> tuple[bytes, ModelCard]:
    # A small training set keeps this module fast; quality is tested with the real demo model.
    return train_agrawal(n=2000, seed=1)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


class _Trap:
    """Unpickling this creates ``path``: proof that a loader ran the pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def _rewrite_card_checksum(store: ArtifactStore, model: str, version: str, data: bytes) -> None:
    path = store.path(model, version) / "card.json"
    card = json.loads(path.read_text())
    card["artifact"]["sha256"] = sha256_hex(data)
    card["artifact"]["bytes"] = len(data)
    path.write_text(json.dumps(card))


def test_publish_and_load_round_trip(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    published = store.publish(data, card)
    assert published.version == "1"
    assert published.artifact.sha256 == sha256_hex(data)
    assert published.artifact.bytes == len(data)
    assert store.models() == ["agrawal"]
    assert store.versions("agrawal") == ["1"]
    assert store.latest("agrawal") == "1"
    assert store.card("agrawal", "1") == published
    assert store.load_bytes("agrawal", "1") == data
    assert store.artifact_uri("agrawal", "1").startswith("file://")
    assert [p.name for p in (store.root / "agrawal").iterdir()] == ["1"]  # no staging left


def test_versions_increase_and_sort_numerically(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    assert [store.publish(data, card).version for _ in range(2)] == ["1", "2"]
    assert store.publish(data, card.model_copy(update={"version": "10"})).version == "10"
    assert store.versions("agrawal") == ["1", "2", "10"]
    assert store.publish(data, card).version == "11"
    assert store.latest("agrawal") == "11"


def test_publishing_never_overwrites(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    first = store.publish(data, card)
    other_bytes, other_card = train_agrawal(n=500, seed=2)
    with pytest.raises(ModelLoadError, match="never overwritten"):
        store.publish(other_bytes, other_card.model_copy(update={"version": first.version}))
    assert store.load_bytes("agrawal", "1") == data
    assert store.card("agrawal", "1") == first


def test_tampered_artifact_fails_its_checksum(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    store.publish(data, card)
    path = store.path("agrawal", "1") / "model.onnx"
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        store.load_bytes("agrawal", "1")


def test_pickle_with_matching_checksum_is_refused_unread(
    store: ArtifactStore, trained: tuple[bytes, ModelCard], tmp_path: Path
) -> None:
    data, card = trained
    store.publish(data, card)
    sentinel = tmp_path / "unpickled"
    payload = pickle.dumps({"weights": [1.0, 2.0], "trap": _Trap(sentinel)})
    (store.path("agrawal", "1") / "model.onnx").write_bytes(payload)
    _rewrite_card_checksum(store, "agrawal", "1", payload)
    with pytest.raises(ModelLoadError, match="pickle") as info:
        store.load_bytes("agrawal", "1")
    assert "never loaded" in str(info.value)
    assert not sentinel.exists()


def test_publishing_a_pickle_is_refused(
    store: ArtifactStore, trained: tuple[bytes, ModelCard], tmp_path: Path
) -> None:
    sentinel = tmp_path / "unpickled"
    with pytest.raises(ModelLoadError, match="pickle"):
        store.publish(pickle.dumps({"trap": _Trap(sentinel)}), trained[1])
    assert not sentinel.exists()
    assert store.versions("agrawal") == []


def test_truncated_onnx_is_refused(store: ArtifactStore, trained: tuple[bytes, ModelCard]) -> None:
    data, card = trained
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        store.publish(data[: len(data) // 2], card)
    assert store.versions("agrawal") == []
    assert not (store.root / "agrawal").exists()  # refused before anything was written

    # Truncated on disk with a card rewritten to match: the format check still refuses it.
    store.publish(data, card)
    truncated = data[: len(data) - 100]
    (store.path("agrawal", "1") / "model.onnx").write_bytes(truncated)
    _rewrite_card_checksum(store, "agrawal", "1", truncated)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        store.load_bytes("agrawal", "1")


def test_missing_and_broken_files_raise_model_load_error(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    with pytest.raises(ModelLoadError, match="no such version"):
        store.card("agrawal", "1")
    store.publish(data, card)
    (store.path("agrawal", "1") / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        store.load_bytes("agrawal", "1")
    (store.path("agrawal", "1") / "card.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unparsable card"):
        store.card("agrawal", "1")


def test_card_must_match_its_location(
    store: ArtifactStore, trained: tuple[bytes, ModelCard]
) -> None:
    data, card = trained
    store.publish(data, card)
    path = store.path("agrawal", "1") / "card.json"
    path.write_text(path.read_text().replace('"version": "1"', '"version": "7"'))
    with pytest.raises(ModelLoadError, match="claims to be"):
        store.card("agrawal", "1")


@pytest.mark.parametrize("name", ["../outside", ".hidden", "a/b", ""])
def test_unsafe_model_names_are_refused(store: ArtifactStore, name: str) -> None:
    with pytest.raises(ModelstreamError):
        store.versions(name)


def test_empty_store(store: ArtifactStore) -> None:
    assert store.models() == []
    assert store.versions("agrawal") == []
    assert store.latest("agrawal") is None
