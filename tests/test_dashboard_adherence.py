"""The job page's schedule adherence in a real headless Chromium: the 7-day and 30-day figures
it shows are those of the job's stats (an every-second job that ran a few times), with the
target; a job that never fired says it has no occurrences."""

from __future__ import annotations

import pytest

from tests.browser import expect, skip_without_chromium
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

skip_without_chromium()

YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # never fires during a test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("adherence") / "data", env=SAMPLE_JOBS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(server):
    return server.api.create_user(name="Ada Lovelace", email="ada@example.com", role="admin")


def test_the_job_page_shows_the_figures_of_the_stats(clean, server, owner):
    api = server.api
    job_id = api.create_job(owner, name="Punctual", second="*", minute="*", adherence_target=0.9)

    def ran():
        found = api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"]
        return sum(r["status"] == "completed" for r in found) >= 3

    assert wait_for(ran, timeout=20)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": False}).status_code == 200
    going = lambda: [  # noqa: E731
        r
        for r in api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["data"]
        if r["status"] in ("scheduled", "running")
    ]
    assert wait_for(lambda: not going(), timeout=15)
    figures = api.get("/api/scheduler/stats", params={"job_id": job_id}).json()["stats"]["adherence"]

    clean.open(f"/jobs/{job_id}")
    block = clean.page.get_by_test_id("job-adherence")
    for window, days in (("7d", "7 days"), ("30d", "30 days")):
        f = figures[window]
        expect()(block.locator(f'[data-window="{window}"]')).to_have_text(
            f"{days}: {f['ratio'] * 100:.1f} % on time ({f['on_time']} of {f['occurrences']} started within "
            f"60 s; {f['success_rate']:g} % succeeded)"
        )
    expect()(block).to_contain_text("alert below 90.0 %")

    idle = api.create_job(owner, name="Idle", **YEARLY)
    clean.open(f"/jobs/{idle}")
    expect()(clean.page.get_by_test_id("job-adherence").locator('[data-window="7d"]')).to_have_text(
        "7 days: no occurrences"
    )
