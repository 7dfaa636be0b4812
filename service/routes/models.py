"""GET /v1/models and POST /v1/models/{version}/activate: the registry's versions, and switching between them.

Activating an older version is the rollback. It goes through ``ModelSwitch`` (``service.model_slot``): the version is
loaded and probed before anything changes; the registry pointer then moves and the serving slot swaps, so no request
fails and none is scored by a half-loaded model.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from model import UnknownVersion
from model.contract import json_safe
from service.auth import AdminKey, ScoreAccess
from service.deps import RegistryDep, SwitchDep
from service.errors import problem_responses
from service.routes.messages import AUTH_ERRORS

router = APIRouter(tags=["models"])

Version = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class ModelVersion(BaseModel):
    version: str
    active: bool = Field(description="the registry's active version (what a restart would serve)")
    serving: bool = Field(description="the version answering requests now")
    created: str
    metrics: dict[str, Any] = Field(description="test and validation figures (null where undefined)")


class ModelList(BaseModel):
    serving: str | None
    versions: list[ModelVersion]


class Activated(BaseModel):
    version: str
    previous: str | None = Field(description="the version served before")


@router.get("/v1/models", summary="List model versions")
def list_models(registry: RegistryDep, switch: SwitchDep, access: ScoreAccess) -> ModelList:
    """Every version in the registry with its figures; which is active and which is serving."""
    serving = switch.serving
    versions = [
        ModelVersion(
            version=info.version,
            active=info.active,
            serving=info.version == serving,
            created=info.created,
            metrics=json_safe(info.metrics),
        )
        for info in registry.versions()
    ]
    return ModelList(serving=serving, versions=versions)


@router.post(
    "/v1/models/{version}/activate",
    summary="Serve a version (rollback)",
    responses={
        **AUTH_ERRORS,
        **problem_responses(
            "/v1/models/2026-01-01-lora-000000/activate",
            UnknownVersion("no model version '2026-01-01-lora-000000'; the registry holds: tiny-0001"),
        ),
    },
)
def activate_model(version: Version, key: AdminKey, switch: SwitchDep) -> Activated:
    """Load, probe and serve `version`; the registry's active pointer follows. Needs an `admin` key."""
    previous = switch.serving
    return Activated(version=switch.activate(version), previous=previous)
