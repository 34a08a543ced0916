"""What the browser tests share: Debian's Chromium driven by Playwright, offline; the marks that skip them
where no browser is installed (never on CI, which sets ALIGNFLOW_REQUIRE_BROWSER=1); what a failure keeps.
The `browser` fixture itself is in tests/integration/conftest.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.stack import Stack

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
# Nothing may try to reach the internet: no component updates, sync, field trials or first-run pings.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
# CI sets ALIGNFLOW_REQUIRE_BROWSER=1: there a missing browser is a failure, never a skip.
REQUIRED = os.environ.get("ALIGNFLOW_REQUIRE_BROWSER") == "1"
BROWSER_MARKS = [
    pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900),
    pytest.mark.skipif(not REQUIRED and not CHROMIUM.is_file(),
                       reason=f"{CHROMIUM} is missing (Debian's chromium package: .ci/install-browser.sh)"),
    pytest.mark.skipif(not REQUIRED and sync_playwright is None,
                       reason="the playwright package is missing (pip install -e '.[test]')"),
]


def save_failure(page: Any, stack: Stack, shots: Path) -> None:
    """What CI keeps when the test fails: the page as it was, its HTML, and the stack's service logs; the
    page's visible text also goes to the test's output (CI prints it), since the files may not be kept."""
    try:
        print(f"page {page.url} at the failure:\n{page.locator('body').inner_text()[:3000]}")
    except Exception as err:  # noqa: BLE001 - never hide the test's own failure
        print(f"could not read the page: {err}")
    for name, save in (("failure.png", lambda: page.screenshot(path=str(shots / "failure.png"))),
                       ("failure.html", lambda: (shots / "failure.html").write_text(page.content())),
                       ("stack-logs", lambda: shutil.copytree(stack.dir / "logs", shots / "stack-logs",
                                                              dirs_exist_ok=True))):
        try:
            save()
        except Exception as err:  # noqa: BLE001 - never hide the test's own failure
            print(f"could not save {name}: {err}")
