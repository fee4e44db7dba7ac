"""The dashboard's screens for run policies (issue 21) in a real headless Chromium: the job
form's policy inputs, the policies in words on the job page, a queued run's reason, the pause
dialog (note and resume time), the maintenance banner with Pause all / Resume all, and the
Calendars page (periods, recurring rules, an .ics import, a refused delete).

One live server and one browser serve the module (the browser's zone is Europe/Berlin).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.browser import expect, job_named, role, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

POLITE = "tests.sample_jobs.operations.PoliteJob"  # waits, and stops at once when told to
YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # never fires during a test
ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Texium tests//EN
BEGIN:VEVENT
UID:xmas@texium.test
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE:20301225
DTEND;VALUE=DATE:20301226
SUMMARY:Christmas
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"}  # it stops with a long run going
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("policies") / "data", env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Ada Lovelace", email="ada@example.com", role="admin")


def create_calendar(server, owner, name: str) -> str:
    response = server.api.post("/api/scheduler/calendars", json={"user_id": owner, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["calendar_id"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def policies(page):
    return page.get_by_test_id("job-policies")


# --------------------------------------------------------------------------- the job form
def test_the_form_sets_run_policies_and_the_job_page_says_them_in_words(clean, server, owner):
    holidays = create_calendar(server, owner, "Holidays")
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Policed echo")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    overlap = page.get_by_label("When a run is due while the job still runs")
    expect()(overlap).to_have_value("skip")
    expect()(page.get_by_label("Runs that may wait")).to_have_count(0)  # only with queue_all
    overlap.select_option("allow")
    expect()(page.get_by_label("Runs at once")).to_be_visible()
    overlap.select_option("queue_all")
    expect()(page.get_by_label("Runs at once")).to_have_count(0)
    page.get_by_label("Runs that may wait").fill("101")  # over the API's 100: its 400 shows at the field
    page.get_by_label("Spread starts by up to (seconds)").fill("90")
    page.get_by_label("Not before (Europe/Berlin time)").fill("2030-01-01T00:00")
    page.get_by_label("Not after (Europe/Berlin time)").fill("2031-01-01T00:00")
    page.get_by_label("Stop after this many runs").fill("10")
    page.get_by_label("Pause after failures in a row").fill("3")
    page.get_by_label("Skip runs in (calendars)").select_option(label="Holidays")
    role(page, "Save").click()
    expect()(page.locator("#job-max_queued-error")).to_contain_text("Invalid field max_queued")
    page.get_by_label("Runs that may wait").fill("5")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Policed echo")

    job = job_named(server, "Policed echo")
    assert job["overlap_policy"] == "queue_all" and job["max_queued"] == 5
    assert job["jitter_seconds"] == 90 and job["max_runs"] == 10 and job["pause_after_failures"] == 3
    assert utc(job["start_at"]) == utc("2029-12-31T23:00:00+00:00")  # Berlin's midnight
    assert utc(job["end_at"]) == utc("2030-12-31T23:00:00+00:00")
    assert job["exclude_calendars"] == [holidays]
    words = policies(page)
    for text in (
        "queues up to 5 runs when busy",
        "spreads starts by up to 90 s",
        "runs only from",
        "stops after 10 runs (10 left)",
        "skips runs in: Holidays",
        "pauses itself after 3 failures in a row",
    ):
        expect()(words).to_contain_text(text)

    # A one-off: the cron fields go, run_at comes (in the window); the rest is kept.
    role(page, "Edit").click()
    expect()(page.get_by_label("Runs that may wait")).to_have_value("5")
    expect()(page.get_by_label("Not before (Europe/Berlin time)")).to_have_value("2030-01-01T00:00")
    page.get_by_label("Run once, at a set time (no repeating schedule)").check()
    expect()(page.locator("#job-minute")).to_have_count(0)
    page.get_by_label("Run at (Europe/Berlin time)").fill("2030-06-01T12:00")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Policed echo")
    job = job_named(server, "Policed echo")
    assert utc(job["run_at"]) == utc("2030-06-01T10:00:00+00:00") and job["max_queued"] == 5 and job["start_at"]
    expect()(policies(page)).to_contain_text("runs once, at")

    # Back to a schedule: run_at cleared, the cron fields sent again.
    role(page, "Edit").click()
    expect()(page.get_by_label("Run at (Europe/Berlin time)")).to_have_value("2030-06-01T12:00")
    page.get_by_label("Run once, at a set time (no repeating schedule)").uncheck()
    role(page, "Daily at 09:00").click()
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Policed echo")
    job = job_named(server, "Policed echo")
    assert job["run_at"] is None and job["hour"] == "9"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({}, "skips a run when busy"),
        ({"overlap_policy": "queue_one"}, "queues one run when busy"),
        ({"overlap_policy": "replace"}, "replaces the running run"),
        ({"overlap_policy": "allow", "max_instances": 3}, "allows 3 at once"),
    ],
)
def test_the_job_page_says_each_overlap_policy(clean, server, owner, fields, words):
    job_id = server.api.create_job(owner, name=f"Overlap {words}", **YEARLY, **fields)
    clean.open(f"/jobs/{job_id}")
    expect()(policies(clean.page).locator('[data-policy="overlap"]')).to_have_text(words)


def test_a_queued_run_shows_why_it_waits(clean, server, owner):
    job_id = server.api.create_job(
        owner, name="Queued", job_class_string=POLITE, pub_kwargs={"seconds": 30}, second="*", minute="*",
        overlap_policy="queue_one",
    )  # fmt: skip

    def waiting():
        runs = server.api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"]
        return next((r for r in runs if r["status"] == "scheduled" and r.get("waiting")), None)

    try:
        queued = wait_for(waiting, timeout=15)
        clean.open(f"/jobs/{job_id}")
        row = clean.page.locator("tr", has_text="Waits: queued").first
        expect()(row).to_contain_text("runs when a run ends")
        clean.open(f"/executions/{queued['_id']}")
        expect()(clean.page.get_by_test_id("execution-waiting")).to_contain_text("queued: the job was at its limit")
    finally:
        server.api.patch(f"/api/scheduler/jobs/{job_id}/pause")
        for run in server.api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"]:
            if run["status"] in ("scheduled", "running"):
                server.api.post(f"/api/scheduler/executions/{run['_id']}/cancel")


# --------------------------------------------------------------------------- pausing
def test_pause_asks_for_a_note_and_a_resume_time(clean, server, owner):
    job_id = server.api.create_job(owner, name="Vendor sync", **YEARLY)
    page = clean.page
    clean.open(f"/jobs/{job_id}")
    role(page, "Pause").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Note (optional)").fill("Vendor API down")
    dialog.get_by_label("Resume at (optional, Europe/Berlin time)").fill("2031-12-24T08:00")
    role(dialog, "Pause").click()
    expect()(page.get_by_test_id("pause-note")).to_contain_text("Vendor API down")
    expect()(page.get_by_test_id("pause-resumes")).to_contain_text("resumes at")
    expect()(page.get_by_test_id("pause-resumes")).to_contain_text("2031")
    job = server.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert job["is_paused"] and job["pause_note"] == "Vendor API down"
    assert utc(job["paused_until"]) == utc("2031-12-24T07:00:00+00:00")
    role(page, "Resume").click()
    expect()(page.get_by_test_id("pause-note")).to_have_count(0)
    # Cancel in the dialog pauses nothing.
    role(page, "Pause").click()
    role(page.get_by_role("dialog"), "Cancel").click()
    expect()(role(page, "Pause")).to_be_visible()
    assert server.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["is_paused"] is False


def test_maintenance_shows_a_banner_on_every_page_and_admins_switch_it(clean, server):
    page = clean.page
    clean.open("/jobs")
    expect()(page.get_by_test_id("maintenance-banner")).to_have_count(0)
    role(page, "Pause all…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Note (optional)").fill("Database upgrade")
    dialog.get_by_label("Resume at (optional, Europe/Berlin time)").fill("2031-01-02T06:00")
    role(dialog, "Pause all").click()
    banner = page.get_by_test_id("maintenance-banner")
    expect()(banner).to_contain_text("Database upgrade")
    expect()(banner).to_contain_text("2031")  # until
    health = server.api.get("/api/scheduler/health").json()
    assert health["maintenance"]["pause_note"] == "Database upgrade"
    assert utc(health["maintenance"]["paused_until"]) == utc("2031-01-02T05:00:00+00:00")
    clean.go("/executions")
    expect()(banner).to_contain_text("Database upgrade")
    clean.go("/calendars")
    expect()(banner).to_be_visible()
    role(banner, "Resume all").click()
    expect()(banner).to_have_count(0)
    assert server.api.get("/api/scheduler/health").json()["maintenance"] is None
    clean.go("/")
    expect()(role(page, "Pause all…")).to_be_visible()


# --------------------------------------------------------------------------- calendars
def test_calendars_page_creates_imports_shows_users_and_explains_a_refused_delete(clean, server, owner, tmp_path):
    page = clean.page
    clean.open("/calendars")
    role(page, "New calendar").click()
    expect()(page.locator("main h1")).to_have_text("New calendar")
    page.get_by_label("Name", exact=True).fill("Change freeze")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Time zone").select_option("Europe/Berlin")
    role(page, "Add period").click()
    page.get_by_label("Period 1 start").fill("2030-12-20T00:00")
    page.get_by_label("Period 1 end").fill("2030-12-10T00:00")  # before its start: the 400 shows at period 1
    role(page, "Add rule").click()
    page.get_by_label("Rule 1 hour").fill("3")
    page.get_by_label("Rule 1 duration (seconds)").fill("7200")
    role(page, "Save").click()
    expect()(page.locator("#period-0-start-error")).to_contain_text("periods[0].end")
    page.get_by_label("Period 1 end").fill("2031-01-04T00:00")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Calendars")

    calendar = next(
        c for c in server.api.get("/api/scheduler/calendars").json()["data"] if c["name"] == "Change freeze"
    )
    assert calendar["timezone"] == "Europe/Berlin"
    assert utc(calendar["periods"][0]["start"]) == utc("2030-12-19T23:00:00+00:00")
    assert calendar["recurring"][0]["hour"] == "3" and calendar["recurring"][0]["duration_seconds"] == 7200
    row = page.locator(f'tr[data-calendar-id="{calendar["_id"]}"]')
    expect()(row.get_by_test_id("calendar-counts")).to_contain_text("1 period, 1 recurring rule, 0 holidays")

    ics = tmp_path / "holidays.ics"
    ics.write_text(ICS)
    row.get_by_label("Import an iCalendar file into Change freeze").set_input_files(str(ics))
    expect()(row.get_by_test_id("calendar-counts")).to_contain_text("1 holiday")

    # Edit keeps what is stored and saves a change.
    role(row, "Edit").click()
    expect()(page.get_by_label("Period 1 start")).to_have_value("2030-12-20T00:00")
    page.get_by_label("Name", exact=True).fill("Year-end freeze")
    role(page, "Save").click()
    row = page.locator(f'tr[data-calendar-id="{calendar["_id"]}"]')
    expect()(row).to_contain_text("Year-end freeze")

    server.api.create_job(owner, name="Frozen report", **YEARLY, exclude_calendars=[calendar["_id"]])
    clean.go("/")
    clean.go("/calendars")
    expect()(row.get_by_test_id("calendar-used-by")).to_contain_text("Frozen report")
    role(row, "Delete").click()
    role(page.get_by_role("dialog"), "Delete").click()
    expect()(page.get_by_test_id("calendar-problem")).to_contain_text("still excluded by 1 job(s): 'Frozen report'")
    assert server.api.get(f"/api/scheduler/calendars/{calendar['_id']}").status_code == 200
