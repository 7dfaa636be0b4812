"""The store in the app: opened by the ``open_store`` lifespan resource, a session per request for the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from sqlalchemy.orm import Session

from service.errors import NotReady
from service.keys import KeyVerifier
from service.settings import Settings
from service.store.db import Database


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
