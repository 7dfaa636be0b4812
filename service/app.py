"""The FastAPI app factory and its lifespan.

``create_app`` builds the app; the lifespan opens each of ``RESOURCES`` in order (and closes them in reverse):
today the model (registry seeded on first start, active version loaded, probe scored, batcher started). A part that
needs start-up work (the message store, training jobs) adds its own async context manager to ``RESOURCES`` and its
router to ``service.routes.ROUTERS``; everything it builds goes on ``app.state``, next to ``settings``, ``metrics``,
``registry``, ``model_slot`` and ``batcher``.

Serve with ``uvicorn --factory service.app:create_app`` (what ``diplotone serve`` and ``make run`` do).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model import Registry, Scorer, UnknownVersion
from model.prepare_engine import prepare_in_child
from service.batching import Batcher
from service.errors import install_error_handlers
from service.jobs import BUNDLED_CORPUS, run_training_jobs
from service.metrics import Metrics, MetricsMiddleware
from service.model_slot import ModelSlot
from service.process import MODEL_NICENESS, cap_heap_arenas, lower_priority, release_freed_memory, thread_ids
from service.routes import ROUTERS
from service.settings import Settings, get_settings
from service.store.deps import install_database_errors, open_store

log = logging.getLogger("diplotone.service")

Resource = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def serve_model(app: FastAPI) -> AsyncIterator[None]:
    """Load the active model version, prove it can score, and run the batcher until shutdown."""
    settings: Settings = app.state.settings
    cap_heap_arenas(HEAP_ARENAS)  # before loading: the threads that start from here on share them
    torch.set_num_threads(settings.model_threads)
    registry = Registry(settings.models_dir)
    slot = ModelSlot()
    load = model_loader(settings)
    # Loading and probing are blocking model work: keep them off the event loop like every other model call.
    await to_thread.run_sync(_load_active, registry, slot, load)
    batcher = Batcher(
        slot,
        batch_tokens=settings.batch_tokens,
        queue_size=settings.queue_size,
        metrics=app.state.metrics,
        max_requests=settings.max_batch_requests,
    )
    app.state.metrics.watch(lambda: batcher.depth, lambda: slot.probe.model_version if slot.ready else None)
    app.state.registry, app.state.model_slot, app.state.batcher = registry, slot, batcher
    app.state.load_scorer = load  # how any later version is loaded too (activation, promotion)
    batcher.start()
    log.info("serving model %s on engine %s from %s", slot.current().version, slot.current().engine.name, registry.root)
    try:
        yield
    finally:
        await to_thread.run_sync(batcher.stop)


RESOURCES: list[Resource] = [open_store, serve_model, run_training_jobs]


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
    install_database_errors(app)
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
    return app


def model_loader(settings: Settings) -> Callable[[Path], Scorer]:
    """``Scorer.from_pretrained`` with the configured engine and threads; an ONNX engine is checked for parity
    against torch on the corpus test split, and int8 calibrated on train-split texts (the corpus is read as a file:
    the service never imports ``training``)."""
    if settings.engine == "torch":
        load = partial(Scorer.from_pretrained, engine="torch")
        prepare: Callable[[Path], bool] | None = None
    else:
        texts = _split_texts((settings.corpus_dir or BUNDLED_CORPUS) / "messages.jsonl")
        if not texts["test"]:
            log.warning("engine %s will serve without a parity check: no test-split texts found", settings.engine)
        onnx: dict[str, Any] = {
            "engine": settings.engine,
            "threads": settings.model_threads,
            "parity_texts": texts["test"],
            "calibration_texts": texts["train"][:CALIBRATION_TEXTS],
        }
        load = partial(Scorer.from_pretrained, **onnx)
        prepare = partial(prepare_in_child, **onnx, niceness=MODEL_NICENESS)

    def load_and_tidy(folder: Path) -> Scorer:
        if prepare is not None:
            prepare(folder)  # export and parity in a child (unless cached): its memory goes back to the system
        before = thread_ids()
        scorer = load(folder)  # finds the ONNX files and the parity verdict cached
        lower_priority(thread_ids() - before)  # the engine's thread pool: model work yields to the event loop
        release_freed_memory()  # what the previous version left behind
        return scorer

    return load_and_tidy


CALIBRATION_TEXTS = 64  # train-split messages whose activations set the int8 smoothing scales
HEAP_ARENAS = 2  # one per model thread is enough; more only holds freed memory per thread (see service.process)


def _split_texts(path: Path) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {"train": [], "test": []}
    if not path.is_file():
        return texts
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("split") in texts:
            texts[record["split"]].append(record["text"])
    return texts


def _load_active(registry: Registry, slot: ModelSlot, load: Callable[[Path], Scorer]) -> None:
    registry.seed()  # first start: install the shipped versions and activate the newest
    if not registry.versions():
        raise UnknownVersion(
            f"the registry {registry.root} holds no model version and none is shipped in model/shipped; "
            "train one with `diplotone train --ship` or install one into the registry"
        )
    slot.swap(load(registry.active_path()))


def _version() -> str:
    try:
        return version("diplotone")
    except PackageNotFoundError:
        return "0+unknown"
