"""The dashboard's screens for jobs that start jobs (issue 23) in a real headless Chromium: the
job form's chain pickers (jobs chosen by name) with a cycle's 400 shown next to them and its
parameter declaration editor, the Run dialog made from that declaration (a choice is a select, a
secret a password field) whose values reach the execution, the run's page (where it came from,
its parameters with secrets as ***, what it started), the Chains page's graph, and trigger URLs
created and revoked on the job's page.

One live server and one browser serve the module; the tests build on each other's jobs, in
file order.
"""

from __future__ import annotations

import pytest

from tests.browser import expect, job_named, role, shot, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # never fires during a test
SECRET = "s3cret-value-never-shown"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("chains-ui") / "data", env=SAMPLE_JOBS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Grace Hopper", email="grace@example.com", role="admin")


@pytest.fixture(scope="module")
def upstream(server, owner):
    """Two plain jobs to chain to: Extract and Load."""
    return {name: server.api.create_job(owner, name=name, **YEARLY) for name in ("Extract", "Load")}


def job(server, job_id: str) -> dict:
    return server.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def fresh(session, route: str) -> None:
    """Open a page with its data loaded now (the same hash again would not load it again)."""
    session.open("/no-such-page")
    session.go(route)


def pick(page, field: str, name: str) -> None:
    """Choose a job by typing part of its name into a picker and adding the match."""
    page.get_by_label(field, exact=True).fill(name[:3])
    role(page, f"Add {name} to {field.lower()}").click()


# --------------------------------------------------------------------------- 0. nothing chained yet
def test_the_chains_page_says_when_no_job_is_chained(clean, server, upstream):
    page = clean.page
    clean.open("/")
    role(page, "Chains", "link").click()
    expect()(page.locator("main h1")).to_have_text("Chains")
    expect()(page.get_by_text("No job starts another yet.")).to_be_visible()
    expect()(page.get_by_test_id("chain-graph")).to_have_count(0)


# --------------------------------------------------------------------------- 1. the job form
def test_the_form_chains_jobs_by_name_and_declares_parameters(clean, server, owner, upstream):
    page = clean.page
    clean.open("/jobs/new")
    page.get_by_label("Name", exact=True).fill("Transform")
    page.get_by_label("Owner").select_option(label="Grace Hopper (grace@example.com)")
    pick(page, "On success, start", "Load")
    chosen = page.get_by_role("list", name="On success, start: chosen")
    expect()(chosen).to_contain_text("Load")
    pick(page, "Start after all of (fan-in)", "Extract")
    page.get_by_label("Fan-in window (seconds)").fill("600")

    # The declaration: a choice, a secret, a required whole number and a yes/no.
    add = role(page, "Add parameter")
    rows = (("region", "Choice"), ("token", "Secret"), ("count", "Whole number"), ("dry_run", "Yes / no"))
    for index, (name, kind) in enumerate(rows, 1):
        add.click()
        page.get_by_label(f"Name (parameter {index})").fill(name)
        page.get_by_label(f"Type (parameter {index})").select_option(label=kind)
    page.get_by_label("Choices (parameter 1)").fill("eu, us")
    page.get_by_label("Default (parameter 1)").fill("eu")
    expect()(page.get_by_label("Default (parameter 2)")).to_have_count(0)  # a secret has no default
    page.get_by_label("Default (parameter 3)").fill("3")
    page.get_by_label("Required (parameter 3)").check()
    page.get_by_label("Description (parameter 3)").fill("How many rows")
    # A row added by mistake goes again.
    add.click()
    role(page, "Remove parameter 5").click()
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Transform")

    saved = job_named(server, "Transform")
    assert saved["on_success"] == [upstream["Load"]]
    assert saved["depends_on"]["jobs"] == [upstream["Extract"]] and saved["depends_on"]["within_seconds"] == 600
    declared = {p["name"]: p for p in saved["parameters"]}
    assert list(declared) == ["region", "token", "count", "dry_run"]
    assert declared["region"]["type"] == "choice" and declared["region"]["choices"] == ["eu", "us"]
    assert declared["region"]["default"] == "eu"
    assert declared["token"]["type"] == "secret" and "default" not in declared["token"]
    count = {"type": "integer", "default": 3, "required": True, "description": "How many rows"}
    assert declared["count"] == {**declared["count"], **count}

    # Edit: the pickers show the chosen jobs by name.
    role(page, "Edit").click()
    expect()(page.get_by_role("list", name="On success, start: chosen")).to_contain_text("Load")
    expect()(page.get_by_role("list", name="Start after all of (fan-in): chosen")).to_contain_text("Extract")
    expect()(page.get_by_label("Name (parameter 1)")).to_have_value("region")


