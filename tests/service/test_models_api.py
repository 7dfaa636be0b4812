"""GET /v1/models and POST /v1/models/{version}/activate: listing, rollback, refusals, and no failed request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model import Registry
from service.app import create_app
from service.settings import Settings
from tests.factories import make_tiny_version
from tests.service.store_helpers import TEXTS, assert_problem, bearer, issue_key


@pytest.fixture(scope="module")
def second_version(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_version(
        tiny_base, tmp_path_factory.mktemp("second") / "tiny-0002", version="tiny-0002", test_spearman=0.7
    )


@pytest.fixture
def data_dir(tmp_path: Path, tiny_version: Path, second_version: Path) -> Path:
    """A registry with tiny-0001 (active) and tiny-0002."""
    registry = Registry(tmp_path / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.install(second_version, "tiny-0002")
    registry.activate("tiny-0001")
    return tmp_path


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return bearer(issue_key(client, "admin"))


def _served(client: TestClient) -> str:
    version: str = client.post("/v1/score", json={"text": TEXTS[0]}).json()["model_version"]
    return version


def test_list_models_marks_the_active_and_serving_version(client: TestClient) -> None:
    response = client.get("/v1/models")

    assert response.status_code == 200
    body = response.json()
    assert body["serving"] == "tiny-0001"
    assert [(v["version"], v["active"], v["serving"]) for v in body["versions"]] == [
        ("tiny-0001", True, True),
        ("tiny-0002", False, False),
    ]
    assert body["versions"][1]["metrics"]["test"]["spearman"] == 0.7


def test_activate_another_version_serves_it_and_rolls_back(
    client: TestClient, admin: dict[str, str], data_dir: Path
) -> None:
    forward = client.post("/v1/models/tiny-0002/activate", headers=admin)
    served_after_forward = _served(client)
    back = client.post("/v1/models/tiny-0001/activate", headers=admin)

    assert (forward.status_code, forward.json()) == (200, {"version": "tiny-0002", "previous": "tiny-0001"})
    assert served_after_forward == "tiny-0002"
    assert (back.status_code, back.json()) == (200, {"version": "tiny-0001", "previous": "tiny-0002"})
    assert _served(client) == "tiny-0001"
    assert Registry(data_dir / "models").active_version() == "tiny-0001"


def test_activated_version_is_served_after_a_restart(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as first:
        first.post("/v1/models/tiny-0002/activate", headers=bearer(issue_key(first, "admin")))

    with TestClient(create_app(make_settings())) as second:
        served = _served(second)

    assert served == "tiny-0002"


def test_activate_unknown_version_is_404_and_changes_nothing(
    client: TestClient, admin: dict[str, str], data_dir: Path
) -> None:
    response = client.post("/v1/models/tiny-9999/activate", headers=admin)

    body = assert_problem(response, 404, "unknown-model-version")
    assert body["detail"] == "no model version 'tiny-9999'; the registry holds: tiny-0001, tiny-0002"
    assert _served(client) == "tiny-0001"
    assert Registry(data_dir / "models").active_version() == "tiny-0001"


def test_activate_corrupt_version_is_refused_and_keeps_serving(
    client: TestClient, admin: dict[str, str], data_dir: Path
) -> None:
    calibration = data_dir / "models" / "tiny-0002" / "calibration.json"
    calibration.write_text(calibration.read_text().replace("12.0", "1.0"))

    response = client.post("/v1/models/tiny-0002/activate", headers=admin)

    body = assert_problem(response, 500, "model-artifact-corrupt")
    assert "calibration.json: sha256 is" in body["detail"]
    assert _served(client) == "tiny-0001"
    assert Registry(data_dir / "models").active_version() == "tiny-0001"


def test_activation_under_load_fails_no_request(client: TestClient, admin: dict[str, str]) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    done = threading.Event()

    def keep_scoring() -> None:
        while not done.is_set():
            response = client.post("/v1/score", json={"texts": TEXTS})
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.update(r["model_version"] for r in response.json()["results"])

    scorers = [threading.Thread(target=keep_scoring) for _ in range(3)]
    for thread in scorers:
        thread.start()
    switches = [
        client.post(f"/v1/models/{v}/activate", headers=admin).status_code for v in ("tiny-0002", "tiny-0001") * 3
    ]
    done.set()
    for thread in scorers:
        thread.join()

    assert switches == [200] * 6
    assert set(statuses) == {200}
    assert versions <= {"tiny-0001", "tiny-0002"}
    assert _served(client) == "tiny-0001"
