"""Every typed dependency of the routes: what the lifespan (``service.app``) put on ``app.state``, read through
``app_state``, the one accessor, which answers ``NotReady`` (503) while it is not there yet.

Tests swap any of these through ``app.dependency_overrides``; settings are overridden the same way
(``create_app(settings)`` does it for its own settings). The key checks built on them are in ``service.auth``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from model import Registry
from service.batching import Batcher
from service.errors import NotReady
from service.jobs import TrainingJobs
from service.keys import KeyVerifier
from service.metrics import Metrics
from service.model_slot import ModelSlot, ModelSwitch
from service.settings import Settings, get_settings
from service.store.db import Database


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


def get_model_switch(request: Request) -> ModelSwitch:
    switch: ModelSwitch = app_state(request, "model_switch")
    return switch


def get_training_jobs(request: Request) -> TrainingJobs:
    jobs: TrainingJobs = app_state(request, "training_jobs")
    return jobs


def get_database(request: Request) -> Database:
    database: Database = app_state(request, "database")
    return database


def get_key_verifier(request: Request) -> KeyVerifier:
    """The app's key verifier (made with the store); one per app so that tests never share a memory of keys."""
    verifier: KeyVerifier = app_state(request, "key_verifier")
    return verifier


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A session for one request; whatever it did not commit is rolled back when the request ends."""
    with database.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SlotDep = Annotated[ModelSlot, Depends(get_slot)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
SwitchDep = Annotated[ModelSwitch, Depends(get_model_switch)]
JobsDep = Annotated[TrainingJobs, Depends(get_training_jobs)]
SessionDep = Annotated[Session, Depends(get_session)]
