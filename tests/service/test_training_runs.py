"""Retraining through the API: the real trainer on the tiny model (promoted, rejected, killed) and stand-ins for
the failures that are hard to provoke (a trainer that errs, one that hangs, one that passes what cannot be served).

The tiny corpus is built so that the gate's outcome does not depend on what two training steps of a random model
learn: its test split repeats its validation split, so the calibrated interval covers about 90-97% of the test
messages (in the gate's range), and the comparison with the active version is decided by that version's figures:
-1 Spearman and 0 pairwise accuracy (any candidate is no worse), or a contradictory test pair that caps the candidate's
pairwise accuracy at 0.5 against an active 0.6 (every candidate is worse).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model import Registry
from model.artifacts import verify_manifest
from service.app import create_app
from service.jobs import TrainingJobs
from service.settings import Settings
from service.store.db import Database
from service.store.models import TrainingRun
from tests.factories import WORDS, make_tiny_version
from tests.service.helpers import app_of
from tests.service.store_helpers import (
    FAKE_TRAINER_FAILS,
    FAKE_TRAINER_SLEEPS,
    TEXTS,
    assert_problem,
    bearer,
    issue_key,
    store,
    use_trainer,
)
from tests.trials import TRIALS, record_trial

RUN_TIMEOUT_S = 180.0

# Reports a candidate that passed the gate but is not in the registry, as a broken trainer might.
FAKE_TRAINER_PASSES_A_GHOST = """
import json, sys
outcome = {"version": "ghost-0001", "passed": True, "reasons": [], "metrics": {"test": {"spearman": 0.9}}}
open(sys.argv[sys.argv.index("--outcome") + 1], "w").write(json.dumps(outcome))
"""


def _write_corpus(folder: Path) -> Path:
    rng = random.Random(7)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."

    records: list[dict[str, Any]] = []

    def add(split: str, words: str, score: float) -> str:
        message_id = f"t{len(records)}"
        records.append(
            {
                "id": message_id,
                "text": words,
                "sender": "A",
                "recipient": "B",
                "date": "2020-01-01",
                "occasion": "national day",
                "language": "en",
                "score": round(score, 1),
                "split": split,
                "group": message_id,
            }
        )
        return message_id

    for _ in range(12):
        add("train", text(), rng.uniform(0, 100))
    validation = [(text(), rng.uniform(0, 100)) for _ in range(40)]
    for split in ("validation", "test"):
        for words, score in validation:
            add(split, words, score)
    # The gate refuses a test split without pairs (NaN pairwise accuracy), so both corpora hold one pair, judged
    # both ways: any scorer orders it 0.5, which the weak version (0.0) is below and tiny-0001 (0.6) above.
    a, b = add("test", text(), 70.0), add("test", text(), 30.0)
    pairs = [{"warmer": a, "cooler": b, "kind": "variant"}, {"warmer": b, "cooler": a, "kind": "variant"}]
    folder.mkdir(parents=True)
    (folder / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {
        # one corpus; which version is active decides whether its candidate passes the gate
        "promotable": _write_corpus(root / "promotable"),
        "rejectable": _write_corpus(root / "rejectable"),
    }


@pytest.fixture(scope="module")
def weak_version(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_version(
        tiny_base,
        tmp_path_factory.mktemp("weak") / "tiny-weak",
        version="tiny-weak",
        test_spearman=-1.0,
        test_pairwise=0.0,
    )


@pytest.fixture
def data_dir(tmp_path: Path, tiny_version: Path, weak_version: Path) -> Path:
    """A registry serving tiny-weak (test figures any candidate matches), with tiny-0001 (pairwise 0.6) beside it."""
    registry = Registry(tmp_path / "models")
    registry.install(weak_version, "tiny-weak")
    registry.install(tiny_version, "tiny-0001")
    registry.activate("tiny-weak")
    return tmp_path


@pytest.fixture
def trainer_client(
    make_client: Callable[..., TestClient], corpora: dict[str, Path], tiny_base: Path
) -> Callable[..., TestClient]:
    def make(corpus: str = "promotable", **overrides: Any) -> TestClient:
        return make_client(
            **{"corpus_dir": corpora[corpus], "base_model": str(tiny_base), "training_max_steps": 2, **overrides}
        )

    return make


def _jobs(client: TestClient) -> TrainingJobs:
    jobs: TrainingJobs = app_of(client).state.training_jobs
    return jobs


def _served(client: TestClient) -> str:
    version: str = client.post("/v1/score", json={"text": TEXTS[0]}).json()["model_version"]
    return version


def _label_two_messages(client: TestClient) -> None:
    token = issue_key(client, "label")
    a, b = store(client, token, TEXTS[2]), store(client, token, TEXTS[1])
    store(client, token, TEXTS[3])  # unlabelled: stays out of the snapshot
    for message, score in ((a, 85.0), (b, 15.0)):
        client.put(
            f"/v1/messages/{message['id']}/label", json={"annotator": "ana", "score": score}, headers=bearer(token)
        )
    client.post("/v1/pairs", json={"warmer": a["id"], "cooler": b["id"], "annotator": "ana"}, headers=bearer(token))


def _run_to_the_end(client: TestClient, admin: dict[str, str], jobs: TrainingJobs | None = None) -> dict[str, Any]:
    started = client.post("/v1/training-runs", headers=admin)
    assert started.status_code == 202, started.text
    (jobs or _jobs(client)).wait(RUN_TIMEOUT_S)
    finished = client.get(started.headers["location"])
    assert finished.status_code == 200
    body: dict[str, Any] = finished.json()
    return body


# --------------------------------------------------------------------------------------------- the real trainer


def test_training_run_promotes_a_candidate_that_passes_the_gate(
    trainer_client: Callable[..., TestClient], data_dir: Path
) -> None:
    client = trainer_client()
    _label_two_messages(client)
    admin = bearer(issue_key(client, "admin"))

    started = client.post("/v1/training-runs", headers=admin)
    _jobs(client).wait(RUN_TIMEOUT_S)
    run = client.get(started.headers["location"]).json()

    assert started.status_code == 202
    assert (started.json()["status"], started.json()["promoted"]) == ("running", None)
    assert (run["status"], run["promoted"], run["reasons"], run["error"]) == ("promoted", True, [], None), run
    candidate = run["candidate_version"]
    assert run["previous_version"] == "tiny-weak"
    assert _served(client) == candidate
    assert Registry(data_dir / "models").active_version() == candidate
    assert client.get("/v1/models").json()["serving"] == candidate
    assert client.get("/v1/info").json()["model_version"] == candidate
    assert (run["progress"]["step"], run["progress"]["max_steps"]) == (2, 2)
    assert set(run["metrics"]) >= {"test", "validation"}
    snapshot = Path(run["snapshot"]["path"])
    assert run["snapshot"]["sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert (run["snapshot"]["counts"]["stored_labelled"], run["snapshot"]["counts"]["stored_pairs"]) == (2, 1)
    assert snapshot.parent == data_dir.resolve() / "snapshots"


def test_a_promoted_candidate_has_its_engine_prepared_by_the_run_and_is_served_on_it_at_once(
    trainer_client: Callable[..., TestClient], data_dir: Path
) -> None:
    client = trainer_client(engine="onnx-fp32")
    switch = app_of(client).state.model_switch
    assert switch.wait_for_engine(600)  # the first start's preparation of tiny-weak, in the background
    _label_two_messages(client)

    run = _run_to_the_end(client, bearer(issue_key(client, "admin")))
    info = client.get("/v1/info").json()
    log = Path(data_dir / "runs" / str(run["id"]) / "train.log").read_text()

    assert run["status"] == "promoted", run
    assert run["progress"]["phase"] == "preparing"
    assert f"engine prepared for {run['candidate_version']}" in log
    assert (info["model_version"], info["engine"]) == (run["candidate_version"], "onnx-fp32")
    assert info["engine_report"]["from_cache"] is True  # the service only read the verdict the run cached
    assert switch.wait_for_engine(0)  # and had nothing to prepare itself


def test_training_run_rejected_by_the_gate_keeps_the_serving_model(
    trainer_client: Callable[..., TestClient], data_dir: Path
) -> None:
    client = trainer_client("rejectable")
    admin = bearer(issue_key(client, "admin"))
    client.post("/v1/models/tiny-0001/activate", headers=admin)  # test pairwise accuracy 0.6 to beat

    run = _run_to_the_end(client, admin)

    assert (run["status"], run["promoted"], run["error"]) == ("rejected", False, None), run
    assert any(
        reason.startswith("pairwise_accuracy 0.") and "below the active model's 0.600" in reason
        for reason in run["reasons"]
    ), run["reasons"]
    assert _served(client) == "tiny-0001"
    registry = Registry(data_dir / "models")
    assert registry.active_version() == "tiny-0001"
    assert run["candidate_version"] in [v.version for v in registry.versions()]  # kept, not served


def test_training_run_killed_midway_fails_and_leaves_the_registry_intact(
    trainer_client: Callable[..., TestClient], data_dir: Path
) -> None:
    client = trainer_client(training_max_steps=500)
    admin = bearer(issue_key(client, "admin"))
    registry = Registry(data_dir / "models")
    before = [v.version for v in registry.versions()]
    started = client.post("/v1/training-runs", headers=admin).json()
    progress = data_dir / "runs" / str(started["id"]) / "progress.json"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not progress.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    os.kill(started_pid(client, started["id"]), signal.SIGKILL)
    _jobs(client).wait(RUN_TIMEOUT_S)
    run = client.get(f"/v1/training-runs/{started['id']}").json()

    assert progress.exists()
    assert (run["status"], run["promoted"]) == ("failed", False)
    assert run["error"] == "the training process was killed by SIGKILL"
    assert [v.version for v in registry.versions()] == before
    assert registry.active_version() == "tiny-weak"
    assert _served(client) == "tiny-weak"


def started_pid(client: TestClient, run_id: int) -> int:
    with app_of(client).state.database.sessions() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        assert run.pid is not None
        return run.pid


# ---------------------------------------------------------------------------------------------------- stand-ins


def test_second_training_run_while_one_runs_is_409(trainer_client: Callable[..., TestClient]) -> None:
    client = trainer_client()
    jobs = use_trainer(client, FAKE_TRAINER_SLEEPS)
    admin = bearer(issue_key(client, "admin"))
    first = client.post("/v1/training-runs", headers=admin)

    second = client.post("/v1/training-runs", headers=admin)
    jobs.stop()
    ended = client.get(f"/v1/training-runs/{first.json()['id']}").json()

    assert first.status_code == 202
    body = assert_problem(second, 409, "training-run-in-progress")
    assert body["running_run_id"] == first.json()["id"]
    assert (ended["status"], ended["error"]) == (
        "failed",
        "the service stopped during the run; its training process was ended",
    )


def test_training_run_whose_trainer_fails_reports_its_error(trainer_client: Callable[..., TestClient]) -> None:
    client = trainer_client()
    jobs = use_trainer(client, FAKE_TRAINER_FAILS)

    run = _run_to_the_end(client, bearer(issue_key(client, "admin")), jobs)

    assert (run["status"], run["promoted"]) == ("failed", False)
    assert run["error"] == "training failed: ValueError: the fake trainer always fails"
    assert _served(client) == "tiny-weak"


def test_candidate_that_passed_but_cannot_be_served_fails_and_nothing_moves(
    trainer_client: Callable[..., TestClient],
    data_dir: Path,
) -> None:
    client = trainer_client()
    jobs = use_trainer(client, FAKE_TRAINER_PASSES_A_GHOST)

    run = _run_to_the_end(client, bearer(issue_key(client, "admin")), jobs)

    assert (run["status"], run["candidate_version"]) == ("failed", "ghost-0001")
    assert run["error"].startswith("candidate ghost-0001 passed the gate but could not be served: no model version")
    assert Registry(data_dir / "models").active_version() == "tiny-weak"
    assert _served(client) == "tiny-weak"


def test_restart_marks_an_orphaned_run_failed_and_ends_its_trainer(
    make_settings: Callable[..., Settings], data_dir: Path
) -> None:
    settings = make_settings()
    database = Database.open(settings.sqlalchemy_url)
    outcome = data_dir.resolve() / "runs" / "1" / "outcome.json"
    orphan = subprocess.Popen([sys.executable, "-c", FAKE_TRAINER_SLEEPS, "--outcome", str(outcome)])
    with database.sessions() as session:
        session.add(TrainingRun(status="running", pid=orphan.pid))
        session.commit()
    database.close()

    with TestClient(create_app(settings)) as client:
        run = client.get("/v1/training-runs/1").json()
        code = orphan.wait(30)

    assert (run["status"], run["error"]) == (
        "failed",
        "the service restarted during the run; its training process was ended",
    )
    assert code == -signal.SIGTERM


def test_training_run_without_the_bundled_corpus_is_503(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(corpus_dir=tmp_path / "nowhere")

    response = client.post("/v1/training-runs", headers=bearer(issue_key(client, "admin")))

    body = assert_problem(response, 503, "retraining-unavailable")
    assert body["detail"].startswith("the bundled corpus is incomplete: expected ")
    assert client.get("/v1/training-runs").json() == {"runs": []}


def test_get_unknown_training_run_is_404(client: TestClient) -> None:
    response = client.get("/v1/training-runs/7")

    assert assert_problem(response, 404, "training-run-not-found")["detail"] == "no training run 7"


def test_training_run_killed_at_random_moments_fails_and_keeps_registry_and_active_model(
    trainer_client: Callable[..., TestClient], data_dir: Path
) -> None:
    """kill -9 of the trainer from its first instant to the end of its run, ``TRIALS`` times (tests/trials.py)."""
    client = trainer_client(training_max_steps=40)
    admin = bearer(issue_key(client, "admin"))
    registry = Registry(data_dir / "models")
    rng = random.Random(29)
    for trial in range(TRIALS):
        before = {v.version for v in registry.versions()}
        started = client.post("/v1/training-runs", headers=admin).json()
        delay = rng.uniform(0, 20.0)
        time.sleep(delay)
        try:
            os.kill(started_pid(client, started["id"]), signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            killed = False  # the run had already ended
        _jobs(client).wait(RUN_TIMEOUT_S)
        run = client.get(f"/v1/training-runs/{started['id']}").json()
        versions = {v.version for v in registry.versions()}
        for version in versions:
            verify_manifest(registry.path(version))  # every version whole: none half-written
        active = registry.active_version()
        record_trial(
            "kill -9 training run",
            trial=trial,
            delay_s=round(delay, 3),
            killed=killed,
            status=run["status"],
            new_versions=sorted(versions - before),
            active=active,
        )
        if run["status"] == "failed":
            assert run["error"] == "the training process was killed by SIGKILL" and not run["promoted"]
            assert active == "tiny-weak"
        else:  # it finished before the kill landed: its outcome stands
            assert run["status"] in ("promoted", "rejected")
            registry.activate("tiny-weak")  # the next trial starts from the same active model
            client.post("/v1/models/tiny-weak/activate", headers=admin)
        assert _served(client) == registry.active_version()
