from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from model.errors import ArtifactCorrupt, UnknownVersion
from model.registry import Registry
from tests.factories import make_tiny_version


@pytest.fixture
def shipped(tiny_base: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "shipped"
    make_tiny_version(tiny_base, folder / "2026-01-01-lora-aaaaaa", version="2026-01-01-lora-aaaaaa")
    return folder


def test_seed_installs_and_activates_the_shipped_version(shipped: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"
    assert registry.active_path() == tmp_path / "models" / "2026-01-01-lora-aaaaaa"


def test_seed_keeps_an_existing_active_version(shipped: Path, tiny_base: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    newer = make_tiny_version(tiny_base, tmp_path / "newer", version="newer")
    registry.install(newer, "2027-01-01-lora-bbbbbb")
    registry.seed(shipped)
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"


def test_activate_switches_and_lists_the_active_version(shipped: Path, tiny_base: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    registry.install(make_tiny_version(tiny_base, tmp_path / "b", version="b"), "b")
    registry.activate("b")
    assert [(v.version, v.active) for v in registry.versions()] == [("2026-01-01-lora-aaaaaa", False), ("b", True)]
    registry.activate("2026-01-01-lora-aaaaaa")  # the rollback
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"


def test_activate_unknown_version_names_the_known_ones(shipped: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    with pytest.raises(UnknownVersion, match="no model version 'nope'; the registry holds: 2026-01-01-lora-aaaaaa"):
        registry.activate("nope")


def test_activate_refuses_a_damaged_version_and_keeps_the_old(shipped: Path, tiny_base: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    path = registry.install(make_tiny_version(tiny_base, tmp_path / "c", version="c"), "c")
    (path / "metrics.json").write_text("{}")
    with pytest.raises(ArtifactCorrupt, match=r"metrics\.json"):
        registry.activate("c")
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"


def test_interrupted_install_leaves_no_version(
    shipped: Path, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    source = make_tiny_version(tiny_base, tmp_path / "new", version="new")
    total = sum(1 for p in source.rglob("*") if p.is_file())
    copied: list[str] = []
    real_copytree = shutil.copytree

    def copy_then_crash(src: str, dst: str) -> None:
        shutil.copy2(src, dst)
        copied.append(src)
        if len(copied) == total:  # every file written, the install not finished: as a crash would leave it
            raise OSError("disk full")

    def copytree(src: Path, dst: Path, *args: Any, **kwargs: Any) -> Any:
        if args:  # copytree's own call for a subfolder, which passes copy_function on by position
            return real_copytree(src, dst, *args, **kwargs)
        return real_copytree(src, dst, **kwargs, copy_function=copy_then_crash)

    monkeypatch.setattr(shutil, "copytree", copytree)
    with pytest.raises(OSError, match="disk full"):
        registry.install(source, "new")
    assert len(copied) == total
    assert [v.version for v in registry.versions()] == ["2026-01-01-lora-aaaaaa"]
    with pytest.raises(UnknownVersion):
        registry.path("new")
    with pytest.raises(UnknownVersion):
        registry.activate("new")
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"
    monkeypatch.undo()
    assert registry.install(source, "new") == tmp_path / "models" / "new"  # a retry installs it whole
    registry.activate("new")


def test_installing_an_identical_version_again_is_a_no_op(shipped: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    source = shipped / "2026-01-01-lora-aaaaaa"
    first = registry.install(source, "2026-01-01-lora-aaaaaa")
    assert registry.install(source, "2026-01-01-lora-aaaaaa") == first


def test_seed_leaves_a_registry_that_holds_versions(shipped: Path, tiny_version: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.seed(shipped)
    assert [v.version for v in registry.versions()] == ["tiny-0001"]


def test_disk_full_while_installing_leaves_no_half_version_and_says_so(
    shipped: Path, tiny_version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "models")
    registry.seed(shipped)
    before = sorted(p.name for p in registry.root.iterdir())
    real_copy, copied = shutil.copyfile, []

    def copy_until_the_disk_fills(source: str, target: str, **kwargs: object) -> object:
        if copied:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        copied.append(source)
        return real_copy(source, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "copyfile", copy_until_the_disk_fills)
    with pytest.raises(OSError, match=r"could not install version tiny-0009 .* No space left on device.*nothing was"):
        registry.install(tiny_version, "tiny-0009")
    monkeypatch.undo()

    assert sorted(p.name for p in registry.root.iterdir()) == before  # no staging folder, no version
    assert registry.active_version() == "2026-01-01-lora-aaaaaa"
    registry.activate("2026-01-01-lora-aaaaaa")  # what served before still verifies
    assert registry.install(tiny_version, "tiny-0009").is_dir()  # and the install works once there is room
