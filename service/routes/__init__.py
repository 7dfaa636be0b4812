"""The API's routers, included by ``create_app`` in this order. Add a router here to serve it."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import health, scoring

ROUTERS: list[APIRouter] = [scoring.router, health.router]
