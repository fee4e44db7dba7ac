"""The dashboard's heartbeat monitors (issue 22) in a real headless Chromium: the Monitors page
and form; the ping URL shown once in a dialog (with its curl and crontab lines) and working when
pinged from here with an HTTP client; the monitor's state and pings following the pings (up,
then down on /fail); Rotate URL (the old URL then answers 404); pause, resume, edit, delete; and
monitor pings in the executions list and on an execution's page (linked to the monitor, no
broken job link).

One live server and one browser serve the module; the tests build on each other's monitor, in
file order.
"""

from __future__ import annotations

import pytest
import requests

from tests.browser import expect, role, skip_without_chromium
from tests.server_process import ServerProcess

skip_without_chromium()

NAME = "Nightly backup"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("monitors-ui") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Grace Hopper", email="grace@example.com")


@pytest.fixture(scope="module")
def shared():
    """What one test hands the next: the monitor's id and its current ping URL."""
    return {}


def ping_url_dialog(page) -> str:
    """The ping URL the open dialog shows, after checking its curl and crontab lines."""
    dialog = page.get_by_role("dialog")
    expect()(dialog).to_contain_text("it will not be shown again")
    url = dialog.get_by_label("Ping URL", exact=True).input_value()
    expect()(dialog.get_by_label("curl line", exact=True)).to_have_value(f"curl -fsS -m 10 --retry 3 {url}")
    expect()(dialog.get_by_label("Crontab line with texium ping-run", exact=True)).to_have_value(
        f"0 2 * * * texium ping-run {url} -- /usr/local/bin/backup.sh"
    )
    return url


def state_of(page):
    return page.locator("main").get_by_test_id("monitor-state").first


def test_a_monitor_created_in_the_page_shows_its_url_once_and_goes_up_then_down(clean, server, owner, shared):
    page = clean.page
    clean.open("/")
    role(page, "Monitors", "link").click()
    expect()(page.locator("main h1")).to_have_text("Monitors")
    expect()(page.get_by_text("No monitors yet.")).to_be_visible()

    role(page, "New monitor").click()
    expect()(page.locator("main h1")).to_have_text("New monitor")
    page.get_by_label("Name", exact=True).fill(NAME)
    page.get_by_label("Owner").select_option(label="Grace Hopper (grace@example.com)")
    page.get_by_label("Period (seconds)").fill("3600")
    # A bad grace is the API's 400, shown at the field it names.
    page.get_by_label("Grace (seconds)").fill("-5")
    role(page, "Save").click()
    expect()(page.locator("#monitor-grace_seconds-error")).to_contain_text("grace_seconds")
    page.get_by_label("Grace (seconds)").fill("600")
    role(page, "Save").click()

    url = ping_url_dialog(page)
    assert url.startswith(f"{server.api.base_url}/ping/")
    page.get_by_role("dialog").get_by_label("Ping URL", exact=True).press("Enter")  # submits nothing
    page.wait_for_timeout(300)
    [stored] = server.api.get("/api/scheduler/monitors").json()["data"]
    assert (stored["name"], stored["period_seconds"], stored["grace_seconds"]) == (NAME, 3600, 600)
    assert url.rsplit("/", 1)[1] not in str(stored)
    page.get_by_role("dialog").get_by_role("button", name="Done").click()
    expect()(page.locator("main h1")).to_have_text(NAME)
    expect()(state_of(page)).to_have_text("new")
    assert url not in page.content()  # shown once: not on the monitor's page

    # A ping from elsewhere: the page (polling) shows up, the ping and the next expected time.
    assert requests.get(url, timeout=10).json() == {"ok": True}
    expect()(state_of(page)).to_have_text("up")
    pings = page.get_by_test_id("monitor-pings")
    expect()(pings.locator("tbody tr")).to_have_count(1)
    expect()(pings.locator("tbody tr").first).to_contain_text("completed")
    expect()(page.get_by_test_id("monitor-last-ping")).not_to_contain_text("never")
    expect()(page.get_by_test_id("monitor-next-expected")).to_contain_text("GMT+1")  # the browser's zone, Europe/Berlin
    expect()(page.locator("main")).to_contain_text("(in 60 minutes)")

    # A failure ping with its output: down, and the ping listed with its output.
    assert requests.post(f"{url}/fail", data=b"disk full", timeout=10).ok
    expect()(state_of(page)).to_have_text("down")
    expect()(pings.locator("tbody tr")).to_have_count(2)
    expect()(pings.locator("tbody tr").first).to_contain_text("failed")
    expect()(pings.locator("tbody tr").first).to_contain_text("disk full")
    assert requests.get(f"{url}/3", timeout=10).ok
    expect()(pings.locator("tbody tr")).to_have_count(3)
    expect()(pings.locator("tbody tr").first.locator("td").nth(2)).to_have_text("3")

    # The list shows it too.
    role(page, "← Monitors", "link").click()
    row = page.locator("table.monitors tbody tr")
    expect()(row).to_have_count(1)
    expect()(row.get_by_test_id("monitor-state")).to_have_text("down")
    expect()(row).to_contain_text("every 1 h")
    expect()(row).to_contain_text("10 min")
    shared.update(id=stored["_id"], url=url)


