"""The FastAPI app factory and its lifespan: what is built at start-up, in which order, and put on ``app.state``.

``create_app`` builds the app; the lifespan opens each of ``RESOURCES`` in order (and closes them in reverse):

1. ``open_store``: the database (migrated) and the API key verifier: ``database``, ``key_verifier``;
2. ``serve_model``: the registry (seeded on first start), the model slot and the model switch, which loads the
   active version and proves it can score; then the batcher: ``registry``, ``model_slot``, ``model_switch``,
   ``batcher``;
3. ``watch_registry``: every ``registry_poll_s``, serve what the registry's pointer names if another replica (or the
   command line) moved it;
4. ``run_training_jobs``: the training jobs, after failing runs a crashed process left "running": ``training_jobs``.

``settings`` and ``metrics`` are there from ``create_app`` on. Routes read all of it through ``service.deps``. A new
part adds its own async context manager to ``RESOURCES`` and its router to ``service.routes.ROUTERS``.

Serve with ``uvicorn --factory service.app:create_app`` (what ``diplotone serve`` and ``make run`` do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anyio
import torch
from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model import Registry, Scorer, UnknownVersion
from model.contract import CORPUS_DIR
from model.prepare_engine import engine_request, is_prepared, prepare_in_child
from service.batching import Batcher
from service.body_guard import BodyGuard
from service.errors import install_error_handlers
from service.jobs import TrainingJobs, TrainingPlan
from service.keys import KeyVerifier
from service.metrics import Metrics, MetricsMiddleware
from service.model_slot import EnginePreparation, ModelSlot, ModelSwitch
from service.openapi import openapi_schema
from service.process import MODEL_NICENESS, cap_heap_arenas, lower_priority, release_freed_memory, thread_ids
from service.routes import ROUTERS
from service.settings import Settings, get_settings
from service.store.db import Database

log = logging.getLogger("diplotone.service")

Resource = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def open_store(app: FastAPI) -> AsyncIterator[None]:
    """Open the database (migrating it to the latest schema) and the API key verifier."""
    settings: Settings = app.state.settings
    database = await to_thread.run_sync(Database.open, settings.sqlalchemy_url)
    app.state.database, app.state.key_verifier = database, KeyVerifier()
    try:
        yield
    finally:
        database.close()


@asynccontextmanager
async def serve_model(app: FastAPI) -> AsyncIterator[None]:
    """Load the active model version, prove it can score, and run the batcher until shutdown."""
    settings: Settings = app.state.settings
    cap_heap_arenas(HEAP_ARENAS)  # before loading: the threads that start from here on share them
    torch.set_num_threads(settings.model_threads)
    registry = Registry(settings.models_dir)
    slot = ModelSlot()
    load, engine = model_loader(settings)
    switch = ModelSwitch(registry, slot, load, engine)  # every later version loads the same way
    # Loading and probing are blocking model work: keep them off the event loop like every other model call.
    await to_thread.run_sync(_serve_active, registry, switch)
    batcher = Batcher(
        slot,
        batch_tokens=settings.batch_tokens,
        queue_size=settings.queue_size,
        metrics=app.state.metrics,
        max_requests=settings.max_batch_requests,
        max_queue_wait_s=settings.max_queue_wait_s,
    )
    app.state.metrics.watch(lambda: batcher.depth, lambda: slot.probe.model_version if slot.ready else None)
    app.state.registry, app.state.model_slot, app.state.model_switch = registry, slot, switch
    app.state.batcher = batcher
    batcher.start()
    try:
        yield
    finally:
        await to_thread.run_sync(batcher.stop)


@asynccontextmanager
async def watch_registry(app: FastAPI) -> AsyncIterator[None]:
    """Look at the registry's active pointer every ``registry_poll_s`` and serve what it names (off at 0).

    This is how replicas on one registry serve one version: an activation or a promotion through any of them moves
    the pointer, and every other one swaps within a period, through the same load-probe-swap path.
    """
    period: float = app.state.settings.registry_poll_s
    switch: ModelSwitch = app.state.model_switch
    if period == 0:
        yield
        return

    async def follow() -> None:
        while True:
            await anyio.sleep(period)
            try:
                await to_thread.run_sync(switch.follow_pointer)
            except Exception:  # e.g. the shared folder briefly unreachable: look again next period
                log.exception("reading the registry's active pointer failed")

    watcher = asyncio.create_task(follow(), name="registry-watch")
    try:
        yield
    finally:
        watcher.cancel()  # a load in progress finishes first: the thread is not abandoned
        with suppress(asyncio.CancelledError):
            await watcher


@asynccontextmanager
async def run_training_jobs(app: FastAPI) -> AsyncIterator[None]:
    """The training jobs, after the store and the model are up; a running trainer is ended at shutdown."""
    settings: Settings = app.state.settings
    jobs = TrainingJobs(
        app.state.database,
        TrainingPlan.from_settings(settings),
        app.state.model_switch,
        lease_s=settings.training_lease_s,
    )
    orphans = await to_thread.run_sync(jobs.recover)
    if orphans:
        log.warning("marked training runs %s failed: the service restarted while they ran", orphans)
    app.state.training_jobs = jobs
    try:
        yield
    finally:
        await to_thread.run_sync(jobs.stop)


RESOURCES: list[Resource] = [open_store, serve_model, watch_registry, run_training_jobs]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open every resource in order; a failure stops start-up with its own error (startup fails loudly)."""
    async with AsyncExitStack() as stack:
        for resource in RESOURCES:
            await stack.enter_async_context(resource(app))
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the diplotone API; ``settings`` default to the environment (``DIPLOTONE_*``)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="diplotone",
        summary="How effusive is a diplomatic message? Scores 0-100 with explanations.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)  # inside the metrics: its 413s count
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origins:  # off unless configured: a key-bearing browser call from any page is not a default
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["Retry-After", "Location"],
        )
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = partial(openapi_schema, app)  # type: ignore[method-assign]  # errors, limits, open operations
    return app


