"""Browser fixtures: Debian's chromium driven by Playwright, headless, against a real
`redesk run` (the e2e deployment helpers). No browser is ever downloaded: a missing
chromium skips the browser tests locally and fails them on CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.e2e.conftest import Deployment, base_env, serve

#: The system chromium (apt-get install chromium); REDESK_TEST_CHROMIUM overrides it.
CHROMIUM = os.environ.get("REDESK_TEST_CHROMIUM", "/usr/bin/chromium")

#: Chromium switches: no sandbox (tests run as root in containers), nothing fetched on the
#: side (no updates, no component downloads), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium (Playwright's sync API)."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        missing_service("chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_service("playwright", exc)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The embedded default (SQLite, `redesk run` with its worker), demo data loaded."""
    directory = tmp_path_factory.mktemp("redesk-browser")
    running = Deployment(directory, base_env(directory, f"sqlite:///{directory / 'redesk.db'}"))
    running.cli("demo")
    yield from serve(running, "run")
