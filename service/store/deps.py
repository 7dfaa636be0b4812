"""The store in the app: opened by the ``open_store`` lifespan resource, a session per request for the routes, and
the 503 a request gets while the database cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette import status

from service.errors import NotReady, ServiceError, to_problem
from service.keys import KeyVerifier
from service.settings import Settings
from service.store.db import Database

log = logging.getLogger("diplotone.service")
RETRY_AFTER_S = 5  # a restarting PostgreSQL is back within seconds; the pool reconnects on the next request


class DatabaseUnavailable(ServiceError):
    """The database refused or dropped the connection (down, restarting, or a SQLite lock held too long): 503."""

    status = status.HTTP_503_SERVICE_UNAVAILABLE
    slug, title = "database-unavailable", "Database unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the database cannot be reached right now, so this request was not carried out (a write was not "
            f"acknowledged and may be retried). Retry after {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
            retry_after=RETRY_AFTER_S,
        )


def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    """The handler of ``OperationalError`` (installed by ``create_app``): a 503 instead of a 500."""
    # The driver's message names the host and the cause, never a password (SQLAlchemy hides it in URLs).
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, str(error).splitlines()[0])
    return to_problem(request, DatabaseUnavailable())


def install_database_errors(app: FastAPI) -> None:
    """Answer 503 with ``Retry-After`` whenever the database cannot be reached."""
    app.add_exception_handler(OperationalError, database_unavailable)


def get_database(request: Request) -> Database:
    """The database opened in the app's lifespan; ``NotReady`` (503) before it is open."""
    database: Database | None = getattr(request.app.state, "database", None)
    if database is None:
        raise NotReady("the service has not finished starting: no database yet")
    return database


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A session for one request; whatever it did not commit is rolled back when the request ends."""
    with database.sessions() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]


@asynccontextmanager
async def open_store(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan resource: open the database (migrating it to the latest schema) and the API key verifier."""
    settings: Settings = app.state.settings
    database = await to_thread.run_sync(Database.open, settings.sqlalchemy_url)
    app.state.database, app.state.key_verifier = database, KeyVerifier()
    try:
        yield
    finally:
        database.close()
