"""The model registry: a folder per version under ``<data dir>/models`` and an ``active`` pointer.

The pointer is a one-line file replaced atomically (``model.contract.write_atomically``): a reader sees the old
version or the new one, never a torn write. Besides ``seed`` on a first start, the pointer moves in two places only:
the service's model switch (``service.model_slot.ModelSwitch``, after loading and probing the version) and the command
line (``diplotone models activate``, ``diplotone train``). A training run started by the service never moves it.

A version is copied in under a temporary name and renamed, so a crash mid-copy leaves no half version behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.artifacts import verify_manifest
from model.contract import write_atomically
from model.errors import UnknownVersion

ACTIVE = "active"
SHIPPED = Path(__file__).resolve().parent / "shipped"  # versions committed with the code


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    active: bool
    metrics: dict[str, Any]
    created: str


class Registry:
    """Model versions under ``root`` (``<data dir>/models``).

    >>> registry = Registry(Path("var/models")); registry.seed()  # doctest: +SKIP
    >>> registry.active_path()  # doctest: +SKIP
    PosixPath('var/models/2026-11-29-lora-3f9a2c')
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def seed(self, shipped: Path = SHIPPED) -> None:
        """On first start (an empty registry), install the shipped versions and activate the newest one.

        A registry that already holds versions is left as it is: its owner chose what it serves.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not shipped.is_dir() or self.versions():
            return
        for folder in sorted(p for p in shipped.iterdir() if p.is_dir()):
            if not (self.root / folder.name).exists():
                self.install(folder, folder.name)
        if self.active_version() is None and self.versions():
            self.activate(sorted(v.version for v in self.versions())[-1])

    def install(self, source: Path, version: str) -> Path:
        """Copy a version folder in (checked against its manifest first); return its registry path."""
        files = verify_manifest(source)["files"]
        target = self.root / version
        if target.exists():
            # Training is deterministic: the same recipe on the same data gives the same weights, hence the same name.
            if (target / "manifest.json").is_file() and verify_manifest(target)["files"] == files:
                return target
            raise FileExistsError(f"version {version} already exists in {self.root} with other files")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache"))
            verify_manifest(staging)  # a short write (a full disk) is caught before the version appears
        except OSError as error:  # e.g. ENOSPC: leave no half copy behind, and say what happened
            shutil.rmtree(staging, ignore_errors=True)
            raise OSError(
                error.errno, f"could not install version {version} into {self.root}: {error}; nothing was installed"
            ) from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(staging, target)
        return target

    def path(self, version: str) -> Path:
        folder = self.root / version
        if version.startswith(".") or "/" in version or not (folder / "manifest.json").is_file():
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise UnknownVersion(f"no model version {version!r}; the registry holds: {known}")
        return folder

    def versions(self) -> list[VersionInfo]:
        if not self.root.is_dir():
            return []
        active = self.active_version()
        return [
            self._info(folder, folder.name == active)
            for folder in sorted(self.root.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and (folder / "manifest.json").is_file()
        ]

    def active_version(self) -> str | None:
        pointer = self.root / ACTIVE
        return pointer.read_text().strip() or None if pointer.is_file() else None

    def active_path(self) -> Path:
        version = self.active_version()
        if version is None:
            raise UnknownVersion(f"no active model version in {self.root}; activate one first")
        return self.path(version)

    def activate(self, version: str) -> Path:
        """Point ``active`` at ``version`` after checking its files; atomic."""
        folder = self.path(version)
        verify_manifest(folder)
        write_atomically(self.root / ACTIVE, version + "\n")
        return folder

    def _info(self, folder: Path, active: bool) -> VersionInfo:
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        manifest = json.loads((folder / "manifest.json").read_text())
        return VersionInfo(folder.name, folder, active, metrics, str(manifest.get("created", "")))
