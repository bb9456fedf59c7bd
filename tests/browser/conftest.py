"""A real browser for the chat page's tests: Debian's `chromium`, driven by Playwright
(`.ci/browser.sh` installs it; elsewhere the tests skip, and fail under CI=true)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import require_module

HINT = "the browser tests need Debian's chromium (apt-get install chromium) and playwright"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Chromium, for one module's tests. Not for the session: while Playwright's sync API runs,
    its event loop is the running loop of the main thread, and every later test that checks
    for one (a blocking call refused on a running loop, pytest-asyncio) failed."""
    require_module("playwright", HINT)
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail(HINT)
        pytest.skip(HINT)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # its 5 s is short for a loaded 2-core CI machine

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A new page in a context of its own (its own localStorage)."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
