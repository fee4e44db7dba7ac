"""The dashboard's operations features in a real headless Chromium: time limit, retries and
alerts through the job form; a running script's output followed live (Server-Sent Events);
Cancel on the execution page and in the job's runs; attempts and alerts of a retried run.

One live server (with a SCRIPTS_DIR holding a script that prints a line every 0.3 s) and one
browser serve the module; the tests run in file order, as in test_dashboard.py.
"""

from __future__ import annotations

import re
import stat

import pytest

from tests.browser import expect, job_named, role, shot, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

# Prints "tick 1", "tick 2", ... every 0.3 s (`--count N` lines, default 30: 9 s), then "done".
TICKER = """#!/bin/sh
count=30
if [ "$1" = "--count" ]; then count=$2; fi
i=1
while [ "$i" -le "$count" ]; do
  echo "tick $i"
  i=$((i + 1))
  sleep 0.3
done
echo done
"""


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("operations")
    scripts = base / "scripts"
    scripts.mkdir()
    ticker = scripts / "ticker.sh"
    ticker.write_text(TICKER)
    ticker.chmod(ticker.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = {**SAMPLE_JOBS, "TEXIUM_SCRIPTS_DIR": str(scripts), "TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8"}
    process = ServerProcess("sqlite", base / "data", env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(server):
    """An admin user: CustomScriptJob is admin-only."""
    return server.api.create_user(name="Grace Hopper", email="grace@example.com", role="admin")


def execution(server, execution_id: str) -> dict:
    return server.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]


def ticker_job(server, admin, name: str, count: int = 30) -> str:
    return server.api.create_job(
        admin,
        name=name,
        minute="0",  # run-now only: once a year (the default fires every minute)
        hour="0",
        day_of_month="1",
        month="1",
        job_class_string="jobs.custom.CustomScriptJob",
        pub_args=["ticker.sh"],
        pub_kwargs={"count": count},
    )


# --------------------------------------------------------------------------- the job form
def test_the_form_sets_time_limit_retries_and_alerts(clean, server, admin):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Guarded echo")
    page.get_by_label("Job class").select_option("jobs.echo.EchoJob")
    page.get_by_label("Owner").select_option(label="Grace Hopper (grace@example.com)")
    # Defaults: no time limit (the server's), no retries, 60 s exponential, alerts off.
    expect()(page.get_by_label("Time limit (seconds)")).to_have_value("")
    expect()(page.get_by_label("Retries", exact=True)).to_have_value("0")
    expect()(page.get_by_label("Retry delay (seconds)")).to_have_value("60")
    expect()(page.get_by_label("Backoff")).to_have_value("exponential")
    for event in ("Failure", "Recovery", "Timeout", "Missed"):
        expect()(page.get_by_label(event, exact=True)).to_be_checked()

    page.get_by_label("Time limit (seconds)").fill("120")
    page.get_by_label("Retries", exact=True).fill("11")  # over the API's 10: its 400 shows at the field
    page.get_by_label("Retry delay (seconds)").fill("5")
    page.get_by_label("Backoff").select_option("fixed")
    page.get_by_label("Alert emails").fill("ops@example.com,\noncall@example.com")
    page.get_by_label("Alert webhook URL").fill("https://hooks.example.com/texium")
    for event in ("Failure", "Recovery", "Timeout", "Missed"):
        page.get_by_label(event, exact=True).uncheck()
    role(page, "Save").click()
    expect()(page.locator("#job-notify_events-error")).to_contain_text("at least one event")  # checked here
    page.get_by_label("Failure", exact=True).check()
    page.get_by_label("Timeout", exact=True).check()
    expect()(page.locator("#job-notify_events-error")).to_have_count(0)
    role(page, "Save").click()
    expect()(page.locator("#job-retries-error")).to_contain_text("Invalid field retries")  # the API's 400
    page.get_by_label("Retries", exact=True).fill("2")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Guarded echo")

    job = job_named(server, "Guarded echo")
    assert job["timeout_seconds"] == 120
    assert job["retries"] == 2 and job["retry_delay_seconds"] == 5 and job["retry_backoff"] == "fixed"
    # The e-mail and the webhook become channels of the owner, named with the events (see README, Alerts).
    assert job["notify"]["email"] == [] and job["notify"]["webhook"] is None
    assert job["notify"]["events"] == ["failure", "timeout"]
    made = {c["_id"]: c for c in server.api.get("/api/scheduler/channels").json()["data"]}
    entries = job["notify"]["channels"]
    assert [e["events"] for e in entries] == [["failure", "timeout"]] * 2
    assert [made[e["id"]]["kind"] for e in entries] == ["email", "webhook"]
    assert made[entries[0]["id"]]["recipients"] == ["ops@example.com", "oncall@example.com"]
    assert made[entries[1]["id"]]["url"] == "https://hooks.example.com/texium"
    expect()(page.get_by_test_id("job-timeout")).to_contain_text("120 s")
    expect()(page.get_by_test_id("job-retries")).to_contain_text("up to 2 after a failed or timed-out run")
    expect()(page.get_by_test_id("job-retries")).to_contain_text("fixed delay")
    expect()(page.get_by_test_id("job-notify")).to_contain_text("failure, timeout")
    expect()(page.get_by_test_id("job-alert-state")).to_contain_text("ok")

    # Edit: the form shows what is stored (the channels made from the e-mail and webhook);
    # unticking them turns alerts off (null), an empty time limit goes back to the server's default (null).
    role(page, "Edit").click()
    expect()(page.get_by_label("Time limit (seconds)")).to_have_value("120")
    expect()(page.get_by_label("Backoff")).to_have_value("fixed")
    expect()(page.get_by_label("Alert emails")).to_have_value("")
    for name in ("ops@example.com, oncall@example.com", "webhook https://hooks.example.com"):
        box = page.get_by_role("checkbox", name=name)  # the channel's name and kind
        expect()(box).to_be_checked()
        box.uncheck()
    page.get_by_label("Time limit (seconds)").fill("")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Guarded echo")
    job = job_named(server, "Guarded echo")
    assert job["timeout_seconds"] is None and job["notify"] is None
    assert job["retries"] == 2  # untouched fields keep their values
    expect()(page.get_by_test_id("job-notify")).to_have_text("none")
    expect()(page.get_by_test_id("job-timeout")).to_have_text("server default")


# --------------------------------------------------------------------------- live output, cancel
def test_a_running_script_is_followed_live_and_cancelled(clean, server, admin):
    page = clean.page
    job_id = ticker_job(server, admin, "Ticker", count=60)
    execution_id = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    clean.open(f"/executions/{execution_id}")
    output = page.get_by_test_id("execution-output")
    live = page.get_by_test_id("output-live")
    expect()(output).to_contain_text("tick 2", timeout=10_000)
    expect()(live).to_have_attribute("data-phase", "live")
    assert execution(server, execution_id)["status"] == "running", "the lines came before the run ended"
    expect()(page.get_by_test_id("execution-status")).to_have_text("running")
    # More lines keep arriving; past ~23 the box overflows and stays scrolled to the bottom.
    expect()(output).to_contain_text("tick 26", timeout=15_000)
    text = output.inner_text()
    assert text.startswith("tick 1\ntick 2\ntick 3\n"), text  # each line once, in order
    assert output.evaluate("el => el.scrollHeight > el.clientHeight + 20"), "the box overflows by now"
    at_bottom = "el => el.scrollHeight - el.scrollTop - el.clientHeight <= 8"
    expect()(output).to_contain_text("tick 27", timeout=5_000)
    assert output.evaluate(at_bottom)
    # A reader who scrolled up is left where they are while lines keep coming.
    output.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    expect()(output).to_contain_text("tick 29", timeout=5_000)
    assert output.evaluate("el => el.scrollTop") == 0
    output.evaluate("el => { el.scrollTop = el.scrollHeight; el.dispatchEvent(new Event('scroll')); }")
    expect()(output).to_contain_text("tick 31", timeout=5_000)
    assert output.evaluate(at_bottom), "back at the bottom, it follows again"

    cancel = role(page, "Cancel")
    cancel.click()
    dialog = page.get_by_role("dialog")
    expect()(dialog).to_contain_text("Cancel this run?")
    role(dialog, "Keep it").click()  # asked, not done
    expect()(cancel).to_be_enabled()
    assert execution(server, execution_id)["cancel_requested_at"] is None
    cancel.click()
    role(page.get_by_role("dialog"), "Cancel the run").click()
    expect()(page.locator(".toast").filter(has_text="Cancellation requested")).to_be_visible()
    expect()(page.get_by_test_id("execution-status")).to_have_text("cancelled", timeout=10_000)
    expect()(role(page, "Cancel")).to_have_count(0)  # an ended run has no Cancel
    expect()(live).to_have_count(0)  # the stream ended; the stored output shows
    expect()(output).to_contain_text("tick 1")
    record = execution(server, execution_id)
    assert record["status"] == "cancelled" and record["cancel_requested_at"]
    assert "done" not in record["output"].split("\n"), "the script was stopped before its end"
    if record.get("cancelled_by"):
        expect()(page.get_by_test_id("execution-cancelled")).to_contain_text(record["cancelled_by"])
    shot(page, "execution-cancelled-1280")


def test_a_short_run_streams_to_its_end_and_shows_the_stored_output(clean, server, admin):
    page = clean.page
    job_id = ticker_job(server, admin, "Short ticker", count=8)
    execution_id = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    clean.open(f"/executions/{execution_id}")
    output = page.get_by_test_id("execution-output")
    expect()(output).to_contain_text("tick 1", timeout=10_000)
    expect()(page.get_by_test_id("execution-status")).to_have_text("completed", timeout=15_000)
    expect()(page.get_by_test_id("output-live")).to_have_count(0)
    expect()(output).to_contain_text("tick 8")
    expect()(output).to_contain_text("done")


def test_cancel_from_the_jobs_recent_runs(clean, server, admin):
    page = clean.page
    job_id = ticker_job(server, admin, "Ticker two")
    execution_id = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert wait_for(lambda: execution(server, execution_id)["status"] == "running", timeout=10)
    clean.open(f"/jobs/{job_id}")
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect()(row).to_contain_text("running")
    row.get_by_role("button", name=re.compile("Cancel")).click()
    role(page.get_by_role("dialog"), "Cancel the run").click()
    expect()(row).to_contain_text("cancelled", timeout=10_000)
    expect()(row.get_by_role("button")).to_have_count(0)
    assert execution(server, execution_id)["status"] == "cancelled"

    # The overview counts it with the other figures.
    clean.go("/")
    stats = server.api.get("/api/scheduler/stats").json()["stats"]
    assert stats["cancelled_executions"] >= 2
    card = page.locator(".card").filter(has_text="Timed out")
    expect()(card).to_contain_text(f"{stats['cancelled_executions']} cancelled")


# --------------------------------------------------------------------------- retries and alerts
def test_a_retried_run_links_its_attempts_and_lists_its_alerts(clean, server, admin):
    page = clean.page
    job_id = server.api.create_job(
        admin,
        name="Flaky",
        minute="0",
        hour="0",
        day_of_month="1",
        month="1",
        job_class_string="tests.sample_jobs.slow.SlowJob",
        pub_kwargs={"seconds": 0.1, "fail": True},
        retries=1,
        retry_delay_seconds=0,
        retry_backoff="fixed",
        # Nothing listens on port 9: the alert's delivery fails, and the run's page says so.
        notify={"email": [], "webhook": "http://127.0.0.1:9/alerts", "events": ["failure"]},
    )
    first = server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    done = ("completed", "failed", "retried", "timeout", "cancelled", "abandoned")
    assert server.api.wait_execution(first, timeout=20, done=done)["status"] == "retried"
    second = execution(server, first)["next_attempt_id"]
    assert second
    last = server.api.wait_execution(second, timeout=20, done=done)
    assert last["status"] == "failed" and last["attempt"] == 2 and last["retry_of"] == first

    clean.open(f"/executions/{first}")
    expect()(page.get_by_test_id("execution-status")).to_have_text("retried")
    expect()(page.get_by_test_id("execution-attempt")).to_contain_text("attempt 1 of 2")
    role(page.get_by_test_id("execution-attempt"), "next attempt", "link").click()
    expect()(page.get_by_test_id("execution-status")).to_have_text("failed")
    expect()(page.get_by_test_id("execution-attempt")).to_contain_text("attempt 2 of 2")
    alerts = page.get_by_test_id("execution-alerts")
    expect()(alerts).to_contain_text("webhook", timeout=15_000)  # recorded once delivery was tried
    expect()(alerts).to_contain_text("failure")
    expect()(alerts).to_contain_text("127.0.0.1:9")
    expect()(alerts).to_contain_text("failed")
    role(page.get_by_test_id("execution-attempt"), "first attempt", "link").click()
    expect()(page.get_by_test_id("execution-status")).to_have_text("retried")

    clean.go(f"/jobs/{job_id}")
    expect()(page.get_by_test_id("job-alert-state")).to_contain_text("failing")
    expect()(page.locator(f'tr[data-execution-id="{second}"]')).to_contain_text("#2")
    clean.go("/executions?status=retried")
    expect()(page.get_by_label("Status")).to_have_value("retried")
    expect()(page.locator(f'tr[data-execution-id="{first}"]')).to_contain_text("retried")
