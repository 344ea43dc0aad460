"""Headless Chromium (Debian's package, driven by Playwright) for the UI tests, and where their artifacts go."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# As the machine's notes advise for a closed network: no background connections, a fresh profile.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    """``$PREDCHECK_CHROMIUM``, else ``chromium`` on PATH; fails saying how to install it."""
    path = os.environ.get("PREDCHECK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        raise AssertionError("no Chromium found: `make test` installs Debian's `chromium` package (as root); "
                             "or run `apt-get install -y chromium`, or set PREDCHECK_CHROMIUM to a Chromium binary")
    return path


@contextmanager
def chromium_page(width: int = 1600, height: int = 1400) -> Iterator:
    """A Playwright page in headless Chromium (the machine's, never a downloaded browser build)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def artifact_dir(name: str) -> Path:
    """``test-artifacts/<name>/`` in the repo (gitignored), emptied for this run."""
    path = ARTIFACTS / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
