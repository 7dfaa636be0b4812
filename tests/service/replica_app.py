"""The service as the replica tests run it, in a process of its own: the real app, whose training runs start the
stand-in trainer ``python -c $DIPLOTONE_TEST_TRAINER`` instead of ``python -m training`` (no model is trained).

``uvicorn --factory tests.service.replica_app:create_app`` with the usual ``DIPLOTONE_*`` settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI

from service import app as service_app
from service.jobs import TrainingJobs

TRAINER_VARIABLE = "DIPLOTONE_TEST_TRAINER"


@asynccontextmanager
async def use_stand_in_trainer(app: FastAPI) -> AsyncIterator[None]:
    jobs: TrainingJobs = app.state.training_jobs
    jobs.plan = replace(jobs.plan, command=(sys.executable, "-c", os.environ[TRAINER_VARIABLE]))
    yield


def create_app() -> FastAPI:
    if use_stand_in_trainer not in service_app.RESOURCES:
        service_app.RESOURCES.append(use_stand_in_trainer)  # after run_training_jobs, in this process only
    return service_app.create_app()
