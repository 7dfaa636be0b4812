from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model.scorer import Scorer
from tests.factories import make_tiny_base, make_tiny_version
from tests.postgres import SKIP_REASON, fresh_database, server_url


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_version(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_version(tiny_base, tmp_path_factory.mktemp("versions") / "tiny-0001")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_version: Path) -> Scorer:
    return Scorer.from_pretrained(tiny_version)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server (see tests/postgres.py); skips the test, saying how, without one."""
    url = server_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    return url


@pytest.fixture
def backend() -> str:
    """The database a test's store runs on: SQLite, unless its module asks for each of ``BACKENDS``."""
    return "sqlite"


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database of ``backend``: a SQLite file in the test's folder, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'diplotone.db'}"  # where the service puts it by default (data_dir = tmp_path)
        return
    with fresh_database(request.getfixturevalue("postgres_server")) as url:
        yield url