def test_a_cycle_is_shown_next_to_the_chain_field(clean, server, upstream):
    page = clean.page
    fresh(clean, f"/jobs/{upstream['Load']}/edit")
    expect()(page.locator("main h1")).to_have_text("Edit job")
    pick(page, "On success, start", "Transform")  # Transform already starts Load: a loop
    role(page, "Save").click()
    error = page.locator("#job-on_success-error")
    expect()(error).to_contain_text("a cycle")
    expect()(page.get_by_label("On success, start", exact=True)).to_have_attribute("aria-invalid", "true")
    assert job(server, upstream["Load"])["on_success"] == []
    # Removing the loop clears the error; the job saves.
    role(page, "Remove Transform from on success, start").click()
    expect()(error).to_have_count(0)
    role(page, "Save").click()
    expect()(page.locator("main h1")).to_have_text("Load")


# --------------------------------------------------------------------------- 2. the Run dialog
def test_the_run_dialog_sends_typed_parameters_and_the_run_page_hides_the_secret(clean, server):
    page = clean.page
    transform = job_named(server, "Transform")
    fresh(clean, f"/jobs/{transform['_id']}")
    role(page, "Run now").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog.get_by_role("heading")).to_have_text("Run “Transform”")
    region = dialog.get_by_label("region")
    assert region.evaluate("e => e.tagName") == "SELECT"
    expect()(region).to_have_value("eu")
    token = dialog.get_by_label("token")
    expect()(token).to_have_attribute("type", "password")
    count = dialog.get_by_label("count (required)")
    expect()(count).to_have_attribute("type", "number")
    expect()(count).to_have_value("3")
    dry_run = dialog.get_by_label("dry_run")
    expect()(dry_run).to_have_attribute("type", "checkbox")
    expect()(dialog.get_by_label("This job only (do not start chained jobs)")).to_be_visible()

    # A value its type refuses (2.5 for a whole number): the API's 400 stays in the dialog.
    count.fill("2.5")
    dialog.get_by_role("button", name="Start run").click()
    expect()(dialog.get_by_test_id("run-error")).to_contain_text("count")

    # Keyboard: choose, type and tick without the mouse.
    region.focus()
    page.keyboard.press("ArrowDown")
    expect()(region).to_have_value("us")
    count.fill("5")
    token.fill(SECRET)
    dry_run.focus()
    page.keyboard.press("Space")
    dialog.get_by_label("This job only (do not start chained jobs)").check()
    dialog.get_by_role("button", name="Start run").click()
    expect()(page.get_by_role("dialog")).to_have_count(0)

    runs = server.api.get("/api/scheduler/executions", params={"job_id": transform["_id"]}).json()["data"]
    run = runs[0]
    assert run["trigger"] == "run_now"
    assert run["parameters"] == {"region": "us", "token": "***", "count": 5, "dry_run": True}
    server.api.wait_execution(run["_id"])

    fresh(clean, f"/executions/{run['_id']}")
    shown = page.get_by_test_id("execution-parameters")
    expect()(shown).to_contain_text("region")
    expect()(shown.locator('[data-parameter="token"]')).to_have_text("***")
    expect()(page.get_by_test_id("execution-origin")).to_contain_text("Run now")
    assert SECRET not in page.content()

    # Run again: the values come back but the secret is typed again.
    role(page, "Run again").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog.get_by_test_id("secrets-again")).to_contain_text("token")
    expect()(dialog.get_by_label("region")).to_have_value("us")
    expect()(dialog.get_by_label("count (required)")).to_have_value("5")
    expect()(dialog.get_by_label("token")).to_have_value("")
    dialog.get_by_role("button", name="Cancel").click()
    expect()(page.get_by_role("dialog")).to_have_count(0)


