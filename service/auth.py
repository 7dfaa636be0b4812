"""FastAPI dependencies that demand an API key of a scope: ``LabelKey``, ``AdminKey``, and the gates of scoring
(``ScoreAccess``: open unless ``score_requires_key``) and of reading stored messages and labels (``ReadAccess``: a
``read`` key or above unless ``open_reads``). ``OPTIONAL_KEY`` names the gates that may let a call in without a key,
so that the OpenAPI can say which operations are open (``service.openapi``).

A key travels as ``Authorization: Bearer dpt_…`` or ``X-API-Key: dpt_…``. No key or an unknown one: 401; a key whose
scope is below the route's: 403. Scopes and the key format are described in ``service.keys``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette import status

from service.deps import get_database, get_key_verifier
from service.errors import ServiceError
from service.keys import Principal, key_id_of
from service.settings import Settings, get_settings

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer dpt_<id>_<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `X-API-Key: dpt_<id>_<secret>`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="diplotone"'}


class MissingKey(ServiceError):
    status = status.HTTP_401_UNAUTHORIZED
    slug, title = "api-key-missing", "API key missing"

    def __init__(self, required: str) -> None:
        super().__init__(
            f"this route needs an API key with scope '{required}'; expected an 'Authorization: Bearer "
            "dpt_…' or 'X-API-Key: dpt_…' header, found neither",
            headers=_CHALLENGE,
            required=required,
        )


class UnknownKey(ServiceError):
    status = status.HTTP_401_UNAUTHORIZED
    slug, title = "api-key-unknown", "API key not recognised"

    def __init__(self, token: str) -> None:
        key_id = key_id_of(token)
        found = f"key id {key_id}" if key_id else "a value not of the form dpt_<16 hex digits>_<43 characters>"
        super().__init__(
            f"the API key is not valid (unknown, revoked or wrong secret); found {found}", headers=_CHALLENGE
        )


class ScopeTooLow(ServiceError):
    status = status.HTTP_403_FORBIDDEN
    slug, title = "api-key-scope", "API key lacks the scope"

    def __init__(self, principal: Principal, required: str) -> None:
        super().__init__(
            f"this route needs scope '{required}' or above; key {principal.key_id} has scope '{principal.scope}'",
            required=required,
            found=principal.scope,
        )


def _presented_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> str | None:
    return bearer.credentials if bearer is not None else header


def authorize(request: Request, token: str | None, required: str) -> Principal:
    """The principal of ``token`` if it is a valid key of scope ``required`` or above; else the 401 or 403 error."""
    if not token:
        raise MissingKey(required)
    with get_database(request).sessions() as session:
        principal = get_key_verifier(request).verify(session, token)
    if principal is None:
        raise UnknownKey(token)
    if not principal.allows(required):
        raise ScopeTooLow(principal, required)
    return principal


def require_scope(required: str) -> Callable[..., Principal]:
    """A dependency that returns the caller's ``Principal`` if its key has ``required`` scope (or above)."""

    def dependency(request: Request, token: Annotated[str | None, Depends(_presented_key)]) -> Principal:
        return authorize(request, token, required)

    dependency.__name__ = f"require_{required}_scope"
    return dependency


def score_access(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    token: Annotated[str | None, Depends(_presented_key)],
) -> Principal | None:
    """Open scoring (and reading) unless ``score_requires_key``; then a key of any scope (``score`` is the lowest)."""
    if not settings.score_requires_key:
        return None
    return authorize(request, token, "score")


def read_access(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    token: Annotated[str | None, Depends(_presented_key)],
) -> Principal | None:
    """Stored messages and their labels are analysts' work: a ``read`` key (or above) unless ``open_reads``; open
    reads still need a key where ``score_requires_key`` closes scoring."""
    if settings.open_reads:
        return score_access(request, settings, token)
    return authorize(request, token, "read")


def is_open(gate: Callable[..., object], settings: Settings) -> bool:
    """Whether ``gate`` (one of ``OPTIONAL_KEY``) lets a call in without a key under ``settings``."""
    return not settings.score_requires_key and (gate is score_access or settings.open_reads)


OPTIONAL_KEY = (score_access, read_access)
LabelKey = Annotated[Principal, Depends(require_scope("label"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
ScoreAccess = Annotated[Principal | None, Depends(score_access)]
ReadAccess = Annotated[Principal | None, Depends(read_access)]
