"""The dashboard's screens for alert channels (issue 22) in a real headless Chromium: the
Channels page (the fields each kind needs, secrets write-only, a 400 next to the field it
names, a refused delete's 409), Send test against real local receivers with the delivery shown,
the channel's deliveries, the job form's channel picker beside e-mail and webhook, and the
channel deliveries on an execution's page.

One live server (allowed to send to loopback over http) and one browser serve the module; the
tests build on each other's channels, in file order.
"""

from __future__ import annotations

import json

import pytest

from tests.browser import expect, job_named, role, skip_without_chromium
from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

FLAKY = "tests.sample_jobs.operations.FlakyJob"
ROUTING_KEY = "R0UTINGKEY-dashboard-0123456789"
SLACK_PATH = "/services/T000/B000/slacksecretpath"
# Receivers listen on loopback (refused by default) over plain http (refused by default).
LOCAL = {**SAMPLE_JOBS, "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32", "TEXIUM_CHANNEL_HTTPS_ONLY": "false"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("channels-ui") / "data", env=LOCAL).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def receiver():
    """A vendor that accepts everything (202)."""
    with http_server(statuses=(202,)) as peer:
        yield peer


@pytest.fixture(scope="module")
def broken():
    """A vendor that is down (500 to every request)."""
    with http_server(statuses=(500,)) as peer:
        yield peer


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Grace Hopper", email="grace@example.com")


def api_channel(server, channel_id: str) -> dict:
    return server.api.get(f"/api/scheduler/channels/{channel_id}").json()["data"]


def channel_named(server, name: str) -> dict:
    return next(c for c in server.api.get("/api/scheduler/channels").json()["data"] if c["name"] == name)


