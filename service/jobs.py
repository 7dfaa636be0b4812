"""Retraining runs: snapshot the labelled data, train in a separate process, follow it, then serve or keep the model.

``TrainingJobs.start`` writes the snapshot (``service.store.snapshot``), starts ``python -m training`` with a bounded
thread count (``TrainingPlan``), and returns at once (the API answers 202). A watcher thread copies the trainer's
progress into the run's row and, when the process ends, reads its outcome (shapes and file names: ``model.contract``):

- passed the gate: the service serves the candidate through ``ModelSwitch`` (load, probe, activate, swap), so
  requests never see a gap; the run is "promoted". With an ONNX engine configured the trainer has already prepared
  the candidate's engine (export, int8 calibration, parity; ``--prepare-engine``, phase "preparing"), so the swap
  only opens cached files. A candidate that cannot be served fails the run, and nothing moves;
- rejected: the gate's reasons are recorded, nothing changes;
- anything else (an error, a crash, a kill): the run is failed. The trainer never touches the ``active`` pointer, so
  there is nothing to undo.

One run at a time across every replica on the database: the run's "running" row is the lease. A partial unique index
admits one such row, so of two replicas that start a run at once one inserts it and the other gets ``RunInProgress``
(409). The replica that holds it renews it (``heartbeat_at``, from the watcher thread, every quarter of
``training_lease_s``); a row whose lease has not been renewed for ``training_lease_s`` is failed by whichever replica
next starts a run or starts up, so a replica that died (kill -9, a lost machine) frees it after that long. A replica
that finds its own run taken away that way ends its trainer and records nothing more.

A service that stops ends its run (failed, "service stopped"); one that crashed finds the run still "running" at its
next start on the same machine (the row names ``hostname:pid``, and that pid is gone), and ``recover`` marks it failed
at once and ends the orphaned trainer if it still runs; a run a live sibling holds is left alone.

Decisions worth knowing:

- activating a version while a run goes is allowed (a rollback must always be possible); the run's gate then compares
  its candidate with whatever is active when training ends, and a pass replaces it;
- a promotion swaps the model of the replica that ran it at once; the others follow the registry's pointer within
  ``registry_poll_s`` (``service.app.watch_registry``). Replicas need PostgreSQL: SQLite is for one machine.
- the lease compares timestamps written by different machines: their clocks must agree (NTP) to well within the lease.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from model.contract import (
    CORPUS_DIR,
    OUTCOME_FILE,
    PROGRESS_FILE,
    SOURCE_ROOT,
    RunOutcome,
    RunProgress,
    RunStatus,
    json_safe,
    missing_corpus_files,
    read_outcome,
    read_progress,
    write_atomically,
)
from model.prepare_engine import engine_request
from service.errors import RetrainingUnavailable, RunInProgress
from service.model_slot import ModelSwitch
from service.replica import gone_from_this_host, on_this_host, replica_id
from service.settings import Settings
from service.store.db import Database
from service.store.models import TrainingRun, utcnow
from service.store.snapshot import Snapshot, write_snapshot

log = logging.getLogger("diplotone.jobs")

LOG_TAIL_LINES = 15
RENEWALS_PER_LEASE = 4  # a missed renewal or two (a slow database) does not lose the lease


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
    engine: str = "torch"  # the serving engine: a run prepares its candidate's (model.prepare_engine) before it ends
    engine_threads: int | None = None
    command: tuple[str, ...] = (sys.executable, "-m", "training")

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingPlan:
        return cls(
            corpus_dir=(settings.corpus_dir or CORPUS_DIR).resolve(),
            work_dir=settings.data_dir.resolve(),
            registry_dir=settings.models_dir.resolve(),
            threads=settings.training_threads,
            base_model=settings.base_model,
            epochs=settings.training_epochs,
            max_steps=settings.training_max_steps,
            warm_start=settings.training_warm_start,
            replay=settings.training_replay,
            user_weight=settings.training_user_weight,
            engine=settings.engine,
            engine_threads=settings.model_threads,
        )

    def paths(self, run_id: int) -> RunPaths:
        folder = self.work_dir / "runs" / str(run_id)
        return RunPaths(
            self.work_dir / "snapshots" / f"run-{run_id}.json",
            folder / PROGRESS_FILE,
            folder / OUTCOME_FILE,
            folder / "train.log",
            folder / "engine-request.json",
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
            "--user-weight",
            str(self.user_weight),
        ]
        if self.warm_start:
            argv += ["--warm-start", "active", "--replay", str(self.replay)]
        if self.engine != "torch":
            argv += ["--prepare-engine", str(paths.engine_request)]
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
    engine_request: Path  # what preparing the serving engine takes, for the candidate (model.prepare_engine)


@dataclass
class _Active:
    run_id: int
    process: subprocess.Popen[bytes]
    paths: RunPaths
    thread: threading.Thread = field(init=False)


class TrainingJobs:
    """Starts and follows retraining runs; one at a time."""

    def __init__(
        self,
        database: Database,
        plan: TrainingPlan,
        switch: ModelSwitch,
        poll_s: float = 0.5,
        lease_s: float = 60.0,
    ) -> None:
        self.database = database
        self.plan = plan
        self.switch = switch
        self.poll_s = poll_s
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._active: _Active | None = None
        self._stopping = False

    def recover(self) -> list[int]:
        """At start-up, fail the runs nobody is left to finish, ending their trainers; return their ids.

        Those are the runs a crashed process of this machine left "running" (and rows from before the lease, which
        name no replica), and any whose lease has expired. A run a live sibling replica holds is left alone.
        """
        return self._free_abandoned(at_start_up=True)

    def _free_abandoned(self, *, at_start_up: bool) -> list[int]:
        deadline = utcnow() - timedelta(seconds=self.lease_s)
        freed: list[int] = []
        with self.database.sessions() as session:
            for run in session.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)):
                if at_start_up and (run.replica is None or gone_from_this_host(run.replica)):
                    reason = "the service restarted during the run"
                elif (run.heartbeat_at or run.created_at) < deadline:
                    reason = (
                        f"replica {run.replica} stopped renewing the run's lease (training_lease_s={self.lease_s:g})"
                    )
                else:
                    continue
                here = run.replica is None or on_this_host(run.replica)  # a pid means nothing on another machine
                ended = here and _end_orphan(run.pid, self.plan.paths(run.id).outcome)
                _finish(run, RunStatus.FAILED, error=reason + ("; its training process was ended" if ended else ""))
                freed.append(run.id)
            session.commit()
        return freed

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
            expired = self._free_abandoned(at_start_up=False)
            if expired:
                log.warning("marked training runs %s failed: their replica stopped renewing the lease", expired)
            run_id = self._insert_run(requested_by)
            paths = self.plan.paths(run_id)
            try:
                snapshot = self._snapshot(paths)
                process = self._spawn(paths)
            except Exception as error:
                reason = f"could not start: {error}"
                self._update(run_id, lambda run: _finish(run, RunStatus.FAILED, error=reason))
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
            run = TrainingRun(
                status=RunStatus.RUNNING,
                requested_by=requested_by,
                previous_version=self.switch.serving,
                replica=replica_id(),
                heartbeat_at=utcnow(),
            )
            session.add(run)
            try:
                session.commit()
            except IntegrityError:
                # Another replica (or process) holds the one running slot: the lease (the partial unique index).
                session.rollback()
                running = session.scalars(select(TrainingRun.id).where(TrainingRun.status == RunStatus.RUNNING)).first()
                raise RunInProgress(running) from None
            return run.id

    def _snapshot(self, paths: RunPaths) -> Snapshot:
        with self.database.sessions() as session:
            return write_snapshot(session, self.plan.corpus_dir, paths.snapshot)

    def _spawn(self, paths: RunPaths) -> subprocess.Popen[bytes]:
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        request = engine_request(self.plan.engine, self.plan.engine_threads, self.plan.corpus_dir)
        if request is not None:
            write_atomically(paths.engine_request, json.dumps(request).encode())
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
        last_progress: RunProgress | None = None
        code: int | None = None
        renewed = time.monotonic()
        while code is None:
            try:
                code = active.process.wait(self.poll_s)
            except subprocess.TimeoutExpired:
                code = None
            if code is None and time.monotonic() - renewed >= self.lease_s / RENEWALS_PER_LEASE:
                renewed = time.monotonic()
                if not self._renew_lease(active):
                    log.warning("training run %d: its lease expired and another replica failed it", active.run_id)
                    active.process.terminate()
                    active.process.wait()
                    return  # the row is the other replica's to write now
            progress = read_progress(active.paths.progress)
            if progress is not None and progress != last_progress:
                last_progress = progress
                self._record_progress(active.run_id, progress)
        try:
            self._conclude(active, code)
        except Exception:  # the watcher must never die silently: the run would stay "running" forever
            log.exception("training run %d: recording its end failed", active.run_id)
            self._update(
                active.run_id, lambda run: _finish(run, RunStatus.FAILED, error="recording the outcome failed")
            )

    def _renew_lease(self, active: _Active) -> bool:
        """Renew the run's lease; False once another replica has failed the run (the lease had expired)."""
        try:
            with self.database.sessions() as session:
                run = session.get(TrainingRun, active.run_id)
                if run is None or run.status != RunStatus.RUNNING:
                    return False
                run.heartbeat_at = utcnow()
                session.commit()
        except Exception:  # a database outage: keep training, and renew at the next turn (if the lease still holds)
            log.exception("training run %d: renewing its lease failed", active.run_id)
        return True

    def _record_progress(self, run_id: int, progress: RunProgress) -> None:
        def record(run: TrainingRun) -> None:
            run.progress = json_safe(asdict(progress))

        self._update(run_id, record)

    def _conclude(self, active: _Active, code: int) -> None:
        outcome = read_outcome(active.paths.outcome)
        error: str | None
        if code == 0 and outcome is not None and outcome.version is not None:
            error = self._serve_if_passed(outcome)
        elif self._stopping:
            error = "the service stopped during the run; its training process was ended"
        else:
            error = _describe_failure(code, outcome, active.paths.log)
        if error is not None:
            log.warning("training run %d failed: %s", active.run_id, error)
            self._update(active.run_id, lambda run: _finish(run, RunStatus.FAILED, outcome=outcome, error=error))
            return
        assert outcome is not None
        verdict = RunStatus.PROMOTED if outcome.passed else RunStatus.REJECTED
        log.info("training run %d: candidate %s %s", active.run_id, outcome.version, verdict)
        self._update(active.run_id, lambda run: _finish(run, verdict, outcome=outcome))

    def _serve_if_passed(self, outcome: RunOutcome) -> str | None:
        """Serve a candidate that passed the gate; return why not if it cannot be served."""
        if not outcome.passed or outcome.version is None:
            return None
        try:
            self.switch.activate(outcome.version)
        except Exception as error:
            return f"candidate {outcome.version} passed the gate but could not be served: {error}"
        return None


def _started(run: TrainingRun, snapshot: Snapshot, pid: int) -> None:
    run.pid = pid
    run.snapshot_path = str(snapshot.path)
    run.snapshot_sha256 = snapshot.sha256
    run.snapshot_counts = snapshot.counts


def _finish(
    run: TrainingRun, verdict: RunStatus, *, outcome: RunOutcome | None = None, error: str | None = None
) -> None:
    run.status = verdict
    run.finished_at = utcnow()
    run.error = error
    if outcome is not None:
        run.candidate_version = outcome.version
        run.reasons = list(outcome.reasons)
        run.metrics = outcome.metrics or None


def _describe_failure(code: int, outcome: RunOutcome | None, log_path: Path) -> str:
    if outcome is not None and outcome.error is not None:
        return f"training failed: {outcome.error}"
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