def test_monitor_pings_in_the_executions_list_and_page_link_to_the_monitor(clean, server, owner, shared):
    page = clean.page
    clean.go("/executions")
    page.get_by_label("Source").select_option(label="Monitors' pings")
    rows = page.locator("table.executions tbody tr")
    expect()(rows).to_have_count(3)
    for index in range(3):
        link = rows.nth(index).get_by_role("link", name=NAME, exact=True)
        expect()(link).to_have_attribute("href", f"#/monitors/{shared['id']}")
    assert page.locator('a[href^="#/jobs/"]').count() == 0  # no job link for a ping (it would read #/jobs/null)

    rows.first.get_by_role("link", name="failed").click()
    expect()(page.locator("main h1")).to_have_text(f"Ping of monitor {NAME}")
    expect()(page.get_by_test_id("execution-source")).to_contain_text(NAME)
    expect()(role(page, "The monitor", "link")).to_have_attribute("href", f"#/monitors/{shared['id']}")
    expect()(role(page, "The job", "link")).to_have_count(0)
    expect()(page.get_by_test_id("cancel-execution")).to_have_count(0)
    role(page, "← Pings of this monitor", "link").click()
    expect()(page.get_by_label("Monitor", exact=True)).to_have_value(shared["id"])
    expect()(rows).to_have_count(3)


def test_rotate_pause_edit_and_delete(clean, server, owner, shared):
    page = clean.page
    clean.go(f"/monitors/{shared['id']}")
    expect()(page.locator("main h1")).to_have_text(NAME)

    # Rotate, confirmed: a new URL, shown once; the old one answers 404 at once.
    role(page, "Rotate URL").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate URL").click()
    new_url = ping_url_dialog(page)
    assert new_url != shared["url"]
    page.get_by_role("dialog").get_by_role("button", name="Done").click()
    assert requests.get(shared["url"], timeout=10).status_code == 404
    assert requests.get(new_url, timeout=10).ok
    expect()(state_of(page)).to_have_text("up")

    # Pause and resume.
    role(page, f"Pause {NAME}").click()
    expect()(state_of(page)).to_have_text("paused")
    role(page, f"Resume {NAME}").click()
    expect()(state_of(page)).to_have_text("up")

    # Edit: a cron schedule in a zone instead of the period.
    role(page, f"Edit {NAME}").click()
    expect()(page.locator("main h1")).to_have_text("Edit monitor")
    expect()(page.get_by_label("Period (seconds)")).to_have_value("3600")
    page.get_by_label("A cron schedule").check()
    page.get_by_label("Minute", exact=True).fill("30")
    page.get_by_label("Hour", exact=True).fill("4")
    page.get_by_label("Time zone").select_option("America/New_York")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text(NAME)
    expect()(page.locator("main")).to_contain_text("cron 0 30 4 * * * * (America/New_York)")
    expect()(page.get_by_test_id("monitor-next-expected")).to_contain_text("EST")
    edited = server.api.get(f"/api/scheduler/monitors/{shared['id']}").json()["data"]
    assert (edited["period_seconds"], edited["minute"], edited["hour"]) == (None, "30", "4")

    # Delete, confirmed in the dialog: back on the list, and the ping URL is gone.
    role(page, f"Delete {NAME}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    expect()(page.locator("main h1")).to_have_text("Monitors")
    expect()(page.get_by_text("No monitors yet.")).to_be_visible()
    assert server.api.get(f"/api/scheduler/monitors/{shared['id']}").status_code == 404
    assert requests.get(new_url, timeout=10).status_code == 404
