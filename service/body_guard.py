"""The request body's limits, checked before any route sees it: its size, its media type, and that it is plain JSON.

``BodyGuard`` is a pure ASGI middleware in front of every route:

1. a body over ``max_body_bytes`` is refused with 413, from its ``Content-Length`` before a byte is read, or as it
   streams past the limit (a chunked upload), so nothing over the limit is held in memory or parsed;
2. a body on an API route (``/v1/...``) must be ``application/json`` (or a ``+json`` type): 415 otherwise;
3. it must be one JSON document in UTF-8 (a leading BOM is ignored, as RFC 8259 allows), without duplicate keys,
   ``NaN`` or ``Infinity``, nested at most ``MAX_DEPTH`` deep: 400 naming what was found and where;
4. its strings, keys included, must be Unicode text without NUL and without lone surrogates (a ``"\\ud800"`` escape
   is valid JSON but no character: tokenizers and PostgreSQL refuse it): 422 naming the field.

Query strings are held to rule 4 as well (after percent-decoding, as UTF-8). The body then goes on to the route
unchanged; later ``receive`` calls reach the client's (so a route still hears a disconnect).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, InvalidText, MalformedJson, ServiceError, UnsupportedMediaType, to_problem

MAX_DEPTH = 32  # the deepest body a route takes is 4 levels; 32 leaves room and stops a recursion bomb early
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


class BodyGuard:
    """Refuse an oversized, non-JSON or malformed body before the app parses it; see the module docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_query(scope.get("query_string", b""))
            if scope["method"] not in _BODY_METHODS:
                await self.app(scope, receive, send)
                return
            headers = Headers(scope=scope)
            self._check_declared(headers.get("content-length"))
            body, more = await self._read(receive)
            if more is None:
                return  # the client went away while sending
            if body and scope["path"].startswith("/v1/"):
                check_json(body, headers.get("content-type"))
        except ServiceError as error:
            await to_problem(Request(scope), error)(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _check_declared(self, declared: str | None) -> None:
        if declared is None:
            return
        if not declared.isdigit():
            raise MalformedJson(f"expected a Content-Length of digits; found {declared[:40]!r}")
        if int(declared) > self.max_body_bytes:
            raise BodyTooLarge(int(declared), self.max_body_bytes, declared=True)

    async def _read(self, receive: Receive) -> tuple[bytes, bool | None]:
        """The whole body, or ``BodyTooLarge`` as soon as it passes the limit; ``None`` if the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge(size, self.max_body_bytes, declared=False)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def check_json(body: bytes, content_type: str | None) -> Any:
    """The JSON document in ``body``, or the error naming what is wrong with it (see the module docstring)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedJson(
            f"expected a body in UTF-8; found byte 0x{body[error.start]:02x} at offset {error.start}, "
            "which is not valid UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    try:
        document = json.loads(text, object_pairs_hook=_without_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise MalformedJson(
            f"expected one JSON document; found an error at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise MalformedJson(f"expected JSON nested at most {MAX_DEPTH} deep; found it nested deeper") from None
    _check_strings(document)
    return document


def check_query(query_string: bytes) -> None:
    """Every query parameter, decoded, is UTF-8 text without NUL; else ``InvalidText`` naming it."""
    for part in query_string.split(b"&"):
        raw_name, _, raw_value = part.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
        try:
            decoded = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidText(f"query.{name}", "text in UTF-8", "bytes that are not valid UTF-8") from None
        _check_text(f"query.{name}", decoded)


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise MalformedJson(f"expected each key once in an object; found {duplicate!r} more than once")
    return document


def _no_constant(name: str) -> None:
    raise MalformedJson(f"expected a JSON number; found {name}, which JSON does not have")


def _check_strings(document: Any) -> None:
    """Walk ``document`` without recursion: depth, and every key and string value (``InvalidText`` naming it)."""
    stack: list[tuple[str, Any, int]] = [("body", document, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(path, value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise MalformedJson(f"expected JSON nested at most {MAX_DEPTH} deep; found it nested deeper at {path}")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_text(f"{path} (a key)", key)
                stack.append((f"{path}.{key}", item, depth + 1))
            else:
                stack.append((f"{path}[{key}]", item, depth + 1))


def _check_text(field: str, value: str) -> None:
    found = _NOT_TEXT.search(value)
    if found is None:
        return
    char = found.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
    raise InvalidText(field, "Unicode text (no NUL, no lone surrogate)", f"{what} at character {found.start()}")
