"""Retraining runs: snapshot the labelled data, train in a separate process, follow it, promote or keep the model.

``TrainingJobs.start`` writes the snapshot (``service.store.snapshot``), starts ``python -m training --gate`` with a
bounded thread count, and returns at once (the API answers 202). A watcher thread copies the trainer's progress file
into the run's row and, when the process ends, reads its outcome file:

- promoted: the trainer has installed the candidate and pointed the registry at it; the service loads it and swaps it
  into the serving slot (``ModelSwitch``), so requests never see a gap;
- rejected: the gate's reasons are recorded, nothing changes;
- anything else (an error, a crash, a kill): the run is failed, and if the registry's ``active`` pointer no longer
  names the version being served (a trainer killed between activating and reporting), it is pointed back.

One run at a time: a second ``start`` while one runs is ``RunInProgress`` (409), also enforced by a partial unique
index in the database. A service that stops ends its run (failed, "service stopped"); one that crashed finds the run
still "running" at its next start, and ``recover`` marks it failed and ends the orphaned trainer if it still runs.

Decisions worth knowing:

- activating a version while a run goes is allowed (a rollback must always be possible); the run's gate then compares
  its candidate with whatever is active when training ends, and a promotion replaces it;
- the jobs assume one service process per data directory (``diplotone serve --workers 1``): a promotion swaps the
  model of the process that started the run only, and a process that starts would take a sibling's run for an orphan.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette import status

import service
from model import Registry, Scorer
from service.errors import ServiceError
from service.model_slot import ModelSlot
from service.settings import Settings
from service.store.db import Database
from service.store.models import TrainingRun, utcnow
from service.store.snapshot import Snapshot, missing_corpus_files, write_snapshot

log = logging.getLogger("diplotone.jobs")

RUNNING, PROMOTED, REJECTED, FAILED = "running", "promoted", "rejected", "failed"
SOURCE_ROOT = Path(service.__file__).resolve().parent.parent  # holds the model, training and service packages
BUNDLED_CORPUS = SOURCE_ROOT / "training" / "data"  # read as files: the service never imports training
LOG_TAIL_LINES = 15


class RunInProgress(ServiceError):
    status = status.HTTP_409_CONFLICT
    slug, title = "training-run-in-progress", "A training run is in progress"

    def __init__(self, run_id: int | None) -> None:
        where = f"run {run_id} is still running (GET /v1/training-runs/{run_id})" if run_id else "one is running"
        super().__init__(f"one training run at a time; {where}. Start again when it ends", running_run_id=run_id)


class RetrainingUnavailable(ServiceError):
    status = status.HTTP_503_SERVICE_UNAVAILABLE
    slug, title = "retraining-unavailable", "Retraining unavailable"


@dataclass(frozen=True)
class TrainingPlan:
    """Where a run reads and writes, and how the trainer is started."""

    corpus_dir: Path
    work_dir: Path  # snapshots/ and runs/ go here
    registry_dir: Path
    threads: int = 1
    base_model: str | None = None
    epochs: int | None = None
    max_steps: int | None = None
    warm_start: bool = False
    replay: int = 400
    user_weight: int = 1
    command: tuple[str, ...] = (sys.executable, "-m", "training")

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingPlan:
        return cls(
            corpus_dir=(settings.corpus_dir or BUNDLED_CORPUS).resolve(),
            work_dir=settings.data_dir.resolve(),
            registry_dir=settings.models_dir.resolve(),
            threads=settings.training_threads,
            base_model=settings.base_model,
            epochs=settings.training_epochs,
            max_steps=settings.training_max_steps,
            warm_start=settings.training_warm_start,
            replay=settings.training_replay,
            user_weight=settings.training_user_weight,
        )

    def paths(self, run_id: int) -> RunPaths:
        folder = self.work_dir / "runs" / str(run_id)
        return RunPaths(
            self.work_dir / "snapshots" / f"run-{run_id}.json",
            folder / "progress.json",
            folder / "outcome.json",
            folder / "train.log",
        )

    def argv(self, paths: RunPaths) -> list[str]:
        argv = [
            *self.command,
            "--snapshot",
            str(paths.snapshot),
            "--registry",
            str(self.registry_dir),
            "--progress",
            str(paths.progress),
            "--outcome",
            str(paths.outcome),
            "--threads",
            str(self.threads),
            "--gate",
            "--user-weight",
            str(self.user_weight),
        ]
        if self.warm_start:
            argv += ["--warm-start", "active", "--replay", str(self.replay)]
        for flag, value in (("--base", self.base_model), ("--epochs", self.epochs), ("--max-steps", self.max_steps)):
            if value is not None:
                argv += [flag, str(value)]
        return argv

    def environment(self) -> dict[str, str]:
        """The trainer's environment: bounded math threads, and the source tree importable."""
        threads = str(self.threads)
        path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": path,
        }


