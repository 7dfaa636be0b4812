"""Manifests: the sha256 of every file of a model folder, written after saving and checked on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from model.errors import ArtifactCorrupt

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the sha256 of every file under ``folder`` (except the manifest) in ``folder/manifest.json``."""
    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not _is_cache(path.relative_to(folder))
    }
    manifest = {"files": files, **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify_manifest(folder: Path) -> dict[str, Any]:
    """Check every file the manifest names; raise ``ArtifactCorrupt`` naming the first one that differs."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactCorrupt(str(manifest_path), "no manifest.json; expected one listing the sha256 of every file")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ArtifactCorrupt(str(manifest_path), f"unreadable manifest ({error})") from error
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactCorrupt(str(path), "listed in the manifest but missing")
        found = sha256_file(path)
        if found != expected:
            raise ArtifactCorrupt(str(path), f"sha256 is {found[:12]}…, the manifest expects {expected[:12]}…")
    return manifest


def _is_cache(relative: Path) -> bool:
    # Derived files (exported ONNX engines) are rebuilt from the checked weights, so they stay out of the manifest.
    return relative.parts[0] == "cache"
