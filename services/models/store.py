"""The artifact store: immutable, numbered model versions on a filesystem.

Layout: ``<root>/<model>/<version>/model.onnx`` plus ``card.json``, versions ``"1"``, ``"2"``, …
A version is written once and never changed, so a version number names exactly one set of
weights forever (``model.events`` and every prediction record rely on that). Publishing stages
both files in a hidden directory and renames it into place, so readers see a whole version or
none, and two concurrent publishers can never both win the same number. Reads verify the
checksum from the card and refuse anything that is not ONNX.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError as PydanticValidationError

from ..runtime.errors import ModelLoadError
from .artifact import check_onnx, refuse_pickle, sha256_hex
from .card import MODEL_NAME_PATTERN, ArtifactRef, ModelCard

if TYPE_CHECKING:
    from ..runtime.settings import Settings

__all__ = ["ARTIFACT_FILE", "CARD_FILE", "ArtifactStore"]

ARTIFACT_FILE = "model.onnx"
CARD_FILE = "card.json"
_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_MAX_PUBLISH_ATTEMPTS = 100


class ArtifactStore:
    """Model versions under ``root``; safe to share between processes on one filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifacts)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if _NAME.match(p.name) and self.versions(p.name)
        )

    def versions(self, model: str) -> list[str]:
        """Published versions of ``model``, oldest first (numeric order: "2" before "10")."""
        model_dir = self._model_dir(model)
        if not model_dir.is_dir():
            return []
        found = [
            p.name
            for p in model_dir.iterdir()
            if _VERSION.match(p.name) and (p / CARD_FILE).is_file()
        ]
        return sorted(found, key=int)

    def latest(self, model: str) -> str | None:
        versions = self.versions(model)
        return versions[-1] if versions else None

    def path(self, model: str, version: str) -> Path:
        """The directory of one version (it may not exist)."""
        if not _VERSION.match(version):
            raise ModelLoadError(f"{model}: invalid version {version!r} (expected 1, 2, …)")
        return self._model_dir(model) / version

    def artifact_uri(self, model: str, version: str) -> str:
        """``file://`` URI of the ONNX file, as ``model.events`` records it."""
        return (self.path(model, version) / ARTIFACT_FILE).resolve().as_uri()

    def card(self, model: str, version: str) -> ModelCard:
        """The card of one version; ``ModelLoadError`` if it is missing or unreadable."""
        where = f"{model} v{version}"
        path = self.path(model, version) / CARD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelLoadError(f"{where}: no such version ({path} is missing)") from None
        except OSError as exc:
            raise ModelLoadError(f"{where}: cannot read {path}: {exc}") from exc
        try:
            card = ModelCard.model_validate_json(text)
        except PydanticValidationError as exc:
            raise ModelLoadError(f"{where}: unparsable card {path}: {exc}") from exc
        if card.name != model or card.version != version:
            raise ModelLoadError(
                f"{where}: card {path} claims to be {card.name} v{card.version}; refusing it"
            )
        return card

    def load_bytes(self, model: str, version: str) -> bytes:
        """The ONNX bytes of one version, verified against the card's size and sha256."""
        card = self.card(model, version)
        where = f"{model} v{version}"
        path = self.path(model, version) / card.artifact.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"{where}: artifact {path} is missing") from None
        except OSError as exc:
            raise ModelLoadError(f"{where}: cannot read {path}: {exc}") from exc
        # Before the checksum, so that a planted pickle is named as such whatever its checksum.
        refuse_pickle(data, where)
        digest = sha256_hex(data)
        if digest != card.artifact.sha256 or len(data) != card.artifact.bytes:
            raise ModelLoadError(
                f"{where}: checksum mismatch for {path}: card says sha256 {card.artifact.sha256}"
                f" ({card.artifact.bytes} bytes), file has {digest} ({len(data)} bytes);"
                " the artifact was changed or corrupted after publishing"
            )
        check_onnx(data, where)
        return data

    # -- writing ---------------------------------------------------------------------------

    def publish(self, onnx_bytes: bytes, card: ModelCard) -> ModelCard:
        """Store a new version and return its card with ``version`` and ``artifact`` filled in.

        ``card.version`` empty means "the next number"; a set version must be unused. Versions
        are never overwritten: reusing one raises ``ModelLoadError``. The model must load and
        pass its smoke test first, so a published version is always servable.
        """
        where = f"{card.name} (publishing)"
        check_onnx(onnx_bytes, where)
        artifact = ArtifactRef(
            file=ARTIFACT_FILE, sha256=sha256_hex(onnx_bytes), bytes=len(onnx_bytes)
        )
        candidate = card.model_copy(update={"artifact": artifact})
        # Imported here: scoring needs onnxruntime, which readers of cards alone do not.
        from .scoring import OnnxModel

        OnnxModel(candidate, onnx_bytes).smoke_test()

        model_dir = self._model_dir(card.name)
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
        try:
            _write_synced(staging / ARTIFACT_FILE, onnx_bytes)
            for _ in range(_MAX_PUBLISH_ATTEMPTS):
                version = card.version or self._next_version(card.name)
                final = candidate.model_copy(update={"version": version})
                _write_synced(staging / CARD_FILE, final.model_dump_json(indent=2).encode())
                if _rename_new(staging, model_dir / version):
                    _fsync_dir(model_dir)
                    return final
                if card.version:
                    raise ModelLoadError(
                        f"{card.name} v{version} already exists; versions are never overwritten"
                    )
            raise ModelLoadError(f"{card.name}: gave up finding a free version number")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _model_dir(self, model: str) -> Path:
        # The name becomes a path segment: refuse anything that could escape the root.
        if not _NAME.match(model):
            raise ModelLoadError(f"invalid model name {model!r}")
        return self.root / model

    def _next_version(self, model: str) -> str:
        # Count every numbered directory, complete or not, so a number is never handed out twice.
        taken = [int(p.name) for p in self._model_dir(model).iterdir() if _VERSION.match(p.name)]
        return str(max(taken, default=0) + 1)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rename_new(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` already holds a version."""
    if target.exists() and any(target.iterdir()):
        return False
    try:
        # Atomic; fails with ENOTEMPTY/EEXIST when a concurrent publisher won the race.
        os.rename(source, target)
    except OSError:
        if target.exists():
            return False
        raise
    return True
