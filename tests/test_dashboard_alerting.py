"""The dashboard's side of issue 22's job alert rules in a real headless Chromium: the job form's
noise control, mutes, duration and deadline inputs (saved, shown again, kept by an edit that did
not touch them, a 400 under the input it names), the new events in the pickers, the job page's
rules, alert state and channels in words, and the Channels page's apprise kind and digest
deliveries (held and digested messages against a real local receiver).

One live server and one browser serve the module; the tests build on each other, in file order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.browser import expect, job_named, role, skip_without_chromium
from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

FLAKY = "tests.sample_jobs.operations.FlakyJob"
NEVER = {"minute": "0", "hour": "3", "day_of_month": "1", "month": "1"}  # fires only by Run now here
# Receivers on loopback over http; a short digest window with one job's messages sent alone.
ENV = {
    **SAMPLE_JOBS,
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_ALERT_DIGEST_SECONDS": "2",
    "TEXIUM_ALERT_DIGEST_AFTER": "1",
}
NEW_EVENTS = ("Still failing", "Flapping", "Skipped", "Long running", "Too short", "Deadline missed", "Adherence low")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("alerting-ui") / "data", env=ENV).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def receiver():
    with http_server(statuses=(200,)) as peer:
        yield peer


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Ada Lovelace", email="ada@example.com")


@pytest.fixture(scope="module")
def calendar(server, owner):
    response = server.api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "Maintenance"})
    assert response.status_code == 201, response.text
    return response.json()["calendar_id"]


@pytest.fixture(scope="module")
def hook(server, owner, receiver):
    """A webhook channel of the owner, to the local receiver."""
    body = {"user_id": owner, "name": "Ops hook", "kind": "webhook", "url": receiver.url + "/hook"}
    response = server.api.post("/api/scheduler/channels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def fresh(session, route: str) -> None:
    """Open a page with its data loaded now (the same hash again would not load it again)."""
    session.open("/no-such-page")
    session.go(route)


# --------------------------------------------------------------------------- the job form
def test_alert_rules_are_saved_shown_again_kept_by_an_edit_and_said_in_words(clean, server, owner, calendar, hook):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Nightly report")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Alert after failures in a row").fill("3")
    page.get_by_label("Alert again every (seconds) while failing").fill("14400")
    page.get_by_label("Flapping after this many changes").fill("4")
    page.get_by_label("Flapping window (seconds)").fill("600")
    page.get_by_label("Muted until (Europe/Berlin time)").fill("2030-12-24T18:00")
    page.get_by_label("Muted during (calendars)").select_option(label="Maintenance")
    page.get_by_label("Alert while running longer than (seconds)").fill("3600")
    page.get_by_label("Alert when longer than this × the usual p95").fill("2.5")
    page.get_by_label("Alert when a success took less than (seconds)").fill("60")
    page.get_by_label("Must have succeeded by (HH:MM)").fill("06:00")
    page.get_by_label("Deadline zone").select_option("America/New_York")
    page.get_by_label("Deadline days of week").fill("funday")  # the API's 400 shows under this input
    page.get_by_label("Ops hook (Webhook)").check()
    events = page.get_by_role("group", name="Events sent to Ops hook")
    for label in NEW_EVENTS:  # offered, not ticked by default
        expect()(events.get_by_label(label, exact=True)).not_to_be_checked()
    events.get_by_label("Still failing", exact=True).check()
    events.get_by_label("Deadline missed", exact=True).check()
    role(page, "Save").click()
    expect()(page.locator("#job-deadline_day_of_week-error")).to_contain_text("Invalid field deadline.day_of_week")
    expect()(page.locator("main h1")).to_have_text("New job")
    page.get_by_label("Deadline days of week").fill("mon-fri")
    expect()(page.locator("#job-deadline_day_of_week-error")).to_have_count(0)
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly report")

    job = job_named(server, "Nightly report")
    assert job["alert_after_failures"] == 3 and job["realert_every_seconds"] == 14400
    assert job["flap_threshold"] == 4 and job["flap_window_seconds"] == 600
    assert datetime.fromisoformat(job["mute_until"]) == datetime(2030, 12, 24, 17, 0, tzinfo=UTC)
    assert job["mute_calendars"] == [calendar]
    assert job["max_duration_seconds"] == 3600 and job["duration_anomaly_factor"] == 2.5
    assert job["min_duration_seconds"] == 60
    assert job["deadline"]["time"] == "06:00" and job["deadline"]["timezone"] == "America/New_York"
    assert job["deadline"]["day_of_week"] == "mon-fri"
    assert job["notify"]["channels"] == [
        {"id": hook, "events": ["failure", "recovery", "timeout", "missed", "still_failing", "deadline_missed"]}
    ]

    # The job page says the rules in words, and where the alerts go.
    rules = page.get_by_test_id("job-alert-rules")
    for words in (
        "alerts after 3 failures in a row",
        "again every 4 h while failing",
        "flapping after more than 4 changes of state in 10 min",
        "muted until",
        "muted during: Maintenance",
        "alerts while a run takes longer than 1 h",
        "alerts when a run takes longer than 2.5 × its p95",
        "alerts when a success takes less than 1 min",
        "deadline 06:00 America/New_York mon-fri, next judged at",
    ):
        expect()(rules).to_contain_text(words)
    expect()(rules.locator("[data-rule=deadline]")).to_contain_text("EST")  # in the deadline's own zone
    channels = page.get_by_test_id("job-notify-channels")
    sent = "failure, recovery, timeout, missed, still_failing, deadline_missed"
    expect()(channels).to_contain_text(f"Ops hook (Webhook): {sent}")

    # Edit: the form shows what is stored; changing one rule keeps every other as it was.
    role(page, "Edit").click()
    expect()(page.get_by_label("Alert after failures in a row")).to_have_value("3")
    expect()(page.get_by_label("Muted until (Europe/Berlin time)")).to_have_value("2030-12-24T18:00")
    expect()(page.get_by_label("Alert when longer than this × the usual p95")).to_have_value("2.5")
    expect()(page.get_by_label("Must have succeeded by (HH:MM)")).to_have_value("06:00")
    expect()(page.get_by_label("Deadline zone")).to_have_value("America/New_York")
    expect()(page.get_by_label("Deadline days of week")).to_have_value("mon-fri")
    hook_events = page.get_by_role("group", name="Events sent to Ops hook")
    expect()(hook_events.get_by_label("Still failing", exact=True)).to_be_checked()
    page.get_by_label("Alert after failures in a row").fill("1001")  # over the API's 1000: its 400 under the input
    role(page, "Save").click()
    expect()(page.locator("#job-alert_after_failures-error")).to_contain_text("alert_after_failures")
    page.get_by_label("Alert after failures in a row").fill("5")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly report")
    edited = job_named(server, "Nightly report")
    assert edited["alert_after_failures"] == 5
    kept = ("mute_until", "mute_calendars", "deadline", "deadline_due_at", "duration_anomaly_factor")
    for key in (*kept, "flap_window_seconds", "notify"):
        assert edited[key] == job[key], key

    # Clearing the deadline's time removes the deadline.
    role(page, "Edit").click()
    page.get_by_label("Must have succeeded by (HH:MM)").fill("")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly report")
    assert job_named(server, "Nightly report")["deadline"] is None
    expect()(page.get_by_test_id("job-alert-rules").locator("[data-rule=deadline]")).to_have_count(0)


def test_the_e_mail_and_webhook_events_offer_the_new_events_and_save_them(clean, server, owner):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Backup")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Alert emails").fill("ada@example.com")
    events = page.get_by_role("group", name="Alert on")
    for label in NEW_EVENTS:
        expect()(events.get_by_label(label, exact=True)).not_to_be_checked()
    hint = "a run succeeded in less than the minimum duration"
    expect()(events.get_by_label("Too short", exact=True)).to_have_attribute("title", hint)
    events.get_by_label("Too short", exact=True).check()
    events.get_by_label("Skipped", exact=True).check()
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Backup")
    notify = job_named(server, "Backup")["notify"]
    assert notify["events"] == ["failure", "recovery", "timeout", "missed", "skipped", "too_short"]
    # The e-mail became a channel of the owner, named with those events; the page names it.
    assert [e["events"] for e in notify["channels"]] == [notify["events"]]
    named = "ada@example.com (E-mail): failure, recovery, timeout, missed, skipped, too_short"
    expect()(page.get_by_test_id("job-notify-channels")).to_contain_text(named)


def test_the_adherence_target_is_set_in_the_form_and_said_on_the_job_page(clean, server, owner):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Hourly sync")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("On time within (seconds)").fill("120")
    page.get_by_label("Adherence target (0–1)").fill("0.95")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Hourly sync")
    job = job_named(server, "Hourly sync")
    assert job["adherence_seconds"] == 120 and job["adherence_target"] == 0.95
    expect()(page.get_by_test_id("job-alert-rules")).to_contain_text(
        "alerts when under 95 % of a week's runs start within 2 min of their time"
    )


# --------------------------------------------------------------------------- the job page's alert state
def test_the_job_page_shows_the_failure_streak(clean, server, owner, hook, tmp_path):
    job_id = server.api.create_job(
        owner,
        name="Flaky sync",
        job_class_string=FLAKY,
        alert_after_failures=3,
        pub_kwargs={"counter_path": str(tmp_path / "runs"), "failures": 5},
        notify={"channels": [{"id": hook, "events": ["failure"]}]},
        **NEVER,
    )
    for _ in range(2):
        execution_id = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert server.api.wait_execution(execution_id)["status"] == "failed"
    assert wait_for(lambda: server.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"].get("alert_streak") == 2)
    fresh(clean, f"/jobs/{job_id}")
    page = clean.page
    expect()(page.get_by_test_id("job-alert-state")).to_contain_text("failing")
    expect()(page.get_by_test_id("job-alert-streak")).to_contain_text("2 failures in a row since")
    expect()(page.get_by_test_id("job-alert-rules")).to_contain_text("alerts after 3 failures in a row")


# --------------------------------------------------------------------------- the Channels page
def test_an_apprise_channel_is_created_with_its_url_write_only(clean, server, owner):
    page = clean.page
    clean.open("/channels/new")
    page.get_by_label("Name", exact=True).fill("Gotify")
    page.get_by_label("Owner").select_option(label="Ada Lovelace (ada@example.com)")
    page.get_by_label("Kind").select_option(label="Apprise (other services)")
    page.get_by_label("Apprise URL").fill("json://127.0.0.1:9/secretpath")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Channels")
    row = page.locator("table.channels tbody tr").filter(has=page.get_by_role("link", name="Gotify", exact=True))
    expect()(row.get_by_test_id("channel-destination")).to_have_text("json://***")
    assert "secretpath" not in page.content()
    # Editing shows the mask; saved untouched, the stored URL is kept.
    row.get_by_role("button", name="Edit").click()
    expect()(page.get_by_label("Apprise URL")).to_have_value("json://***")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Channels")
    channel = next(c for c in server.api.get("/api/scheduler/channels").json()["data"] if c["name"] == "Gotify")
    assert channel["kind"] == "apprise" and channel["url"] == "json://***" and channel["has_secret"]


def test_held_and_digested_deliveries_read_sensibly(clean, server, owner, hook, receiver, tmp_path):
    """Two jobs fail at once; with ALERT_DIGEST_AFTER=1 the second one's failure is held and
    then sent in the channel's digest."""
    notify = {"channels": [{"id": hook, "events": ["failure"]}]}
    for name in ("Crowd one", "Crowd two"):
        job_id = server.api.create_job(
            owner,
            name=name,
            job_class_string=FLAKY,
            notify=notify,
            **NEVER,
            pub_kwargs={"counter_path": str(tmp_path / name), "failures": 5},
        )
        execution_id = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert server.api.wait_execution(execution_id)["status"] == "failed"

    def deliveries():
        return server.api.get(f"/api/scheduler/channels/{hook}/deliveries").json()["data"]

    assert wait_for(lambda: any(d["event"] == "digest" and d["ok"] for d in deliveries()), timeout=20)
    assert any(d.get("status") == "digested" for d in deliveries())
    assert any(json.loads(r["body"]).get("event") == "digest" for r in receiver.requests)
    fresh(clean, f"/channels/{hook}")
    page = clean.page
    table = page.get_by_test_id("channel-deliveries")
    expect()(table).to_contain_text("digest (1 held alert)")
    expect()(table).to_contain_text("sent in a digest")