@dataclass(frozen=True)
class RunPaths:
    snapshot: Path
    progress: Path
    outcome: Path
    log: Path


class ModelSwitch:
    """Puts a registry version into the serving slot, one switch at a time.

    The version is loaded and probed before anything changes, so a version that cannot serve never becomes active;
    the registry pointer moves before the slot, so a crash in between restarts on the new version.
    """

    def __init__(
        self, registry: Registry, slot: ModelSlot, load: Callable[[Path], Scorer] = Scorer.from_pretrained
    ) -> None:
        self.registry = registry
        self.slot = slot
        self.load = load
        self._lock = threading.Lock()

    @property
    def serving(self) -> str | None:
        return self.slot.current().version if self.slot.ready else None

    def activate(self, version: str) -> str:
        """Serve ``version`` (``UnknownVersion``, ``ArtifactCorrupt`` or the probe's error if it cannot be)."""
        with self._lock:
            scorer = self.load(self.registry.path(version))
            previous = self.registry.active_version()
            self.registry.activate(version)
            try:
                self.slot.swap(scorer)
            except Exception:
                if previous is not None:
                    self.registry.activate(previous)
                raise
            return scorer.version

    def realign(self) -> None:
        """Point the registry back at the serving version if something else moved it (a trainer that died)."""
        with self._lock:
            serving = self.serving
            if serving is not None and self.registry.active_version() != serving:
                log.warning(
                    "registry pointed at %s while %s is served; pointing it back",
                    self.registry.active_version(),
                    serving,
                )
                self.registry.activate(serving)


@dataclass
class _Active:
    run_id: int
    process: subprocess.Popen[bytes]
    paths: RunPaths
    thread: threading.Thread = field(init=False)