# --------------------------------------------------------------------------- 3. the Chains page
def test_the_chains_page_draws_a_three_job_chain_and_a_box_opens_its_job(clean, server, owner):
    page = clean.page
    api = server.api
    last = api.create_job(owner, name="Publish", **YEARLY)
    middle = api.create_job(owner, name="Aggregate", on_success=[last], **YEARLY)
    first = api.create_job(owner, name="Ingest", on_success=[middle], on_failure=[last], **YEARLY)
    fresh(clean, "/chains")
    graph = page.get_by_test_id("chain-graph")
    for job_id in (first, middle, last):
        expect()(graph.locator(f'[data-job-id="{job_id}"]')).to_have_count(1)
    expect()(graph.locator(f'[data-from="{first}"][data-to="{middle}"] text')).to_have_text("success")
    expect()(graph.locator(f'[data-from="{first}"][data-to="{last}"] text')).to_have_text("failure")
    expect()(graph.locator(f'[data-from="{middle}"][data-to="{last}"] text')).to_have_text("success")
    # Each box says its last outcome in words, not colour alone, and its next run with its zone.
    box = graph.get_by_role("link", name="Ingest: last run no runs yet", exact=False)
    expect()(box).to_contain_text("no runs yet")
    expect()(box).to_contain_text("next ")

    # Run chain: Ingest runs and its success starts Aggregate (a chained run).
    role(page, "Run chain from Ingest").click()
    dialog = page.get_by_role("dialog")
    expect()(dialog.get_by_label("This job only (do not start chained jobs)")).not_to_be_checked()
    dialog.get_by_role("button", name="Start run").click()
    expect()(page.get_by_role("dialog")).to_have_count(0)
    run = api.get("/api/scheduler/executions", params={"job_id": first}).json()["data"][0]
    assert api.wait_execution(run["_id"])["status"] == "completed"

    def chained():
        runs = api.get("/api/scheduler/executions", params={"job_id": middle}).json()["data"]
        return runs[0] if runs else None

    child = wait_for(chained, timeout=15)
    assert child["trigger"] == "chain" and child["parent_execution_id"] == run["_id"]
    fresh(clean, "/chains")  # read again: the page does not poll (a busy machine may outlast the wait)
    expect()(graph.get_by_role("link", name="Ingest: last run completed", exact=False)).to_contain_text("completed")
    shot(page, "chains")

    # The run's page: what it started; the chained run's page: where it came from.
    fresh(clean, f"/executions/{run['_id']}")
    expect()(page.get_by_test_id("started-runs")).to_contain_text("Aggregate")
    page.get_by_test_id("started-runs").get_by_role("link").first.click()
    expect()(page.locator("main h1")).to_have_text("Execution of Aggregate")
    origin = page.get_by_test_id("execution-origin")
    expect()(origin).to_contain_text("Chain: after Ingest")

    # A click (or Enter) on a box opens its job.
    fresh(clean, "/chains")
    graph.get_by_role("link", name="Aggregate:", exact=False).focus()
    page.keyboard.press("Enter")
    expect()(page.locator("main h1")).to_have_text("Aggregate")
    fresh(clean, "/chains")
    graph.get_by_role("link", name="Publish:", exact=False).click()
    expect()(page.locator("main h1")).to_have_text("Publish")


# --------------------------------------------------------------------------- 4. trigger URLs
def test_a_trigger_url_is_created_shown_once_and_revoked_from_the_job_page(clean, server, upstream):
    page = clean.page
    fresh(clean, f"/jobs/{upstream['Extract']}")
    panel = page.get_by_role("region", name="Trigger URLs")
    expect()(panel.get_by_text("No trigger URLs.")).to_be_visible()
    panel.get_by_label("Trigger name").fill("CI deploy")
    panel.get_by_role("button", name="Create trigger URL").click()

    dialog = page.get_by_role("dialog")
    url = dialog.get_by_label("Trigger URL", exact=True).input_value()
    assert "/trigger/" in url
    expect()(dialog.get_by_role("textbox", name="curl line")).to_have_value(f"curl -X POST {url}")
    expect()(dialog.get_by_role("button", name="Copy curl line")).to_be_visible()
    dialog.get_by_role("button", name="Done").click()
    expect()(page.get_by_role("dialog")).to_have_count(0)
    token = url.rsplit("/", 1)[1]
    assert token not in page.content()  # shown once: not in the list

    row = panel.get_by_test_id("trigger-urls").locator("tbody tr")
    expect()(row).to_have_count(1)
    expect()(row).to_contain_text("CI deploy")
    expect()(row.locator("td").nth(4)).to_have_text("0")

    # The URL starts a run; the list counts the use.
    used = server.api.post(f"/trigger/{token}", json={})
    assert used.status_code in (200, 201, 202), used.text
    fresh(clean, f"/jobs/{upstream['Extract']}")
    expect()(row.locator("td").nth(4)).to_have_text("1")

    panel.get_by_role("button", name="Revoke CI deploy").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke", exact=True).click()
    expect()(row).to_contain_text("revoked")
    expect()(panel.get_by_role("button", name="Revoke CI deploy")).to_have_count(0)
    triggers = server.api.get(f"/api/scheduler/jobs/{upstream['Extract']}/triggers").json()
    listed = triggers["data"] if isinstance(triggers, dict) else triggers
    assert listed[0]["revoked_at"] and "token" not in listed[0]
    assert server.api.post(f"/trigger/{token}", json={}).status_code in (401, 403, 404, 410)