def model_loader(settings: Settings) -> tuple[Callable[[Path], Scorer], EnginePreparation | None]:
    """How the switch opens a version: ``Scorer.from_pretrained`` with the configured engine and threads, and for an
    ONNX engine how it is prepared. That engine is checked for parity against torch on the corpus test split, and int8
    calibrated on train-split texts (the corpus is read as a file: the service never imports ``training``)."""
    onnx = engine_request(settings.engine, settings.model_threads, settings.corpus_dir or CORPUS_DIR)
    if onnx is None:
        return _tidy(partial(Scorer.from_pretrained, engine="torch")), None
    preparation = EnginePreparation(
        prepared=partial(is_prepared, engine=settings.engine, parity_texts=onnx["parity_texts"]),
        # export and parity in a child: its memory (about a gigabyte for MiniLM) goes back to the system when it exits
        prepare=partial(prepare_in_child, **onnx, niceness=MODEL_NICENESS),
        reference=_tidy(partial(Scorer.from_pretrained, engine="torch")),
    )
    return _tidy(partial(_load_prepared_first, onnx)), preparation


def _load_prepared_first(onnx: dict[str, Any], folder: Path) -> Scorer:
    """A version whose engine is prepared for these parity texts opens without its torch encoder or transformers
    (a restart, a promoted candidate: about a second sooner, and the encoder's memory never taken); else the full
    load, which exports and checks what is missing."""
    if is_prepared(folder, onnx["engine"], onnx["parity_texts"]):
        prepared = Scorer.from_prepared(folder, engine=onnx["engine"], threads=onnx["threads"])
        if prepared is not None:
            return prepared
    return Scorer.from_pretrained(folder, **onnx)


def _tidy(load: Callable[[Path], Scorer]) -> Callable[[Path], Scorer]:
    """``load``, with the engine's new threads at the model's lower priority and the heap given back afterwards."""

    def load_and_tidy(folder: Path) -> Scorer:
        before = thread_ids()
        scorer = load(folder)
        lower_priority(thread_ids() - before)  # the engine's thread pool: model work yields to the event loop
        release_freed_memory()  # what the previous version left behind
        return scorer

    return load_and_tidy


HEAP_ARENAS = 2  # one per model thread is enough; more only holds freed memory per thread (see service.process)


def _serve_active(registry: Registry, switch: ModelSwitch) -> None:
    registry.seed()  # first start: install the shipped versions and activate the newest
    if not registry.versions():
        raise UnknownVersion(
            f"the registry {registry.root} holds no model version and none is shipped in model/shipped; "
            "train one with `diplotone train --ship` or install one into the registry"
        )
    switch.serve_active()


def _version() -> str:
    try:
        return version("diplotone")
    except PackageNotFoundError:
        return "0+unknown"