class TrainingJobs:
    """Starts and follows retraining runs; one at a time."""

    def __init__(self, database: Database, plan: TrainingPlan, switch: ModelSwitch, poll_s: float = 0.5) -> None:
        self.database = database
        self.plan = plan
        self.switch = switch
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._active: _Active | None = None
        self._stopping = False

    def recover(self) -> list[int]:
        """Mark runs left "running" by a previous process failed, ending their trainers; return their ids."""
        with self.database.sessions() as session:
            orphans = list(session.scalars(select(TrainingRun).where(TrainingRun.status == RUNNING)))
            for run in orphans:
                ended = _end_orphan(run.pid, self.plan.paths(run.id).outcome)
                _finish(
                    run,
                    FAILED,
                    error="the service restarted during the run"
                    + ("; its training process was ended" if ended else ""),
                )
            session.commit()
        return [run.id for run in orphans]

    def start(self, requested_by: str | None = None) -> TrainingRun:
        """Snapshot the data and start a trainer; return the run (status "running")."""
        with self._lock:
            if self._active is not None and self._active.thread.is_alive():
                raise RunInProgress(self._active.run_id)
            if self._stopping:
                raise RetrainingUnavailable("the service is shutting down; start the run after it restarts")
            missing = missing_corpus_files(self.plan.corpus_dir)
            if missing:
                raise RetrainingUnavailable(
                    f"the bundled corpus is incomplete: expected {', '.join(str(p) for p in missing)}; not found",
                    missing=[str(p) for p in missing],
                )
            run_id = self._insert_run(requested_by)
            paths = self.plan.paths(run_id)
            try:
                snapshot = self._snapshot(paths)
                process = self._spawn(paths)
            except Exception as error:
                reason = f"could not start: {error}"
                self._update(run_id, lambda run: _finish(run, FAILED, error=reason))
                raise
            self._update(run_id, lambda run: _started(run, snapshot, process.pid))
            active = _Active(run_id, process, paths)
            active.thread = threading.Thread(
                target=self._watch, args=(active,), name=f"training-run-{run_id}", daemon=True
            )
            self._active = active
            active.thread.start()
        log.info("training run %d started (pid %d, snapshot %s)", run_id, process.pid, snapshot.sha256[:12])
        return self.get(run_id)

    def get(self, run_id: int) -> TrainingRun:
        with self.database.sessions() as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise LookupError(f"no training run {run_id}")
            return run

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the current run (if any) has ended and been recorded."""
        active = self._active
        if active is not None:
            active.thread.join(timeout_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the current run's trainer (its run fails: "service stopped") and wait for it to be recorded."""
        with self._lock:
            self._stopping = True
            active = self._active
        if active is None or not active.thread.is_alive():
            return
        active.process.terminate()
        try:
            active.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            active.process.kill()
        active.thread.join()

    # ----------------------------------------------------------------------------------------------- internals

    def _insert_run(self, requested_by: str | None) -> int:
        with self.database.sessions() as session:
            run = TrainingRun(status=RUNNING, requested_by=requested_by, previous_version=self.switch.serving)
            session.add(run)
            try:
                session.commit()
            except IntegrityError:
                # Another process of this service holds the one running slot (the partial unique index).
                session.rollback()
                running = session.scalars(select(TrainingRun.id).where(TrainingRun.status == RUNNING)).first()
                raise RunInProgress(running) from None
            return run.id

    def _snapshot(self, paths: RunPaths) -> Snapshot:
        with self.database.sessions() as session:
            return write_snapshot(session, self.plan.corpus_dir, paths.snapshot)

    def _spawn(self, paths: RunPaths) -> subprocess.Popen[bytes]:
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        with paths.log.open("wb") as log_file:  # the child keeps its own handle
            return subprocess.Popen(
                self.plan.argv(paths),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.plan.environment(),
            )

    def _update(self, run_id: int, change: Callable[[TrainingRun], None]) -> None:
        with self.database.sessions() as session:
            run = session.get(TrainingRun, run_id)
            assert run is not None  # rows of runs are never deleted
            change(run)
            session.commit()

    def _watch(self, active: _Active) -> None:
        last_progress: dict[str, Any] | None = None
        code: int | None = None
        while code is None:
            try:
                code = active.process.wait(self.poll_s)
            except subprocess.TimeoutExpired:
                code = None
            progress = _read_json(active.paths.progress)
            if progress is not None and progress != last_progress:
                last_progress = progress
                self._record_progress(active.run_id, progress)
        try:
            self._conclude(active, code)
        except Exception:  # the watcher must never die silently: the run would stay "running" forever
            log.exception("training run %d: recording its end failed", active.run_id)
            self._update(active.run_id, lambda run: _finish(run, FAILED, error="recording the outcome failed"))

    def _record_progress(self, run_id: int, progress: dict[str, Any]) -> None:
        def record(run: TrainingRun) -> None:
            run.progress = json_safe(progress)

        self._update(run_id, record)

    def _conclude(self, active: _Active, code: int) -> None:
        outcome = _read_json(active.paths.outcome)
        error: str | None
        if code == 0 and outcome is not None and "version" in outcome:
            error = self._adopt(outcome)
        elif self._stopping:
            error = "the service stopped during the run; its training process was ended"
        else:
            error = _describe_failure(code, outcome, active.paths.log)
        if error is not None:
            self.switch.realign()
            log.warning("training run %d failed: %s", active.run_id, error)
            self._update(active.run_id, lambda run: _finish(run, FAILED, outcome=outcome, error=error))
            return
        assert outcome is not None
        verdict = PROMOTED if outcome.get("promoted") else REJECTED
        log.info("training run %d: candidate %s %s", active.run_id, outcome.get("version"), verdict)
        self._update(active.run_id, lambda run: _finish(run, verdict, outcome=outcome))

    def _adopt(self, outcome: dict[str, Any]) -> str | None:
        """Serve a promoted candidate; return why not if it cannot be served."""
        if not outcome.get("promoted"):
            return None
        try:
            self.switch.activate(str(outcome["version"]))
        except Exception as error:
            return f"candidate {outcome['version']} passed the gate but could not be served: {error}"
        return None


