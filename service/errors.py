"""Every error the API returns, as ``application/problem+json`` (RFC 9457), mapped in this one place.

Each problem type is declared once: a ``ServiceError`` subclass carries its own status, slug and title (those of the
service here, the key checks' in ``service.auth``, the store's in ``service.store.repository``); the domain errors of
``model.errors`` get theirs from ``_DOMAIN``. ``install_error_handlers`` registers one handler for all of them, for
FastAPI's request validation errors, for Starlette's HTTP errors and for anything unexpected (a 500 that carries no
stack trace). ``problem_responses`` builds a route's OpenAPI error examples from error instances through the same
code, so an example is exactly the body the handler gives that error.

A problem body reads::

    {"type": "urn:diplotone:problem:text-too-long", "title": "Text too long", "status": 413,
     "detail": "texts[2] has 20001 characters; the limit is 20000", "instance": "/v1/score",
     "length": 20001, "limit": 20000}

``type`` is a ``urn:diplotone:problem:<slug>`` for diplotone's own problems and ``about:blank`` for plain HTTP ones
(an unknown path, a wrong method), where ``title`` is the HTTP reason phrase as RFC 9457 asks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import OperationalError
from starlette import status
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from model.errors import ArtifactCorrupt, DiplotoneError, EmptyInput, InputTooLong, UnknownVersion

PROBLEM_JSON = "application/problem+json"
STATUS_CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, never seen by the gone client

log = logging.getLogger("diplotone.service")


class ServiceError(Exception):
    """An error of the service itself (a limit, back-pressure, readiness); carries its own HTTP status."""

    status: int = status.HTTP_500_INTERNAL_SERVER_ERROR
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


class TooManyTexts(ServiceError):
    """A /v1/score request holds more texts than ``max_texts``: 413, like a text over ``max_chars``."""

    status = status.HTTP_413_CONTENT_TOO_LARGE
    slug, title = "too-many-texts", "Too many texts"

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"texts has {count} items; the limit is {limit} per request", count=count, limit=limit)


class BodyTooLarge(ServiceError):
    """A request body over ``max_body_bytes``: refused from its Content-Length, or as it streams past the limit."""

    status = status.HTTP_413_CONTENT_TOO_LARGE
    slug, title = "body-too-large", "Request body too large"

    def __init__(self, size: int, limit: int, *, declared: bool) -> None:
        found = f"a Content-Length of {size} bytes" if declared else f"more than {limit} bytes as it streamed"
        super().__init__(
            f"expected a request body of at most {limit} bytes; found {found}. Nothing was read or stored",
            limit=limit,
        )


class UnsupportedMediaType(ServiceError):
    status = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    slug, title = "unsupported-media-type", "Unsupported media type"

    def __init__(self, found: str | None) -> None:
        super().__init__(
            f"expected a body of Content-Type application/json; found {found[:100] if found else 'none'}",
            found=found[:100] if found else None,
        )


class MalformedJson(ServiceError):
    """A body that is not one well-formed, unambiguous JSON document in UTF-8 (the detail says what was found)."""

    status = status.HTTP_400_BAD_REQUEST
    slug, title = "malformed-json", "Malformed JSON"


class InvalidText(ServiceError):
    """A string that holds no text: a NUL, a lone surrogate, bytes that are not UTF-8."""

    status = status.HTTP_422_UNPROCESSABLE_CONTENT
    slug, title = "invalid-text", "Invalid text"

    def __init__(self, field: str, expected: str, found: str) -> None:
        super().__init__(f"{field}: expected {expected}; found {found}", field=field)


class TextTooLong(InputTooLong):
    """``InputTooLong`` that also names which text of the request was too long."""

    def __init__(self, field: str, length: int, limit: int) -> None:
        super().__init__(length, limit)
        self.field = field
        self.args = (f"{field} has {length} characters; the limit is {limit}",)


class Overloaded(ServiceError):
    """429: the service cannot take this request now; the client should retry after ``retry_after`` seconds, which
    both the problem and its Retry-After header say."""

    status = status.HTTP_429_TOO_MANY_REQUESTS
    slug, title = "overloaded", "Too many requests"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(
            f"{detail}. Retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            **extra,
            retry_after=retry_after,
        )


class QueueFull(Overloaded):
    """The scoring queue holds as many texts as it may."""

    def __init__(self, queued: int, incoming: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the scoring queue holds {queued} texts and this request adds {incoming}; the limit is {limit}",
            retry_after,
            queued=queued,
            limit=limit,
        )


class ExpectedWaitTooLong(Overloaded):
    """A scoring request would wait longer than ``max_queue_wait_s`` for its result, by the batcher's estimate of the
    work ahead of it: the same problem as a full queue, with a Retry-After from that estimate."""

    def __init__(self, expected_s: float, limit_s: float, queued: int, incoming: int, retry_after: int) -> None:
        limit = f"{limit_s:.1f}" if round(limit_s, 1) == limit_s else f"{limit_s:g}"
        expected = f"{expected_s:.1f}" if f"{expected_s:.1f}" != limit else f"{expected_s:.2f}"
        super().__init__(
            f"expected wait {expected} s is over the {limit} s limit (max_queue_wait_s): {queued} texts are queued "
            f"ahead of this request's {incoming}",
            retry_after,
            expected_wait_s=round(expected_s, 3),
            limit_s=limit_s,
            queued=queued,
        )


class NotReady(ServiceError):
    """No model is serving (starting up, shutting down): 503."""

    status = status.HTTP_503_SERVICE_UNAVAILABLE
    slug, title = "not-ready", "Service not ready"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class DeadlineExceeded(ServiceError):
    """A scoring request waited longer than ``request_timeout_s``: 503."""

    status = status.HTTP_503_SERVICE_UNAVAILABLE
    slug, title = "deadline-exceeded", "Deadline exceeded"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request was not scored within its deadline of {timeout_s:g} s", timeout_s=timeout_s)


class ClientGone(ServiceError):
    """The client disconnected before its texts were scored; the work was dropped."""

    status = STATUS_CLIENT_CLOSED
    slug, title = "client-closed-request", "Client closed request"

    def __init__(self) -> None:
        super().__init__("the client disconnected before its texts were scored; they were dropped unscored")


class RunInProgress(ServiceError):
    """One training run at a time: 409 while one runs."""

    status = status.HTTP_409_CONFLICT
    slug, title = "training-run-in-progress", "A training run is in progress"

    def __init__(self, run_id: int | None) -> None:
        where = f"run {run_id} is still running (GET /v1/training-runs/{run_id})" if run_id else "one is running"
        super().__init__(f"one training run at a time; {where}. Start again when it ends", running_run_id=run_id)


class RetrainingUnavailable(ServiceError):
    """A run cannot start now (the service is stopping, or the bundled corpus is incomplete): 503."""

    status = status.HTTP_503_SERVICE_UNAVAILABLE
    slug, title = "retraining-unavailable", "Retraining unavailable"


class RunNotFound(ServiceError):
    status = status.HTTP_404_NOT_FOUND
    slug, title = "training-run-not-found", "Training run not found"

    def __init__(self, run_id: int) -> None:
        super().__init__(f"no training run {run_id}", run_id=run_id)


@dataclass(frozen=True)
class _Mapping:
    status: int
    slug: str
    title: str


# Domain errors of model/, most specific first (a subclass before its base).
_DOMAIN: tuple[tuple[type[DiplotoneError], _Mapping], ...] = (
    (InputTooLong, _Mapping(status.HTTP_413_CONTENT_TOO_LARGE, "text-too-long", "Text too long")),
    (EmptyInput, _Mapping(status.HTTP_422_UNPROCESSABLE_CONTENT, "empty-text", "Empty text")),
    (UnknownVersion, _Mapping(status.HTTP_404_NOT_FOUND, "unknown-model-version", "Unknown model version")),
    # A corrupt artifact met while serving is the server's fault, not the caller's.
    (ArtifactCorrupt, _Mapping(status.HTTP_500_INTERNAL_SERVER_ERROR, "model-artifact-corrupt", "Model corrupt")),
    (DiplotoneError, _Mapping(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid-input", "Invalid input")),
)


class Problem(BaseModel):
    """An RFC 9457 problem; some carry more members (``limit``, ``length``, ``errors``, ``retry_after`` ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str


@dataclass(frozen=True)
class _Described:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def to_problem(request: Request, exc: Exception) -> JSONResponse:
    """The one handler: map any exception to its problem response."""
    described = _describe(exc, request.url.path)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        described.headers["Allow"] = ", ".join(_allowed_methods(request))
    if described.status >= 500 and isinstance(exc, DiplotoneError):
        log.error("model error on %s: %s", request.url.path, exc)
    elif not isinstance(exc, ServiceError | DiplotoneError | RequestValidationError | StarletteHTTPException):
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        described.body, status_code=described.status, headers=described.headers, media_type=PROBLEM_JSON
    )


