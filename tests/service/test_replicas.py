"""Two real service processes on one PostgreSQL database and one data folder (registry included) behave as one service:
what one stores the other reads, what one activates both serve within the registry poll, one training run at a time
across both, and the run of a replica killed with SIGKILL is freed once its lease expires.

Each replica is ``uvicorn`` in a subprocess on a free port (``tests.service.replica_app``: the real app, with a
stand-in trainer that sleeps), configured through ``DIPLOTONE_*`` variables like a deployment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from model import Registry
from service.keys import create_key
from service.store.db import Database
from tests.factories import make_tiny_version
from tests.postgres import fresh_database
from tests.service.replica_app import TRAINER_VARIABLE
from tests.service.store_helpers import FAKE_TRAINER_SLEEPS, TEXTS, bearer

POLL_S = 0.5  # DIPLOTONE_REGISTRY_POLL_S of the replicas
LEASE_S = 4.0  # DIPLOTONE_TRAINING_LEASE_S of the replicas
START_TIMEOUT_S = 120.0  # a replica imports torch and probes the tiny model: slow on a busy 2-core machine
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def info(self) -> dict[str, Any]:
        with self.client() as client:
            body: dict[str, Any] = client.get("/v1/info").raise_for_status().json()
            return body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_replica(data_dir: Path, database_url: str, log: Path) -> Replica:
    port = _free_port()
    environment = {
        **os.environ,
        "DIPLOTONE_DATA_DIR": str(data_dir),
        "DIPLOTONE_DATABASE_URL": database_url,
        "DIPLOTONE_ENGINE": "torch",
        "DIPLOTONE_MODEL_THREADS": "1",
        "DIPLOTONE_REGISTRY_POLL_S": str(POLL_S),
        "DIPLOTONE_TRAINING_LEASE_S": str(LEASE_S),
        "HF_HUB_OFFLINE": "1",
        TRAINER_VARIABLE: FAKE_TRAINER_SLEEPS,
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.service.replica_app:create_app"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=SOURCE_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Replica(process, f"http://127.0.0.1:{port}", log)


def _wait_ready(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise AssertionError(f"replica exited with {replica.process.returncode}:\n{replica.log.read_text()}")
        with suppress(httpx.HTTPError), replica.client() as client:
            if client.get("/readyz").status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"replica not ready after {START_TIMEOUT_S} s:\n{replica.log.read_text()}")


def _stop(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.terminate()  # a graceful shutdown ends its trainer
        try:
            replica.process.wait(30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()


@dataclass
class Pair:
    replicas: tuple[Replica, Replica]
    admin: str  # an admin key's token
    data_dir: Path
    database_url: str


@pytest.fixture
def make_pair(
    postgres_server: str, tmp_path: Path, tiny_version: Path, tiny_base: Path
) -> Iterator[Callable[[], Pair]]:
    """Start two replicas on a fresh PostgreSQL database and one data folder holding tiny-0001 (active) and
    tiny-0002."""
    with ExitStack() as stack:

        def make() -> Pair:
            database_url = stack.enter_context(fresh_database(postgres_server))
            data_dir = tmp_path / "shared"
            registry = Registry(data_dir / "models")
            registry.install(tiny_version, "tiny-0001")
            second = make_tiny_version(tiny_base, tmp_path / "versions" / "tiny-0002", version="tiny-0002")
            registry.install(second, "tiny-0002")
            registry.activate("tiny-0001")
            database = Database.open(database_url)  # migrated once here; the replicas find it at the latest revision
            with database.sessions() as session:
                admin = create_key(session, "admin", "replicas").token
            database.close()
            replicas = tuple(_start_replica(data_dir, database_url, tmp_path / f"replica-{i}.log") for i in (0, 1))
            for replica in replicas:
                stack.callback(_stop, replica)
            for replica in replicas:
                _wait_ready(replica)
            return Pair((replicas[0], replicas[1]), admin, data_dir, database_url)

        yield make


@pytest.fixture
def pair(make_pair: Callable[[], Pair]) -> Pair:
    return make_pair()


def test_each_replica_names_itself_and_the_version_it_serves(pair: Pair) -> None:
    infos = [replica.info() for replica in pair.replicas]

    assert [info["model_version"] for info in infos] == ["tiny-0001", "tiny-0001"]
    assert [info["registry_active"] for info in infos] == ["tiny-0001", "tiny-0001"]
    hosts_and_pids = [info["replica"].rpartition(":") for info in infos]
    assert [(host, int(pid)) for host, _, pid in hosts_and_pids] == [
        (socket.gethostname(), replica.process.pid) for replica in pair.replicas
    ]


def test_a_message_written_through_one_replica_is_read_through_the_other(pair: Pair) -> None:
    one, other = pair.replicas
    with one.client() as client:
        stored = client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(pair.admin))
        assert stored.status_code == 201, stored.text
        message_id = stored.json()["id"]
        labelled = client.put(
            f"/v1/messages/{message_id}/label", json={"score": 80, "annotator": "ana"}, headers=bearer(pair.admin)
        )
        assert labelled.status_code == 200, labelled.text

    with other.client() as client:
        read = client.get(f"/v1/messages/{message_id}", headers=bearer(pair.admin))  # reads need a key

    assert read.status_code == 200, read.text
    assert (read.json()["text"], read.json()["score"]) == (TEXTS[0], stored.json()["score"])
    assert read.json()["label"] == 80


def test_a_version_activated_through_one_replica_is_served_by_both_within_the_poll(pair: Pair) -> None:
    one, other = pair.replicas
    with one.client() as client:
        activated = client.post("/v1/models/tiny-0002/activate", headers=bearer(pair.admin))
    assert activated.status_code == 200, activated.text
    switched_at = time.monotonic()
    assert one.info()["model_version"] == "tiny-0002"  # the replica that activated serves it on return

    deadline = switched_at + POLL_S + 30.0  # one period, plus loading and probing the tiny model on a busy machine
    while other.info()["model_version"] != "tiny-0002":
        assert time.monotonic() < deadline, f"the other replica still serves {other.info()['model_version']}"
        time.sleep(0.05)
    followed_s = time.monotonic() - switched_at

    with other.client() as client:
        scored = client.post("/v1/score", json={"texts": [TEXTS[1]]})
    assert scored.status_code == 200, scored.text
    assert scored.json()["results"][0]["model_version"] == "tiny-0002"
    print(f"the other replica served tiny-0002 {followed_s:.2f} s after the activation (poll {POLL_S} s)")


def test_runs_started_on_both_replicas_at_once_give_one_202_and_one_409(pair: Pair) -> None:
    def start(replica: Replica) -> httpx.Response:
        with replica.client() as client:
            return client.post("/v1/training-runs", headers=bearer(pair.admin))

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(start, pair.replicas))

    assert sorted(response.status_code for response in responses) == [202, 409], [r.text for r in responses]
    accepted = next(response for response in responses if response.status_code == 202).json()
    refused = next(response for response in responses if response.status_code == 409).json()
    assert str(accepted["id"]) in refused["detail"]
    with pair.replicas[0].client() as client:
        runs = client.get("/v1/training-runs").json()["runs"]
    assert [run["status"] for run in runs] == ["running"]


def test_the_run_of_a_killed_replica_is_freed_once_its_lease_expires(pair: Pair) -> None:
    holder, survivor = pair.replicas
    with holder.client() as client:
        started = client.post("/v1/training-runs", headers=bearer(pair.admin))
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    with survivor.client() as client:
        trainer_pid = client.get(f"/v1/training-runs/{run_id}").json().get("pid")

    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    killed_at = time.monotonic()

    with survivor.client() as client:
        refused = client.post("/v1/training-runs", headers=bearer(pair.admin))
        assert refused.status_code == 409, refused.text  # the lease has not expired yet: nothing is freed early
        deadline = killed_at + LEASE_S + 30.0
        while (retried := client.post("/v1/training-runs", headers=bearer(pair.admin))).status_code == 409:
            assert time.monotonic() < deadline, f"the dead replica's run still holds the lease: {retried.text}"
            time.sleep(0.25)
        freed_s = time.monotonic() - killed_at
        assert retried.status_code == 202, retried.text
        dead_run = client.get(f"/v1/training-runs/{run_id}").json()

    assert dead_run["status"] == "failed"
    assert dead_run["error"].startswith(f"replica {holder_id(holder)} stopped renewing the run's lease")
    assert freed_s >= LEASE_S - 1.0  # not before the lease ran out (minus the last renewal's age at the kill)
    if trainer_pid is not None:
        with suppress(ProcessLookupError):
            os.kill(trainer_pid, signal.SIGKILL)
    print(f"the killed replica's run was freed {freed_s:.2f} s after the kill (lease {LEASE_S} s)")


def holder_id(replica: Replica) -> str:
    return f"{socket.gethostname()}:{replica.process.pid}"
