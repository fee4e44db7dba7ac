"""What the browser tests share: Debian's chromium and the flags it needs here."""

import os
import re
import shutil
from pathlib import Path

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


# --------------------------------------------------------------------------- the dashboard's pages
SCREENSHOTS = Path(os.environ.get("TEXIUM_SCREENSHOTS", Path(__file__).parent / "screenshots"))
# Responses the flows provoke on purpose; Chromium logs each as a console error.
# The output viewer closes its EventSource when the run ends or the page changes: the browser
# reports that stream's request as failed (aborted), which is what closing it means.
CLOSED_STREAM = re.compile(r"^requestfailed: \S+/output/stream$")
EXPECTED_HTTP_ERRORS = re.compile(r"Failed to load resource: the server responded with a status of (400|409|429)")


class Session:
    """One page of the dashboard and everything it logged."""

    def __init__(self, page, base_url: str):
        self.page, self.base_url = page, base_url
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        page.on("requestfailed", lambda request: self.problems.append(f"requestfailed: {request.url}"))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, route: str) -> None:
        self.page.goto(f"{self.base_url}/#{route}")
        self.page.locator("main h1").first.wait_for()

    def go(self, route: str) -> None:
        """Follow a link inside the app (no reload)."""
        self.page.evaluate("route => { location.hash = route }", route)
        self.page.locator("main h1").first.wait_for()

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not EXPECTED_HTTP_ERRORS.search(p) and not CLOSED_STREAM.search(p)]


@pytest.fixture(scope="module")
def ui(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin")
    context.set_default_timeout(10_000)
    session = Session(context.new_page(), server.api.base_url)
    yield session
    context.close()


@pytest.fixture
def clean(ui):
    """The test's own page errors: none that the flow did not provoke on purpose."""
    ui.problems.clear()
    yield ui
    assert ui.unexpected() == []
    assert ui.dialogs == [], "no script may open a dialog"


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def role(page, name: str, kind: str = "button", exact: bool = True):
    return page.get_by_role(kind, name=name, exact=exact)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def job_named(server, name: str) -> dict:
    return next(j for j in server.api.get("/api/scheduler/jobs").json()["data"] if j["name"] == name)