@asynccontextmanager
async def run_training_jobs(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan resource: the model switch and the training jobs, after the store and the model are up.

    At start, runs left "running" by a crashed process are failed; at shutdown, a running trainer is ended.
    """
    switch = ModelSwitch(app.state.registry, app.state.model_slot, app.state.load_scorer)  # the configured engine
    jobs = TrainingJobs(app.state.database, TrainingPlan.from_settings(app.state.settings), switch)
    orphans = await to_thread.run_sync(jobs.recover)
    if orphans:
        log.warning("marked training runs %s failed: the service restarted while they ran", orphans)
    app.state.model_switch, app.state.training_jobs = switch, jobs
    try:
        yield
    finally:
        await to_thread.run_sync(jobs.stop)


def get_training_jobs(request: Request) -> TrainingJobs:
    jobs: TrainingJobs = request.app.state.training_jobs
    return jobs


def get_model_switch(request: Request) -> ModelSwitch:
    switch: ModelSwitch = request.app.state.model_switch
    return switch


JobsDep = Annotated[TrainingJobs, Depends(get_training_jobs)]
SwitchDep = Annotated[ModelSwitch, Depends(get_model_switch)]


def _started(run: TrainingRun, snapshot: Snapshot, pid: int) -> None:
    run.pid = pid
    run.snapshot_path = str(snapshot.path)
    run.snapshot_sha256 = snapshot.sha256
    run.snapshot_counts = snapshot.counts


def _finish(run: TrainingRun, verdict: str, *, outcome: dict[str, Any] | None = None, error: str | None = None) -> None:
    run.status = verdict
    run.finished_at = utcnow()
    run.error = error
    if outcome is not None:
        run.candidate_version = outcome.get("version")
        run.reasons = list(outcome.get("reasons") or [])
        run.metrics = json_safe(outcome.get("metrics"))


def _describe_failure(code: int, outcome: dict[str, Any] | None, log_path: Path) -> str:
    if outcome is not None and "error" in outcome:
        return f"training failed: {outcome['error']}"
    if code < 0:
        return f"the training process was killed by {signal.Signals(-code).name}"
    if code == 0:
        return "the training process exited without writing its outcome"
    return f"the training process exited with code {code}; its log ends:\n{_tail(log_path)}"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if it is absent or not (yet) a whole JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def json_safe(value: Any) -> Any:
    """A copy of ``value`` with NaN and infinities as None: JSON has no such numbers (a metric without pairs is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def _end_orphan(pid: int | None, outcome: Path) -> bool:
    """Terminate ``pid`` if it is still the trainer of that run (its command line names the run's outcome file)."""
    if pid is None:
        return False
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone, or no /proc on this system: nothing we can safely end
        return False
    if str(outcome) not in command_line.split("\0"):
        return False  # the pid now belongs to some other process
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True
