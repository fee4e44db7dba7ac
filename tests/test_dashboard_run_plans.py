"""The dashboard's screens for how a job's runs are planned (issue 21) in a real headless
Chromium: the job form's catch-up and daylight-saving inputs and their words on the job page,
the job page's next runs from the job preview (jitter, calendar exclusions, DST notes, why the
list ends or is empty), the Backfill dialog (dry run, start, progress, cancel, errors) and the
forecast's peak hours with their H suggestions applied from the Overview.

One live server and one browser serve the module (the browser's zone is Europe/Berlin).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.browser import expect, job_named, role, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess

skip_without_chromium()

YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # never fires during a test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("run-plans") / "data", env=SAMPLE_JOBS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Grace Hopper", email="grace@example.com", role="admin")


def job(server, job_id: str) -> dict:
    return server.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def policy(page, name: str):
    return page.get_by_test_id("job-policies").locator(f'[data-policy="{name}"]')


# --------------------------------------------------------------------------- 1. the form
def test_the_form_sets_catch_up_and_daylight_saving_and_the_job_page_says_them(clean, server, owner):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Nightly ledger")
    page.get_by_label("Owner").select_option(label="Grace Hopper (grace@example.com)")
    catchup = page.get_by_label("Runs found due late (the server was down)")
    expect()(catchup).to_have_value("latest")
    window = page.get_by_label("Still run when late by up to (seconds)")
    catchup.select_option("none")
    expect()(window).to_have_count(0)  # nothing late runs with none: no window
    catchup.select_option("all")
    window.fill("21600")
    expect()(page.locator("#job-catchup_window_seconds-hint")).to_contain_text("now 6 h")
    window.fill("5400")
    expect()(page.locator("#job-catchup_window_seconds-hint")).to_contain_text("now 1 h 30 min")
    window.fill("21600")
    spring = page.get_by_label("A run in a spring-forward gap (clocks skip its time)")
    fall = page.get_by_label("A run in a fall-back hour (clocks repeat its time)")
    expect()(spring).to_have_value("")
    spring.select_option("skip")
    fall.select_option("twice")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly ledger")

    saved = job_named(server, "Nightly ledger")
    assert saved["catchup_policy"] == "all" and saved["catchup_window_seconds"] == 21600
    assert saved["dst_policy"] == {"spring_forward": "skip", "fall_back": "twice"}
    expect()(policy(page, "catchup")).to_have_text("catches up every missed run for 6 h")
    expect()(policy(page, "dst")).to_have_text("skips a run in a spring-forward gap, runs twice in a fall-back hour")

    # Edit: the form shows what is stored; "default" for both clears dst_policy, none keeps the window.
    role(page, "Edit").click()
    expect()(page.get_by_label("A run in a spring-forward gap (clocks skip its time)")).to_have_value("skip")
    expect()(page.get_by_label("Still run when late by up to (seconds)")).to_have_value("21600")
    page.get_by_label("A run in a spring-forward gap (clocks skip its time)").select_option("")
    page.get_by_label("A run in a fall-back hour (clocks repeat its time)").select_option("")
    page.get_by_label("Runs found due late (the server was down)").select_option("none")
    role(page, "Save").click()
    expect()(policy(page, "catchup")).to_have_text("records missed runs, runs none")
    saved = job_named(server, "Nightly ledger")
    assert saved["catchup_policy"] == "none" and not saved["dst_policy"]
    expect()(policy(page, "dst")).to_have_count(0)

    # One rule of the fall-back hour only: the other key is not sent.
    role(page, "Edit").click()
    page.get_by_label("A run in a fall-back hour (clocks repeat its time)").select_option("once")
    page.get_by_label("Runs found due late (the server was down)").select_option("latest")
    role(page, "Save").click()
    expect()(policy(page, "dst")).to_have_text("runs once in a fall-back hour")
    expect()(policy(page, "catchup")).to_contain_text("runs only the latest missed run")
    assert job_named(server, "Nightly ledger")["dst_policy"] == {"fall_back": "once"}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({}, "runs only the latest missed run"),
        ({"catchup_policy": "latest", "catchup_window_seconds": 600}, "runs only the latest missed run (up to 10 min"),
        ({"catchup_policy": "all"}, "catches up every missed run for the server's MISFIRE_GRACE_TIME"),
        ({"dst_policy": {"spring_forward": "at_change"}}, "runs a run in a spring-forward gap at the change"),
        ({"dst_policy": {"spring_forward": "shift"}}, "shifts a run in a spring-forward gap by the gap"),
    ],
)
def test_the_job_page_says_each_catch_up_and_dst_rule(clean, server, owner, fields, words):
    job_id = server.api.create_job(owner, name=f"Words {words}", **YEARLY, **fields)
    clean.open(f"/jobs/{job_id}")
    expect()(clean.page.get_by_test_id("job-policies")).to_contain_text(words)


# --------------------------------------------------------------------------- 2. next runs
def test_next_runs_come_from_the_job_preview(clean, server, owner):
    page = clean.page
    # Daily at 02:30 Berlin, skipping the spring-forward gap; jitter; the next 31 December blacked out.
    year = datetime.now(UTC).year + 1
    calendar = server.api.post(
        "/api/scheduler/calendars",
        json={"user_id": owner, "name": "Quiet days", "periods": [
            {"start": f"{year}-03-27T00:00:00+01:00", "end": f"{year}-03-28T00:00:00+01:00"}]},
    )  # fmt: skip
    assert calendar.status_code == 201, calendar.text
    start = f"{year}-03-25T00:00:00+01:00"
    job_id = server.api.create_job(
        owner, name="Night batch", minute="30", hour="2", timezone="Europe/Berlin", jitter_seconds=60,
        dst_policy={"spring_forward": "skip"}, start_at=start, max_runs=4,
        exclude_calendars=[calendar.json()["calendar_id"]],
    )  # fmt: skip
    preview = server.api.get(f"/api/scheduler/jobs/{job_id}/preview", params={"count": 10}).json()
    clean.open(f"/jobs/{job_id}")
    runs = page.get_by_test_id("job-next-runs").get_by_test_id("next-run")
    expect()(runs).to_have_count(len(preview["runs"]))
    first = preview["runs"][0]
    assert first["scheduled_at"] == job(server, job_id)["next_run_time"] or first.get("excluded_by")
    expect()(runs.nth(0)).to_contain_text(f"Mar 25, {year}")
    expect()(runs.nth(0)).to_contain_text("GMT+1")  # the job's zone, named
    delayed = next(r for r in preview["runs"] if r.get("delay_seconds"))
    expect()(page.get_by_test_id("job-next-runs")).to_contain_text(f"+{delayed['delay_seconds']} s jitter")
    excluded = page.locator(".next-runs li.not-run", has_text="excluded by Quiet days")
    expect()(excluded).to_have_count(1)
    expect()(excluded.locator("s")).to_contain_text(f"Mar 27, {year}")
    skipped = next(r for r in preview["runs"] if r.get("dst") == "skipped")
    expect()(page.locator('[data-dst="skipped"]')).to_have_text(skipped["dst_note"])
    expect()(page.get_by_test_id("next-runs-ends")).to_have_text(f"Ends: {preview['ends']}")
    assert preview["ends"].startswith("max_runs")

    # Paused: no runs, and why.
    server.api.patch(f"/api/scheduler/jobs/{job_id}/pause", json={"note": "ledger frozen"})
    page.reload()  # the same route: open() would not load it again
    expect()(page.get_by_test_id("next-runs-reason")).to_contain_text("ledger frozen")
    expect()(page.get_by_test_id("job-next-runs")).to_have_count(0)


# --------------------------------------------------------------------------- 3. backfill
def test_backfill_previews_starts_follows_and_cancels(clean, server, owner):
    page = clean.page
    job_id = server.api.create_job(owner, name="Hourly import", minute="0", timezone="Europe/Berlin")
    clean.open(f"/jobs/{job_id}")
    role(page, "Backfill…").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog.get_by_label("From (Europe/Berlin time)")).to_be_visible()
    # to before from: the API's 400 shows in the dialog.
    dialog.get_by_label("From (Europe/Berlin time)").fill("2026-03-29T10:00:00")
    dialog.get_by_label("To (Europe/Berlin time)").fill("2026-03-29T00:00:00")
    role(dialog, "Preview").click()
    expect()(dialog.get_by_test_id("backfill-error")).to_contain_text("Invalid field to")
    # The spring-forward day: 23 hourly runs in Berlin.
    dialog.get_by_label("From (Europe/Berlin time)").fill("2026-03-29T00:00:00")
    dialog.get_by_label("To (Europe/Berlin time)").fill("2026-03-29T23:59:59")
    role(dialog, "Preview").click()
    expect()(dialog.get_by_test_id("backfill-error")).to_have_count(0)
    expect()(dialog.get_by_test_id("backfill-preview")).to_contain_text("23 occurrences")
    expect()(dialog.get_by_test_id("backfill-preview").locator("li")).to_have_count(10)
    expect()(dialog.get_by_test_id("backfill-preview")).to_contain_text("and 13 more")

    dialog.get_by_label("At most this many runs").fill("2")
    role(dialog, "Start").click()
    expect()(dialog.get_by_test_id("backfill-done")).to_have_text("2 of 2", timeout=30_000)
    expect()(dialog.get_by_test_id("backfill-status")).to_have_text("completed")
    runs = server.api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"]
    assert sorted(r["scheduled_at"][:19] for r in runs if r.get("trigger") == "backfill") == [
        "2026-03-28T23:00:00",
        "2026-03-29T00:00:00",
    ]
    role(dialog, "Close").click()

    # Again: the two that ran are marked, and are not run again.
    role(page, "Backfill…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("From (Europe/Berlin time)").fill("2026-03-29T00:00:00")
    dialog.get_by_label("To (Europe/Berlin time)").fill("2026-03-29T01:30:00")
    role(dialog, "Preview").click()
    preview = dialog.get_by_test_id("backfill-preview")
    expect()(preview).to_contain_text("2 occurrences, 2 of them already have a run")
    expect()(preview.locator("li", has_text="already has a run")).to_have_count(2)
    role(dialog, "Close").click()

    # A long one is cancelled from the dialog; paused, the job refuses (409 in the dialog).
    slow = server.api.create_job(
        owner, name="Slow import", minute="*", job_class_string="tests.sample_jobs.operations.PoliteJob",
        pub_kwargs={"seconds": 30},
    )  # fmt: skip
    clean.open(f"/jobs/{slow}")
    role(page, "Backfill…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("From (Europe/Berlin time)").fill("2026-01-01T00:00:00")
    dialog.get_by_label("To (Europe/Berlin time)").fill("2026-01-01T01:00:00")
    role(dialog, "Start").click()
    expect()(dialog.get_by_test_id("backfill-status")).to_have_text("running")
    expect()(dialog.get_by_test_id("backfill-done")).to_contain_text("of 61")
    role(dialog, "Cancel backfill").click()
    expect()(dialog.get_by_test_id("backfill-status")).to_have_text("cancelled")
    expect()(role(dialog, "Cancel backfill")).to_have_count(0)
    role(dialog, "Close").click()

    server.api.patch(f"/api/scheduler/jobs/{slow}/pause")
    clean.open(f"/jobs/{slow}")
    role(page, "Backfill…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("From (Europe/Berlin time)").fill("2026-01-01T00:00:00")
    dialog.get_by_label("To (Europe/Berlin time)").fill("2026-01-01T01:00:00")
    role(dialog, "Start").click()
    expect()(dialog.get_by_test_id("backfill-error")).to_contain_text("paused")
    role(dialog, "Close").click()
    for run in server.api.get("/api/scheduler/executions", params={"job_id": slow}).json()["data"]:
        if run["status"] in ("scheduled", "running"):
            server.api.post(f"/api/scheduler/executions/{run['_id']}/cancel")


# --------------------------------------------------------------------------- 4. forecast
def test_the_forecast_marks_peaks_and_applies_an_h_suggestion(clean, server, owner):
    page = clean.page
    for run in server.api.get("/api/scheduler/jobs").json()["data"]:  # earlier tests' jobs out of the way
        server.api.patch(f"/api/scheduler/jobs/{run['_id']}/pause")
    crowd = [server.api.create_job(owner, name=f"Crowd {i:02}", minute="0") for i in range(11)]
    quiet = server.api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "Nights", "recurring": [
        {"minute": "0", "hour": "2", "timezone": "UTC", "duration_seconds": 3600}]})  # fmt: skip
    assert quiet.status_code == 201, quiet.text
    server.api.create_job(owner, name="Night owl", minute="30", exclude_calendars=[quiet.json()["calendar_id"]])

    forecast = server.api.get("/api/scheduler/forecast", params={"hours": 168}).json()
    assert forecast["total_excluded"] >= 6  # 02:30 UTC of each coming day
    clean.open("/")
    peaks = page.get_by_test_id("forecast-peaks")
    expect()(peaks).to_contain_text("11 starts at")
    assert page.locator('.hm-cell[data-peak="true"]').count() >= 160  # every hour's :00 of the week
    expect()(page.get_by_test_id("forecast-excluded")).to_contain_text(
        f"{forecast['total_excluded']} runs excluded by calendars"
    )
    expect()(page.locator('.hm-cell[title*="1 excluded by calendars"]')).to_have_count(forecast["total_excluded"])

    # A crowd job whose own H minute is not :00 (it is derived from its random id).
    def own_minute(job_id: str) -> str:
        answer = server.api.get("/api/scheduler/cron/preview", params={"job_id": job_id, "minute": "H"}).json()
        return answer["hashed"]["minute"]

    spread = next(j for j in crowd if own_minute(j) != "0")
    name = job(server, spread)["name"]
    row = peaks.locator(f'tr[data-job-id="{spread}"]')
    expect()(row.get_by_test_id("suggested-schedule")).to_have_text("0 H * * * * *")
    apply = row.get_by_role("button", name=f"Apply the suggested schedule to {name}")
    apply.click()
    confirm = page.get_by_role("dialog")
    expect()(confirm).to_contain_text(f"Spread “{name}”?")
    role(confirm, "Cancel").click()
    assert job(server, spread)["minute"] == "0"
    apply.click()
    role(page.get_by_role("dialog"), "Apply").click()
    expect()(peaks).to_have_count(0)  # ten at :00 are no longer more than ten
    assert job(server, spread)["minute"] == "H"
