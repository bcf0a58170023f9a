"""``modelstream models export NAME VERSION DIR``: a self-contained bundle of one version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..batch.export import export_bundle
from ..models import ArtifactStore
from ..runtime.settings import Settings

__all__ = ["add_export_parser", "run_export"]


def add_export_parser(models_sub: Any) -> None:
    ex = models_sub.add_parser(
        "export",
        help="write a bundle (ONNX, card, checksums, README) that runs without modelstream",
    )
    ex.add_argument("name")
    ex.add_argument("version")
    ex.add_argument("dir", type=Path, help="new or empty directory")


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    store = ArtifactStore.from_settings(settings)
    files = export_bundle(store, args.name, args.version, args.dir)
    print(f"exported {args.name} v{args.version} to {args.dir}: "
          + ", ".join(f.name for f in files))
    print(f"check it with: (cd {args.dir} && sha256sum -c SHA256SUMS)")
    return 0
