from __future__ import annotations

from pathlib import Path

import pytest

from model.scorer import Scorer
from tests.factories import make_tiny_base, make_tiny_version


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_version(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_version(tiny_base, tmp_path_factory.mktemp("versions") / "tiny-0001")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_version: Path) -> Scorer:
    return Scorer.from_pretrained(tiny_version)
