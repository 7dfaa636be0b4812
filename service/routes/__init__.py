"""The API's routers, included by ``create_app`` in this order. Add a router here to serve it."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import health, messages, models, pairs, scoring, timeline, training_runs, web

ROUTERS: list[APIRouter] = [
    scoring.router,
    health.router,
    messages.router,
    pairs.router,
    timeline.router,
    models.router,
    training_runs.router,
    web.router,  # the analyst page at /
]
