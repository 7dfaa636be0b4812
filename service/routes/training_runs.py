"""POST /v1/training-runs (202) and GET /v1/training-runs[/{id}]: retrain on the labelled messages, follow it.

Starting needs an ``admin`` key; following is open like scoring. See ``service.jobs`` for what a run does, and
``model.contract`` for the shapes it reports.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette import status

from model.contract import RunStatus
from service.auth import AdminKey, ScoreAccess
from service.deps import JobsDep, SessionDep
from service.errors import RunInProgress, RunNotFound, problem_responses
from service.routes.messages import AUTH_ERRORS
from service.schemas import MAX_ID
from service.store.models import TrainingRun

router = APIRouter(tags=["training"])

RunId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Progress(BaseModel):
    phase: str | None = None
    step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eta_seconds: float | None = None


class SnapshotInfo(BaseModel):
    path: str | None
    sha256: str | None
    counts: dict[str, int] | None = Field(description="messages and pairs in it; stored ones counted apart")


class TrainingRunPublic(BaseModel):
    id: int
    status: RunStatus
    created_at: dt.datetime
    finished_at: dt.datetime | None
    requested_by: str | None = Field(description="the id of the API key that started it")
    previous_version: str | None = Field(description="the version served when the run started")
    candidate_version: str | None
    promoted: bool | None = Field(description="null while running")
    reasons: list[str] = Field(description="why the gate rejected the candidate")
    metrics: dict[str, Any] | None = Field(description="the candidate's test and validation figures")
    error: str | None
    progress: Progress | None
    snapshot: SnapshotInfo

    @classmethod
    def of(cls, run: TrainingRun) -> TrainingRunPublic:
        return cls(
            id=run.id,
            status=RunStatus(run.status),
            created_at=run.created_at,
            finished_at=run.finished_at,
            requested_by=run.requested_by,
            previous_version=run.previous_version,
            candidate_version=run.candidate_version,
            promoted=None if run.status == RunStatus.RUNNING else run.status == RunStatus.PROMOTED,
            reasons=run.reasons or [],
            metrics=run.metrics,
            error=run.error,
            progress=Progress.model_validate(run.progress) if run.progress else None,
            snapshot=SnapshotInfo(path=run.snapshot_path, sha256=run.snapshot_sha256, counts=run.snapshot_counts),
        )


class TrainingRunList(BaseModel):
    runs: list[TrainingRunPublic]


@router.post(
    "/v1/training-runs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a retraining run",
    responses={**AUTH_ERRORS, **problem_responses("/v1/training-runs", RunInProgress(3))},
)
def start_training_run(request: Request, response: Response, key: AdminKey, jobs: JobsDep) -> TrainingRunPublic:
    """Snapshot the labelled messages and pairs with the bundled corpus and train a candidate on them.

    The candidate replaces the serving model only if the gate finds it no worse on the fixed test split.
    """
    run = jobs.start(requested_by=key.key_id)
    response.headers["Location"] = str(request.url_for("get_training_run", run_id=run.id))
    return TrainingRunPublic.of(run)


@router.get("/v1/training-runs", summary="Recent training runs")
def list_training_runs(
    session: SessionDep,
    access: ScoreAccess,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> TrainingRunList:
    """The latest runs, newest first."""
    runs = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit))
    return TrainingRunList(runs=[TrainingRunPublic.of(run) for run in runs])


@router.get(
    "/v1/training-runs/{run_id}",
    summary="Follow a training run",
    responses=problem_responses("/v1/training-runs/7", RunNotFound(7)),
)
def get_training_run(run_id: RunId, session: SessionDep, access: ScoreAccess) -> TrainingRunPublic:
    """Progress (step, epoch, loss, ETA) while it runs; the outcome (promoted, rejected with reasons, failed) after."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return TrainingRunPublic.of(run)
