"""FastAPI dependencies of the store: the app's ``Database`` and a session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.store.db import Database


def get_database(request: Request) -> Database:
    """The database opened in the app's lifespan."""
    database: Database = request.app.state.database
    return database


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A session for one request; whatever it did not commit is rolled back when the request ends."""
    with database.sessions() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
