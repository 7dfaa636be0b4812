"""A live service on the tiny model, and headless Debian chromium driven by Playwright, for the page's tests.

Browsers are never downloaded (``playwright install`` cannot work offline): the tests use the ``chromium`` binary that
``.ci/run`` installs with apt-get (``DIPLOTONE_CHROMIUM`` may name another). Where none is installed they are skipped
with that reason; with ``DIPLOTONE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) a missing browser fails them instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from model import Registry
from service.app import create_app
from service.keys import create_key
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"  # var/ is git-ignored
CHROMIUM = os.environ.get("DIPLOTONE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None:
        return "no chromium binary (apt-get install -y chromium, or set DIPLOTONE_CHROMIUM)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_no_browser()
    for item in items:
        if "tests/browser/" not in item.nodeid:
            continue
        item.add_marker(pytest.mark.browser)
        if reason is not None and os.environ.get("DIPLOTONE_REQUIRE_BROWSER") != "1":
            item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {reason}"))


class LiveService:
    """The app served by uvicorn on a free local port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveService:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def key(self, scope: str) -> str:
        with self.app.state.database.sessions() as session:
            return create_key(session, scope, "browser-test").token


@pytest.fixture(scope="module")
def live(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    data_dir = tmp_path_factory.mktemp("live")
    registry = Registry(data_dir / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.activate("tiny-0001")
    with LiveService(Settings(data_dir=data_dir, model_threads=1, engine="torch")) as service:
        yield service


@pytest.fixture(scope="module")  # Playwright's sync API keeps an event loop running: stop it before other tests
def browser() -> Iterator[Any]:
    reason = _why_no_browser()
    if reason is not None:
        pytest.fail(f"DIPLOTONE_REQUIRE_BROWSER=1 but {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live: LiveService) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # An API error the page shows (a 401 label) is logged by chromium as a failed resource: expected, not a fault.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as var/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
