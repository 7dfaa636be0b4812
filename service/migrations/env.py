"""Alembic environment: migrates the connection handed over in ``config.attributes`` (see ``upgrade``)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, create_engine

from service.store.models import Base, UTCDateTime

config = context.config


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters a table by copying it; batch mode writes later migrations that way.
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(kind: str, item: Any, context: AutogenContext) -> str | Literal[False]:
    # UTCDateTime converts in Python only; in the database it is a plain DateTime, so revisions need not import it.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime()"
    return False


def _run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    # From the alembic CLI (writing a revision): the URL comes from the ini file or -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: pass -x url=sqlite:///var/diplotone.db (or set sqlalchemy.url)")
    with create_engine(url).connect() as fresh:
        _migrate(fresh)
        fresh.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
_run()