class UnpublishedMessage(ServiceError):
    """A stored message known only by its metadata (the agency named it but printed no text) cannot be labelled."""

    status = status.HTTP_409_CONFLICT
    slug, title = "message-unpublished", "Message has no text"

    def __init__(self, message_id: int) -> None:
        super().__init__(
            f"message {message_id} is known but unpublished (no text); expected a message with text to label",
            message_id=message_id,
        )


RETRY_AFTER_HEADER = {
    "description": "whole seconds to wait before trying again",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
}
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
    """The handler of ``OperationalError``: a 503 with ``Retry-After`` instead of a 500."""
    # The driver's message names the host and the cause, never a password (SQLAlchemy hides it in URLs).
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, str(error).splitlines()[0])
    return to_problem(request, DatabaseUnavailable())


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` through ``to_problem``; the database's connection errors answer 503."""
    for kind in (ServiceError, DiplotoneError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, to_problem)
    app.add_exception_handler(OperationalError, database_unavailable)


def problem_responses(instance: str, *errors: Exception) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for a route, one per status, each example the body ``to_problem`` gives.

    Errors that share a status (a full queue, an expected wait too long) become named ``examples`` of it; a
    ``Retry-After`` that an error carries is documented as a header of its response.

    >>> problem_responses("/v1/training-runs/7", RunNotFound(7))[404]["description"]
    'Training run not found'
    """
    by_status: dict[int, list[tuple[str, _Described]]] = {}
    for error in errors:
        described = _describe(error, instance)
        by_status.setdefault(described.status, []).append((type(error).__name__, described))
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code, named in by_status.items():
        media: dict[str, Any] = {"schema": Problem.model_json_schema()}
        if len(named) == 1:
            media["example"] = named[0][1].body
        else:
            media["examples"] = {name: {"value": described.body} for name, described in named}
        response: dict[str, Any] = {"description": named[0][1].body["title"], "content": {PROBLEM_JSON: media}}
        if any("Retry-After" in described.headers for _, described in named):
            response["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        responses[status_code] = response
    return responses


def overloaded_responses(instance: str) -> dict[int | str, dict[str, Any]]:
    """The 429 of a route that scores through the batcher: a full queue, or an expected wait over the limit."""
    responses = problem_responses(
        instance,
        QueueFull(queued=256, incoming=3, limit=256, retry_after=2),
        ExpectedWaitTooLong(3.42, 2.0, queued=118, incoming=1, retry_after=4),
    )
    responses[status.HTTP_429_TOO_MANY_REQUESTS]["description"] = (
        "Too many requests: the request would wait longer than `max_queue_wait_s` for its result (estimated from "
        "the work queued ahead of it and the model's measured speed), or the queue already holds `queue_size` "
        "texts (both in `/v1/info`). Nothing was queued; `Retry-After` gives the whole seconds until the work "
        "ahead of it now is done"
    )
    return responses


def _describe(exc: Exception, instance: str) -> _Described:
    if isinstance(exc, ServiceError):
        return _body(exc.status, exc.title, exc.detail, instance, exc.slug, exc.headers, exc.extensions)
    if isinstance(exc, DiplotoneError):
        mapping = next(m for kind, m in _DOMAIN if isinstance(exc, kind))
        extensions: dict[str, Any] = {}
        if isinstance(exc, InputTooLong):
            extensions = {"length": exc.length, "limit": exc.limit}
            if isinstance(exc, TextTooLong):
                extensions["field"] = exc.field
        return _body(mapping.status, mapping.title, str(exc), instance, mapping.slug, {}, extensions)
    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc, instance)
    if isinstance(exc, StarletteHTTPException):
        return _body(exc.status_code, _phrase(exc.status_code), str(exc.detail), instance, None, exc.headers, {})
    return _body(
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal server error",
        "an unexpected error occurred; it has been logged",
        instance,
        "internal-error",
        {},
        {},
    )


def _body(
    status_code: int,
    title: str,
    detail: str,
    instance: str,
    slug: str | None,
    headers: Mapping[str, str] | None,
    extensions: Mapping[str, Any],
) -> _Described:
    """A problem body; ``slug`` None gives ``type: about:blank``."""
    body = {
        "type": f"urn:diplotone:problem:{slug}" if slug else "about:blank",
        "title": title,
        "status": status_code,
        "detail": detail,
        "instance": instance,
        **extensions,
    }
    return _Described(status_code, body, dict(headers or {}))


def _validation_problem(exc: RequestValidationError, instance: str) -> _Described:
    # The offending input is left out: it may be a 20,000-character text, and echoing it helps no one.
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"] if _names_found(error) else f"{error['msg']}; found {_found(error)}",
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    noun = "field is" if len(errors) == 1 else "fields are"
    return _body(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        "Invalid request",
        f"{len(errors)} {noun} invalid: {listed}",
        instance,
        "invalid-request",
        {},
        {"errors": errors},
    )


def _names_found(error: Any) -> bool:
    """A missing field has nothing to show; our own checks (``check_text``, the model validators) say it already."""
    return bool(error["type"] == "missing" or "found" in error["msg"])


def _found(error: Any) -> str:
    """What a field held, by its JSON kind (a body's string by its length: it may be a long text); a short query or
    path value as itself, since that is where a mistyped id or date is seen."""
    value = error["input"]
    if isinstance(value, str) and error["loc"][0] in ("query", "path") and len(value) <= 40:
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value:.6g}" if isinstance(value, float) else f"the integer {value}"[:60]
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return type(value).__name__


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps an included router whole, as one route)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from leaf_routes(included.routes) if included is not None else (route,)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's, when two share a path)."""
    scope = {**request.scope, "method": "GET"}
    methods: set[str] = set()
    for route in leaf_routes(request.app.router.routes):
        match, _ = route.matches(scope)
        served = getattr(route, "methods", None)
        if match != Match.NONE and served:
            methods |= set(served)
    return sorted(methods)


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"