def row(page, name: str):
    return page.locator("table.channels tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))


def confirm_delete(page) -> None:
    """The confirm dialog's own Delete (the list's buttons are behind it, inert)."""
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()


def fresh(session, route: str) -> None:
    """Open a page with its data loaded now (the same hash again would not load it again)."""
    session.open("/no-such-page")
    session.go(route)


def fill_channel(page, name: str, kind: str, owner_label="Grace Hopper (grace@example.com)") -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Owner").select_option(label=owner_label)
    page.get_by_label("Kind").select_option(label=kind)


# --------------------------------------------------------------------------- the Channels page
def test_channels_are_created_and_edited_with_each_kind_s_fields_secrets_write_only(clean, server, owner, receiver):
    page = clean.page
    clean.open("/")
    role(page, "Channels", "link").click()
    expect()(page.locator("main h1")).to_have_text("Channels")
    expect()(page.get_by_text("No channels yet.")).to_be_visible()

    role(page, "New channel").click()
    expect()(page.locator("main h1")).to_have_text("New channel")
    # Each kind asks for what it needs, and for nothing else.
    kind = page.get_by_label("Kind")
    for label, wanted, absent in (
        ("Telegram", ["Bot token", "Chat id", "Bot API URL (optional)"], ["Topic", "Recipients (optional)"]),
        ("E-mail", ["Recipients (optional)"], ["Bot token", "Webhook URL"]),
        ("ntfy", ["Server URL (optional)", "Topic", "Tags (optional)", "Access token (optional)"], ["Chat id"]),
        ("Opsgenie", ["API key", "API URL (optional)"], ["Topic"]),
        ("Webhook", ["Webhook URL", "Signing secret (optional)"], ["API key"]),
        ("Microsoft Teams", ["Workflow webhook URL"], ["Signing secret (optional)"]),
    ):
        kind.select_option(label=label)
        for text in wanted:
            expect()(page.get_by_label(text, exact=True)).to_be_visible()
        for text in absent:
            expect()(page.get_by_label(text, exact=True)).to_have_count(0)

    # Slack: the webhook URL is the secret; the list shows its host only.
    fill_channel(page, "Ops Slack", "Slack")
    page.get_by_label("Incoming webhook URL").fill(receiver.url + SLACK_PATH)
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Channels")
    slack = row(page, "Ops Slack")
    expect()(slack.get_by_test_id("channel-destination")).to_have_text(f"{receiver.url}/***")
    expect()(slack).to_contain_text("***")
    assert "slacksecretpath" not in page.content()

    # PagerDuty without its routing key: the API's 400 shows at the field it names.
    role(page, "New channel").click()
    fill_channel(page, "On-call", "PagerDuty")
    page.get_by_label("Events API URL (optional)").fill(receiver.url)
    role(page, "Save").click()
    required = "Invalid field secret: required for a pagerduty channel"
    expect()(page.locator("#channel-secret-error")).to_contain_text(required)
    page.get_by_label("Routing key").fill(ROUTING_KEY)
    role(page, "Save").click()
    expect()(row(page, "On-call").get_by_test_id("channel-destination")).to_have_text(receiver.url)
    assert ROUTING_KEY not in page.content()

    # ntfy: a bad topic is named; then priority, tags and a token.
    role(page, "New channel").click()
    fill_channel(page, "Phones", "ntfy")
    page.get_by_label("Server URL (optional)").fill(receiver.url)
    page.get_by_label("Topic").fill("not a topic!")
    role(page, "Save").click()
    expect()(page.locator("#channel-topic-error")).to_contain_text("topic")
    page.get_by_label("Topic").fill("backups")
    page.get_by_label("Priority of failures (optional)").select_option("5")
    page.get_by_label("Tags (optional)").fill("prod, db")
    page.get_by_label("Access token (optional)").fill("tk_phones_token")
    role(page, "Save").click()
    expect()(row(page, "Phones").get_by_test_id("channel-destination")).to_have_text(f"{receiver.url}/backups")
    phones = channel_named(server, "Phones")
    assert (phones["priority"], phones["tags"]) == (5, ["prod", "db"])
    assert phones["has_secret"] is True and phones["secret"] == "***"

    # Edit: the secret reads *** and is kept when left as is; the kind stays.
    on_call = channel_named(server, "On-call")
    row(page, "On-call").get_by_role("button", name="Edit").click()
    expect()(page.locator("main h1")).to_have_text("Edit channel")
    expect()(page.get_by_label("Kind")).to_be_disabled()
    key = page.get_by_label("Routing key")
    expect()(key).to_have_value("")
    expect()(key).to_have_attribute("placeholder", "***")
    expect()(page.locator("#channel-secret-hint")).to_contain_text("leave as is to keep it")
    # Sent elsewhere, the stored key is not: the 400 names the secret field.
    page.get_by_label("Events API URL (optional)").fill("http://127.0.0.2:9")
    role(page, "Save").click()
    expect()(page.locator("#channel-secret-error")).to_contain_text("enter its routing key again")
    page.get_by_label("Events API URL (optional)").fill(receiver.url)
    page.get_by_label("Name", exact=True).fill("On-call EU")
    role(page, "Save").click()
    expect()(row(page, "On-call EU")).to_be_visible()
    edited = server.api.get(f"/api/scheduler/channels/{on_call['_id']}").json()["data"]
    assert edited["has_secret"] and edited["url"] == receiver.url

    # The Slack URL, shown masked in its field, is kept when sent back as it is.
    row(page, "Ops Slack").get_by_role("button", name="Edit").click()
    expect()(page.get_by_label("Incoming webhook URL")).to_have_value(f"{receiver.url}/***")
    page.get_by_label("Name", exact=True).fill("Ops Slack")
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Channels")
    before = len(receiver.requests)
    sent = server.api.post(f"/api/scheduler/channels/{channel_named(server, 'Ops Slack')['_id']}/test").json()
    assert sent["delivery"]["ok"] and receiver.requests[before]["path"] == SLACK_PATH


def test_send_test_shows_the_delivery_and_the_channel_lists_its_deliveries(clean, server, owner, receiver, broken):
    page = clean.page
    api = server.api
    hook = {"user_id": owner, "name": "Down hook", "kind": "webhook", "url": f"{broken.url}/hook"}
    down = api.post("/api/scheduler/channels", json=hook)
    assert down.status_code == 201, down.text
    fresh(clean, "/channels")

    on_call = row(page, "On-call EU")
    before = len(receiver.requests)
    on_call.get_by_role("button", name="Send a test message to On-call EU").click()
    expect()(on_call.get_by_test_id("channel-test-result")).to_have_text("delivered · HTTP 202")
    request = receiver.requests[before]
    assert request["path"] == "/v2/enqueue" and json.loads(request["body"])["routing_key"] == ROUTING_KEY
    # A second test within 10 s is refused: the API's 429 is shown, nothing is sent.
    on_call.get_by_role("button", name="Send a test message to On-call EU").click()
    expect()(on_call.get_by_test_id("channel-test-result")).to_contain_text("less than 10 s ago")
    assert len(receiver.requests) == before + 1

    hook = row(page, "Down hook")
    hook.get_by_role("button", name="Send a test message to Down hook").click()
    expect()(hook.get_by_test_id("channel-test-result")).to_contain_text("not delivered · HTTP 500")
    assert broken.requests, "the test went to the receiver"

    # The channel's page: its facts and its deliveries, newest first.
    role(page, "Down hook", "link").click()
    expect()(page.locator("main h1")).to_have_text("Down hook")
    expect()(page.get_by_test_id("channel-destination")).to_have_text(f"{broken.url}/hook")
    deliveries = page.get_by_test_id("channel-deliveries").locator("tbody tr")
    expect()(deliveries).to_have_count(1)
    cells = deliveries.first.locator("td")
    expect()(cells.nth(1)).to_have_text("test")
    expect()(cells.nth(3)).to_have_text("failed")
    expect()(cells.nth(4)).to_have_text("500")
    expect()(cells.nth(5)).to_have_text("1")
    expect()(cells.nth(6)).not_to_be_empty()


def test_a_channel_a_job_names_cannot_be_deleted_and_the_409_is_shown(clean, server, owner):
    page = clean.page
    slack = channel_named(server, "Ops Slack")["_id"]
    server.api.create_job(
        owner, name="Uses Slack", minute="0", hour="0", day_of_month="1", month="1",
        notify={"channels": [{"id": slack, "events": ["failure"]}]},
    )  # fmt: skip
    fresh(clean, "/channels")
    row(page, "Ops Slack").get_by_role("button", name="Delete").click()
    confirm_delete(page)
    expect()(page.get_by_test_id("channel-problem")).to_contain_text("still named by 1 job(s): 'Uses Slack'")
    expect()(row(page, "Ops Slack")).to_be_visible()
    row(page, "Phones").get_by_role("button", name="Delete").click()
    confirm_delete(page)
    expect()(row(page, "Phones")).to_have_count(0)
    assert all(c["name"] != "Phones" for c in server.api.get("/api/scheduler/channels").json()["data"])


# --------------------------------------------------------------------------- the job form
def test_the_job_form_picks_channels_and_their_events_beside_e_mail(clean, server, owner):
    page = clean.page
    on_call = channel_named(server, "On-call EU")["_id"]
    slack = channel_named(server, "Ops Slack")["_id"]
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Nightly backup")
    page.get_by_label("Owner").select_option(label="Grace Hopper (grace@example.com)")
    page.get_by_label("Alert emails").fill("grace@example.com")
    page.get_by_label("On-call EU (PagerDuty)").check()
    events = page.get_by_role("group", name="Events sent to On-call EU")
    for label in ("Failure", "Recovery", "Timeout", "Missed"):
        expect()(events.get_by_label(label, exact=True)).to_be_checked()
    events.get_by_label("Missed", exact=True).uncheck()
    # A channel ticked with no event is caught before anything is sent.
    page.get_by_label("Ops Slack (Slack)").check()
    slack_events = page.get_by_role("group", name="Events sent to Ops Slack")
    for label in ("Failure", "Recovery", "Timeout", "Missed"):
        slack_events.get_by_label(label, exact=True).uncheck()
    role(page, "Save").click()
    expect()(page.locator("#job-notify_channels-error")).to_contain_text("Choose at least one event for Ops Slack")
    slack_events.get_by_label("Failure", exact=True).check()
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly backup")
    notify = job_named(server, "Nightly backup")["notify"]
    assert notify["email"] == [] and notify["events"] == ["failure", "recovery", "timeout", "missed"]
    mail = notify["channels"][2]["id"]  # the e-mail became a channel of the owner (see README, Alerts)
    assert notify["channels"] == [
        {"id": on_call, "events": ["failure", "recovery", "timeout"]},
        {"id": slack, "events": ["failure"]},
        {"id": mail, "events": ["failure", "recovery", "timeout", "missed"]},
    ]
    assert api_channel(server, mail)["recipients"] == ["grace@example.com"]

    # Editing shows the choice; channels alone (no e-mail, no webhook) are a notify too.
    job_id = job_named(server, "Nightly backup")["_id"]
    clean.go(f"/jobs/{job_id}/edit")
    expect()(page.get_by_label("On-call EU (PagerDuty)")).to_be_checked()
    events = page.get_by_role("group", name="Events sent to On-call EU")
    expect()(events.get_by_label("Missed", exact=True)).not_to_be_checked()
    expect()(events.get_by_label("Recovery", exact=True)).to_be_checked()
    expect()(page.get_by_label("Alert emails")).to_have_value("")
    page.get_by_label("Ops Slack (Slack)").uncheck()
    page.get_by_role("checkbox", name="grace@example.com (E-mail").uncheck()  # the channel made from the e-mail
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Nightly backup")
    notify = job_named(server, "Nightly backup")["notify"]
    assert notify["email"] == [] and notify["webhook"] is None
    assert notify["channels"] == [{"id": on_call, "events": ["failure", "recovery", "timeout"]}]


# --------------------------------------------------------------------------- an execution's alerts
def test_an_execution_shows_its_channel_deliveries_and_the_channel_its_job(clean, server, owner, receiver, tmp_path):
    page = clean.page
    api = server.api
    slack = channel_named(server, "Ops Slack")["_id"]
    job_id = api.create_job(
        owner, name="Flaky export", job_class_string=FLAKY, minute="0", hour="0", day_of_month="1", month="1",
        pub_args=[str(tmp_path / "runs")], pub_kwargs={"failures": 1},
        notify={"channels": [{"id": slack, "events": ["failure"]}]},
    )  # fmt: skip
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(execution_id)["status"] == "failed"
    assert wait_for(lambda: api.get(f"/api/scheduler/executions/{execution_id}").json()["data"].get("alerts"))

    clean.open(f"/executions/{execution_id}")
    alerts = page.get_by_test_id("execution-alerts").locator("tbody tr")
    expect()(alerts).to_have_count(1)
    cells = alerts.first.locator("td")
    expect()(cells.nth(1)).to_have_text("failure")
    expect()(cells.nth(2)).to_have_text("slack")
    expect()(cells.nth(4)).to_have_text("delivered")
    expect()(cells.nth(5)).to_have_text("202")
    expect()(cells.nth(6)).to_have_text("1")
    cells.nth(3).get_by_role("link", name="Ops Slack").click()
    expect()(page.locator("main h1")).to_have_text("Ops Slack")
    expect()(page.get_by_test_id("channel-used-by")).to_contain_text("Flaky export")
    newest = page.get_by_test_id("channel-deliveries").locator("tbody tr").first
    expect()(newest.locator("td").nth(1)).to_have_text("failure")
    newest.get_by_role("link", name="Flaky export").wait_for()
    newest.get_by_role("link", name="run").click()
    expect()(page.locator("main h1")).to_have_text("Execution of Flaky export")
