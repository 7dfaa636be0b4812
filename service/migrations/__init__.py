"""Alembic migrations of the store, run in code: at startup and by ``diplotone db upgrade``.

The configuration is built here rather than read from an ini file, so the migrations run the same from any working
directory and an installed package. ``service/alembic.ini`` exists only to write new revisions with the alembic CLI.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

SCRIPTS = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """An Alembic config pointing at this package's scripts (no database URL: a connection is handed over)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` on ``engine``'s database, in one transaction where the database can."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to ``revision`` (``"base"``: an empty database), in one transaction where it can."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
