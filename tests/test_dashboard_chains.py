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

from tests.browser import expect, job_named, role, skip_without_chromium
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
    for index, (name, kind) in enumerate((("region", "Choice"), ("token", "Secret"), ("count", "Whole number"), ("dry_run", "Yes / no")), 1):
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
    assert declared["count"] == {**declared["count"], "type": "integer", "default": 3, "required": True, "description": "How many rows"}

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

    # A required value left out: the API's 400 stays in the dialog.
    count.fill("")
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
