"""The database: one engine and its session factory, SQLite tuned for a server, migrations applied on open.

SQLite (the default, a file under the data directory) runs in WAL mode so that readers never wait for the writer, with
a busy timeout so that concurrent writers queue for the lock instead of failing with "database is locked". PostgreSQL
is used as is through ``DIPLOTONE_DATABASE_URL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_S = 30.0  # how long a SQLite writer waits for the lock before giving up


@dataclass(frozen=True)
class Database:
    """The engine and a session factory on it.

    >>> database = Database.open("sqlite:///var/diplotone.db")  # doctest: +SKIP
    >>> with database.sessions() as session: ...  # doctest: +SKIP
    """

    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        """Connect to ``url`` and, unless ``migrate`` is false, bring its schema to the latest migration."""
        engine = make_engine(url)
        if migrate:
            from service.migrations import upgrade

            upgrade(engine)
        return cls(engine, sessionmaker(engine, expire_on_commit=False))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file gets its folder created and the WAL and busy-timeout pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Sessions move between the threadpool's threads; SQLite's own check would refuse that.
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; readers see the last commit, never wait
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite; labels and pairs must name real messages
    cursor.close()
