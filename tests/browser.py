"""What the browser tests share: Debian's chromium and the flags it needs here."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No background traffic: this machine reaches no network but package registries.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def skip_without_chromium() -> None:
    """Outside CI a machine without chromium skips the browser tests; CI installs it and never skips."""
    if not CHROMIUM and os.environ.get("CI") != "true":
        pytest.skip("Debian's chromium is not installed (CI installs it and never skips)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright; every test has it (tests/conftest.py loads this plugin)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium must be installed (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
