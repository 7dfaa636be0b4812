"""Typed dependencies: what a route needs, taken from ``app.state`` where the lifespan put it.

Tests swap any of these through ``app.dependency_overrides``; settings are overridden the same way
(``create_app(settings)`` does it for its own settings).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from model import Registry
from service.batching import Batcher
from service.errors import NotReady
from service.metrics import Metrics
from service.model_slot import ModelSlot
from service.settings import Settings, get_settings


def app_state(request: Request, name: str) -> Any:
    """``app.state.<name>``, or ``NotReady`` (503) while the lifespan has not put it there yet."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady(f"the service has not finished starting: no {name} yet")
    return value


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = app_state(request, "metrics")
    return metrics


def get_registry(request: Request) -> Registry:
    registry: Registry = app_state(request, "registry")
    return registry


def get_slot(request: Request) -> ModelSlot:
    slot: ModelSlot = app_state(request, "model_slot")
    if not slot.ready:
        raise NotReady("no model has passed its probe yet")
    return slot


def get_batcher(request: Request) -> Batcher:
    batcher: Batcher = app_state(request, "batcher")
    if not batcher.running:
        raise NotReady("the scoring worker is not running")
    return batcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SlotDep = Annotated[ModelSlot, Depends(get_slot)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
