"""The OpenAPI document as the service behaves: every error as problem+json, the body guard's answers, open operations.

FastAPI documents a 422 of its own shape (``HTTPValidationError``, ``application/json``) and knows nothing of what
``service.body_guard`` answers before a route runs, nor that a key is optional on some routes. ``openapi_schema``
builds FastAPI's document once and corrects it:

- every 422 is the problem+json the handler gives (``service.errors``);
- an operation that takes a body also documents 400 (malformed JSON), 413 (body too large, unless the route has its
  own 413) and 415 (not JSON); every operation documents 422 (a field out of its schema, or text that is no text:
  a NUL, a lone surrogate);
- an operation whose key gate is open under the app's settings lists anonymous access (``{}``) beside the key
  schemes; a closed one keeps only the key schemes and documents its 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.auth import OPTIONAL_KEY, MissingKey, ScopeTooLow, is_open
from service.errors import (
    PROBLEM_JSON,
    BodyTooLarge,
    MalformedJson,
    UnsupportedMediaType,
    leaf_routes,
    problem_responses,
)
from service.keys import Principal
from service.schemas import NO_NUL
from service.settings import Settings

# One example a status: a 422 is most often a field out of its schema; ``invalid-text`` (a NUL, a lone surrogate) and
# ``empty-text`` share the status and the Problem schema.
_INVALID = RequestValidationError(
    [{"loc": ("body", "annotator"), "msg": "Field required", "type": "missing", "input": {}}]
)
_EXAMPLE_KEY = Principal(key_id="3f9a2c1d4e5b6a70", name="analyst", scope="score")


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """``app``'s OpenAPI, corrected as the module docstring says; built once and kept (as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    settings: Settings = app.state.settings
    document = FastAPI.openapi(app)
    document.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    document.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    for route in leaf_routes(app.routes):
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _correct(operation, route, settings)
    _no_nul(document.get("components", {}).get("schemas", {}))
    for path in document["paths"].values():
        _no_nul(
            [
                parameter.get("schema", {})
                for operation in path.values()
                for parameter in operation.get("parameters", [])
            ]
        )
    app.openapi_schema = document
    return document


def _no_nul(node: Any) -> None:
    """Say of every plain string in ``node`` that it holds no NUL (the body guard refuses one anywhere)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and "pattern" not in node and "format" not in node and "enum" not in node:
            node["pattern"] = NO_NUL
        for value in node.values():
            _no_nul(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul(value)


def _correct(operation: dict[str, Any], route: APIRoute, settings: Settings) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    instance = route.path_format
    extra: list[Exception] = [_INVALID]
    if "requestBody" in operation:
        extra += [
            MalformedJson("expected each key once in an object; found 'text' more than once"),
            BodyTooLarge(52_428_800, 8_388_608, declared=True),
            UnsupportedMediaType("text/plain"),
        ]
    for status, response in problem_responses(instance, *extra).items():
        if str(status) == "422" and "422" in responses and PROBLEM_JSON in responses["422"].get("content", {}):
            continue
        if str(status) == "422" or str(status) not in responses:
            responses[str(status)] = response
    gates = [gate for gate in OPTIONAL_KEY if _uses(route.dependant, gate)]
    if gates:
        gate = gates[0]
        if is_open(gate, settings):
            operation["security"] = [{}, *operation.get("security", [])]
        else:
            required = "read" if gate.__name__ == "read_access" else "score"
            auth = problem_responses(instance, MissingKey(required), ScopeTooLow(_EXAMPLE_KEY, required))
            for status, response in auth.items():
                if required == "score" and status == 403:
                    continue  # every key has scope score
                responses.setdefault(str(status), response)


def _uses(dependant: Dependant, gate: object) -> bool:
    return any(dependency.call is gate or _uses(dependency, gate) for dependency in dependant.dependencies)
