"""The dashboard at / in a real headless Chromium (Debian's package, driven by Playwright).

One live server and one browser serve the whole module; the tests run in file order and build
on each other's data, as a new user would: create a user, a server and a job through the forms,
watch the cron preview, run the job, pause, resume, edit, delete. A screenshot of every page is
saved under tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.browser import Session, expect, role, shot, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess

XSS = "<img src=x onerror=alert(1)>"
PAGES = {
    "overview": "/",
    "jobs": "/jobs",
    "job-new": "/jobs/new",
    "executions": "/executions",
    "users": "/users",
    "user-new": "/users/new",
    "servers": "/servers",
    "server-new": "/servers/new",
    "audit": "/audit",
}

skip_without_chromium()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {**SAMPLE_JOBS, "TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8"}  # Check now reaches a peer on loopback
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("dashboard") / "data", env=env).start()
    yield process
    process.stop()


def job_row(page, name: str):
    return page.locator("table.jobs tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))


# --------------------------------------------------------------------------- serving
def test_dashboard_is_served_with_security_headers(server):
    base = server.api.base_url
    response = requests.get(base + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.text
    assert "http://" not in page and "https://" not in page, "no CDN: everything is served locally"
    assert "<script>" not in page and "style=" not in page, "no inline script or style"
    assets = re.findall(r'(?:href|src)="(/ui/[^"]+)"', page)
    assert {Path(a).name for a in assets} == {"app.css", "main.js", "standalone.module.js", "favicon.svg"}
    for asset in assets:
        served = requests.get(base + asset, timeout=10)
        assert served.status_code == 200, asset
        assert "max-age" in served.headers["Cache-Control"], "versioned URLs are cached"
        assert served.headers["ETag"] and served.headers["X-Content-Type-Options"] == "nosniff"
    stale = requests.get(base + re.sub(r"/ui/[0-9a-f]+/", "/ui/0/", assets[0]), timeout=10)
    assert stale.status_code == 200 and stale.headers["Cache-Control"] == "no-cache", "an old URL revalidates"
    assert requests.get(base + "/ui/0/texium/config.py", timeout=10).status_code == 404
    missing = requests.get(base + "/api/no/such/route", timeout=10)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found"}
    assert requests.get(base + "/docs", timeout=10).status_code == 200
    assert requests.get(base + "/openapi.json", timeout=10).status_code == 200


# --------------------------------------------------------------------------- flows
def test_create_user_and_server_through_the_forms(clean):
    page = clean.page
    clean.open("/users")
    expect()(page.get_by_text("No users yet")).to_be_visible()
    role(page, "New user").click()
    page.get_by_label("Name", exact=True).fill("Ada Lovelace")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Role").select_option("admin")
    role(page, "Save").click()
    expect()(page.locator("#user-email-error")).to_contain_text("email")  # the 400, next to its field
    page.get_by_label("Email").fill("ada@example.com")
    role(page, "Save").click()
    row = page.locator("tr", has_text="ada@example.com")
    expect()(row).to_contain_text("Ada Lovelace")
    expect()(row).to_contain_text("admin")

    role(page, "Servers", "link").click()
    role(page, "New server").click()
    page.get_by_label("Name", exact=True).fill("Local box")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Hostname").fill("127.0.0.1")
    page.get_by_label("Port").fill("70000")
    page.get_by_label("Connection name").fill("Loopback")
    page.get_by_label("Instance URL").fill("")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("s3cret")
    page.get_by_label("Status").select_option("unknown")
    role(page, "Save").click()
    expect()(page.locator("#server-port-error")).to_contain_text("port")
    page.get_by_label("Port").fill("1")
    role(page, "Save").click()
    row = page.locator("tr", has_text="Local box")
    expect()(row).to_contain_text("127.0.0.1:1")
    expect()(row).to_contain_text("set")
    assert "s3cret" not in page.content(), "the password is write-only"
    role(row, "Check now").click()
    expect()(row).to_contain_text("unreachable", timeout=15_000)  # nothing listens on port 1
    expect()(row).to_contain_text("stopped")


def test_create_a_job_with_a_live_cron_preview(clean):
    page = clean.page
    clean.go("/jobs")
    role(page, "New job").click()
    page.get_by_label("Name", exact=True).fill("Nightly echo")
    page.get_by_label("Description").fill("Says hello")
    page.get_by_label("Job class").select_option("jobs.echo.EchoJob")
    expect()(page.locator(".class-notes")).to_contain_text("Simple job that echoes arguments")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Time zone").select_option("UTC")
    description = page.get_by_test_id("cron-description")
    runs = page.get_by_test_id("cron-next-runs").locator("li")

    role(page, "Daily at 09:00").click()
    expect()(description).to_have_text("At 09:00 every day")
    expect()(runs).to_have_count(5)
    daily = runs.all_inner_texts()
    assert all("09:00:00" in text for text in daily), daily

    role(page, "Every 5 minutes").click()
    expect()(description).to_have_text("Every 5 minutes")
    expect()(runs.first).not_to_have_text(daily[0])

    page.get_by_label("Minute", exact=True).fill("30")
    page.get_by_label("Hour", exact=True).fill("2")
    page.get_by_label("Day of week", exact=True).fill("1")
    expect()(description).to_have_text("At 02:30 on Monday")
    assert all(text.startswith("Mon") and "02:30:00" in text for text in runs.all_inner_texts())
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    expect()(description).to_have_text("At 02:30 on Monday (Asia/Tokyo)")
    expect()(runs.first).to_contain_text("02:30:00")  # shown in the job's zone

    page.get_by_label("Arguments (JSON)", exact=True).fill("[1, 2")
    expect()(page.locator("#job-pub_args-error")).to_contain_text("Not valid JSON")
    page.get_by_label("Arguments (JSON)", exact=True).fill('["hello", 42]')
    page.get_by_label("Keyword arguments (JSON)").fill('{"key": "value"}')
    expect()(page.locator("#job-pub_args-error")).to_have_count(0)

    page.get_by_label("Minute", exact=True).fill("61")
    expect()(page.locator("#job-minute-error")).to_contain_text("must be 0-59")  # from the preview
    role(page, "Save").click()
    expect()(page.locator("#job-minute-error")).to_contain_text("Invalid cron field minute")  # the 400
    page.get_by_label("Minute", exact=True).fill("30")
    expect()(page.get_by_label("Enabled")).to_be_checked()
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly echo")
    expect()(page.locator(".facts")).to_contain_text('["hello",42]')
    expect()(page.locator("main")).to_contain_text("At 02:30 on Monday (Asia/Tokyo)")


def test_run_now_shows_the_execution_complete_without_a_reload(clean, server):
    page = clean.page
    clean.go("/jobs")
    page.evaluate("window.__sameDocument = true")
    row = job_row(page, "Nightly echo")
    expect()(row).to_contain_text("never")
    role(row, "Run now").click()
    role(page, "View execution", "link").last.click()
    expect()(page.get_by_test_id("execution-status")).to_have_text("completed")
    expect()(page.get_by_test_id("execution-output")).to_contain_text("Args: ['hello', 42]")
    expect()(role(page, "Copy output")).to_be_visible()
    clean.go("/jobs")
    expect()(job_row(page, "Nightly echo").locator(".strip .tick")).to_have_count(1)
    expect()(job_row(page, "Nightly echo")).to_contain_text("completed")
    assert page.evaluate("window.__sameDocument") is True, "no reload happened"

    # A slow run, started by another client: the Executions page follows it to the end by itself.
    user_id = server.api.get("/api/users/").json()["data"][0]["_id"]
    slow = server.api.create_job(
        user_id, name="Slow one", job_class_string="tests.sample_jobs.slow.SlowJob", pub_kwargs={"seconds": 3}
    )
    clean.go("/executions")
    execution_id = server.api.post(f"/api/scheduler/jobs/{slow}/run").json()["execution_id"]
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    # The page looks for new runs every 2 s and follows a running one every second; the margins
    # are for a machine busy with other tests.
    expect()(row).to_contain_text("running", timeout=4000)
    expect()(row).to_contain_text("completed", timeout=5000)
    assert page.evaluate("window.__sameDocument") is True


def test_pause_resume_edit_and_delete(clean):
    page = clean.page
    clean.go("/jobs")
    row = job_row(page, "Nightly echo")
    role(row, "Pause").click()
    role(page.get_by_role("dialog"), "Pause").click()  # the note and the resume time are optional
    expect()(row).to_contain_text("paused")
    expect()(role(row, "Resume")).to_be_visible()
    page.get_by_label("State").select_option("paused")
    expect()(page.locator("table.jobs tbody tr")).to_have_count(1)
    page.get_by_label("State").select_option("")
    role(row, "Resume").click()
    expect()(role(row, "Pause")).to_be_visible()
    expect()(row).to_contain_text("enabled")

    role(row, "Edit").click()
    expect()(page.locator("main h1")).to_have_text("Edit job")
    expect()(page.get_by_label("Name", exact=True)).to_have_value("Nightly echo")
    role(page, "Hourly").click()
    expect()(page.get_by_test_id("cron-description")).to_contain_text("Every hour")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly echo")
    expect()(page.locator("main")).to_contain_text("Every hour")
    clean.go("/audit")
    expect()(page.locator("tbody")).to_contain_text("updated")
    expect()(page.locator("tbody")).to_contain_text("paused")

    clean.go("/jobs")
    row = job_row(page, "Slow one")
    role(row, "Delete").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog).to_contain_text("Slow one")
    role(dialog, "Cancel").click()
    expect()(row).to_be_visible()
    role(row, "Delete").click()
    role(page.get_by_role("dialog"), "Delete").click()
    expect()(job_row(page, "Slow one")).to_have_count(0)


def test_a_hostile_name_renders_as_text(clean, server):
    page = clean.page
    user_id = server.api.get("/api/users/").json()["data"][0]["_id"]
    job_id = server.api.create_job(user_id, name=XSS, description=XSS, pub_kwargs={"x": XSS})
    clean.go("/")  # the page may be on /jobs already: leave it, so the list is fetched again
    clean.go("/jobs")
    expect()(page.get_by_role("link", name=XSS, exact=True)).to_be_visible()
    clean.go(f"/jobs/{job_id}")
    expect()(page.locator("main h1")).to_have_text(XSS)
    role(page, "Run now").click()
    role(page, "View execution", "link").last.click()
    expect()(page.get_by_test_id("execution-output")).to_contain_text(XSS)
    assert page.locator("img").count() == 0, "the markup was not interpreted"
    assert page.evaluate("window.__sameDocument") is True


def test_deep_links_and_back_forward(clean, server):
    page = clean.page
    job = next(j for j in server.api.get("/api/scheduler/jobs").json()["data"] if j["name"] == "Nightly echo")
    clean.open(f"/jobs/{job['_id']}")  # a deep link, loaded fresh
    expect()(page.locator("main h1")).to_have_text("Nightly echo")
    clean.open("/executions?status=completed")
    expect()(page.get_by_label("Status")).to_have_value("completed")
    role(page, "Users", "link").click()
    expect()(page.locator("main h1")).to_have_text("Users")
    role(page, "Jobs", "link").click()
    expect()(page.locator("main h1")).to_have_text("Jobs")
    page.go_back()
    expect()(page.locator("main h1")).to_have_text("Users")
    page.go_back()
    expect()(page.locator("main h1")).to_have_text("Executions")
    expect()(page.get_by_label("Status")).to_have_value("completed")
    page.go_forward()
    expect()(page.locator("main h1")).to_have_text("Users")
    expect()(page.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_attribute(
        "aria-current", "page"
    )
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Overview", "Jobs", "Executions", "Users", "Servers", "Audit log"):
        expect()(nav.get_by_role("link", name=name, exact=True)).to_be_visible()


def test_deleting_a_user_who_owns_things_offers_the_cascade(clean, server):
    page = clean.page
    owner = server.api.create_user(name="Temporary", email="temp@example.com")
    server.api.create_job(owner, name="Owned job")
    clean.go("/servers")
    clean.go("/users")
    row = page.locator("tr", has_text="temp@example.com")
    role(row, "Delete").click()
    role(page.get_by_role("dialog"), "Delete").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog).to_contain_text("User still owns 1 job")
    role(dialog, "Delete user, servers and jobs").click()
    expect()(page.locator("tr", has_text="temp@example.com")).to_have_count(0)
    assert all(j["name"] != "Owned job" for j in server.api.get("/api/scheduler/jobs").json()["data"])


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_renders_without_errors_and_fits(browser, server, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    session = Session(context.new_page(), server.api.base_url)
    job_id = next(j["_id"] for j in server.api.get("/api/scheduler/jobs").json()["data"] if j["name"] == "Nightly echo")
    execution_id = server.api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"][0]["_id"]
    pages = {
        **PAGES,
        "job": f"/jobs/{job_id}",
        "job-edit": f"/jobs/{job_id}/edit",
        "execution": f"/executions/{execution_id}",
    }
    try:
        for name, route in pages.items():
            session.open(route)
            session.page.locator(".state.loading").first.wait_for(state="detached")
            session.page.wait_for_load_state("networkidle")
            overflow = session.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{route} scrolls sideways by {overflow}px at {width}px"
            shot(session.page, f"{name}-{width}")
        assert session.problems == []
    finally:
        context.close()


def test_a_server_that_requires_keys_signs_in_with_a_key_and_keeps_a_session(browser, tmp_path):
    """AUTH_MODE=on: the dashboard asks for a key, signs in (session cookie + CSRF token),
    changes state through the forms, and signs out."""
    env = {**SAMPLE_JOBS, "TEXIUM_AUTH_MODE": "on"}
    server = ServerProcess("sqlite", tmp_path / "data", env=env).start()
    try:
        key = (server.data_dir / "admin-api-key").read_text().strip()
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(server.api.base_url + "/#/users")
        page.get_by_label("API key").fill("tx_not-a-key")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="Invalid or revoked API key").wait_for()
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="New user").click()
        page.get_by_label("Name").fill("Signed In")
        page.get_by_label("Email").fill("signed.in@example.com")
        page.get_by_role("button", name="Save").click()
        page.get_by_text("signed.in@example.com").first.wait_for()
        cookie = next(c for c in context.cookies() if c["name"] == "texium_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and key not in cookie["value"]
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("API key").wait_for()
        assert requests.get(server.api.base_url + "/api/users/", timeout=10).status_code == 401
        context.close()
    finally:
        server.stop()
