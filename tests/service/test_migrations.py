"""The migrations on SQLite and on PostgreSQL: from empty to the latest, one revision at a time, down and up again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from service.migrations import alembic_config, downgrade, upgrade
from service.store.db import Database, make_engine
from service.store.models import Base, Label, Message
from tests.postgres import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    return [
        script.revision for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
    ]


def _current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_reaches_the_schema_of_the_models(engine: Engine) -> None:
    upgrade(engine)

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert _current(engine) == _revisions()[-1]


def test_each_revision_upgrades_from_the_previous_one_and_downgrades_back(engine: Engine) -> None:
    revisions = _revisions()
    for previous, revision in zip(["base", *revisions], revisions, strict=False):
        upgrade(engine, revision)
        assert _current(engine) == revision
        downgrade(engine, previous)
        assert _current(engine) == (None if previous == "base" else previous)
        upgrade(engine, revision)
    downgrade(engine, "base")
    assert _tables(engine) == set()
    upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)


def test_upgrading_a_database_at_the_latest_revision_keeps_its_rows(database_url: str) -> None:
    first = Database.open(database_url)
    with first.sessions() as session:
        message = Message(
            text="Dear friend.",
            language="en",
            score=70.0,
            interval_low=60.0,
            interval_high=80.0,
            model_version="tiny-0001",
            date=dt.date(2020, 1, 1),
            labels=[],
        )
        session.add(message)
        session.flush()
        session.add(Label(message_id=message.id, annotator="ana", score=72.0))
        session.commit()
    first.close()

    again = Database.open(database_url)
    with again.sessions() as session:
        rows = session.execute(select(Message.text, Label.annotator, Label.score).join(Label)).all()
    again.close()
    assert [tuple(row) for row in rows] == [("Dear friend.", "ana", 72.0)]
