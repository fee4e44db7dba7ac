"""One definition per execution figure (texium/core/figures.py), whoever shows it.

GET /api/scheduler/stats (ExecutionHistory.stats), ReportGenerationJob and the job document's
total_executions counter must give the same numbers on the same data, also after
DataCleanupJob deleted old executions. In process on both providers (records of every status
are written directly), and once through a live server.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from tests.jobs_fixtures import admin_owner
from tests.server_process import PROVIDERS
from texium.core import figures
from texium.core.datastore import new_id, open_datastore
from texium.core.records.executions import ExecutionHistory
from texium.core.timeutil import utcnow
from texium.jobs.base import JobContext
from texium.jobs.cleanup import DataCleanupJob
from texium.jobs.report import ReportGenerationJob


@pytest.fixture(params=PROVIDERS)
def ds(request, tmp_path):
    if request.param == "sqlite":
        store = open_datastore(None, "texium_test", str(tmp_path / "db"))
    else:
        store = open_datastore("mongomock://", f"texium_figures_{uuid.uuid4().hex[:8]}", "")
    yield store
    store.close()


def run_job(ds, tmp_path, cls, **kwargs) -> str:
    """Run a built-in job the way the runner does (its own ids, the REPORT_DIR in tmp_path)."""
    context = JobContext(
        execution_id=new_id(),
        job_id=new_id(),
        job_name=cls.__name__,
        user_id=admin_owner(ds),
        datastore=ds,
        config={"DATA_DIR": str(tmp_path / "data")},
        hooks={},
        write=lambda _: None,
    )
    return cls(context).run(**kwargs)


def add_job(ds, user_id: str, name: str) -> str:
    now = utcnow()
    return ds.jobs.insert(
        {
            "user_id": user_id,
            "name": name,
            "job_class_string": "jobs.echo.EchoJob",
            "is_enabled": True,
            "is_paused": False,
            "total_executions": 0,
            "created_at": now,
            "updated_at": now,
        }
    )


def record(ds, job_id: str, user_id: str, status: str, age: timedelta = timedelta(hours=1)) -> str:
    """An execution record; a run (not skipped / missed) counts on the job like the runner counts it."""
    created = utcnow() - age
    execution_id = ds.executions.insert(
        {
            "job_id": job_id,
            "user_id": user_id,
            "job_name": "j",
            "job_class_string": "jobs.echo.EchoJob",
            "status": status,
            "output": "",
            "error": "boom" if status in ("failed", "abandoned") else "",
            "scheduled_at": created,
            "started_at": created,
            "completed_at": created,
            "created_at": created,
            "duration_ms": 5,
            "hostname": "h",
            "pid": 1,
            "occurrence_key": f"k-{new_id()}",
        }
    )
    if status not in ("skipped", "missed"):
        ds.jobs.update(job_id, inc={"total_executions": 1})
    return execution_id


def test_success_rate_is_defined_once():
    assert figures.success_rate(1, 4) == 25.0
    assert figures.success_rate(2, 3) == 66.67
    assert figures.success_rate(0, 0) == 0.0
    counted = figures.compute(
        {
            "completed": 1,
            "failed": 1,
            "abandoned": 1,
            "timeout": 1,
            "cancelled": 1,
            "running": 2,
            "scheduled": 1,
            "skipped": 3,
            "missed": 4,
        }
    )
    assert counted["total_executions"] == 8 and counted["ended_executions"] == 5
    assert counted["success_rate"] == 20.0 and counted["running_executions"] == 2


def test_stats_and_report_give_the_same_success_rate(ds, tmp_path):
    user = new_id()
    a, b = add_job(ds, user, "a"), add_job(ds, user, "b")
    for status in ("completed", "failed", "abandoned", "abandoned", "running", "skipped", "missed"):
        record(ds, a, user, status)
    for status in ("completed", "completed", "failed"):
        record(ds, b, user, status)
    history = ExecutionHistory(ds)
    stats = history.stats(user)
    # completed 3 of 7 runs that ended (failed and abandoned ended badly; running has not ended).
    assert stats["success_rate"] == 42.86
    assert (stats["completed_executions"], stats["failed_executions"], stats["abandoned_executions"]) == (3, 2, 2)

    run_job(ds, tmp_path, ReportGenerationJob, report_type="daily")
    report = ds.collection("reports").find_one()
    assert report["summary"]["success_rate"] == stats["success_rate"]
    rows = {row["job_id"]: row for row in report["jobs"]}
    for job_id, rate in ((a, 25.0), (b, 66.67)):
        assert history.stats(job_id=job_id)["success_rate"] == rate
        assert rows[job_id]["success_rate"] == rate


def test_skipped_and_missed_are_not_runs(ds, tmp_path):
    user = new_id()
    job = add_job(ds, user, "busy")
    for status in ("completed", "failed", "running", "scheduled", "skipped", "skipped", "missed"):
        record(ds, job, user, status)
    stats = ExecutionHistory(ds).stats(user)
    assert stats["total_executions"] == 4
    assert (stats["skipped_executions"], stats["missed_executions"], stats["running_executions"]) == (2, 1, 1)
    assert stats["success_rate"] == 50.0
    assert ds.jobs.get(job)["total_executions"] == stats["total_executions"]

    run_job(ds, tmp_path, ReportGenerationJob, report_type="daily")
    row = ds.collection("reports").find_one()["jobs"][0]
    assert row["executions"] == 4 and row["skipped"] == 2 and row["missed"] == 1
    assert row["success_rate"] == 50.0


def test_cleanup_keeps_job_counters_equal_to_the_stats(ds, tmp_path):
    user = new_id()
    a, b = add_job(ds, user, "a"), add_job(ds, user, "b")
    old, new = timedelta(days=40), timedelta(hours=1)
    for status in ("completed", "failed", "abandoned", "skipped", "missed", "running"):
        record(ds, a, user, status, old)
    record(ds, a, user, "completed", new)
    for status in ("completed", "completed", "skipped"):
        record(ds, b, user, status, old)
    gone = new_id()  # a deleted job's history is cleaned up too, without complaint
    record(ds, gone, user, "completed", old)
    history = ExecutionHistory(ds)
    assert [ds.jobs.get(j)["total_executions"] for j in (a, b)] == [5, 2]

    output = run_job(ds, tmp_path, DataCleanupJob, days_old=30)
    assert "scheduler_executions: 9" in output
    # a keeps its running run and its new completed one; b keeps only a skipped occurrence.
    assert [ds.jobs.get(j)["total_executions"] for j in (a, b)] == [2, 0]
    assert history.stats(user)["total_executions"] == 2
    for job_id in (a, b):
        assert ds.jobs.get(job_id)["total_executions"] == history.stats(job_id=job_id)["total_executions"]
    assert "total_executions of 2 job(s) lowered by their 5 deleted run(s)" in output


# --------------------------------------------------------------------------- through the API


class Api:
    """The live server's API with the few calls these tests repeat."""

    def __init__(self, api):
        self.api = api

    def job(self, user_id, class_string, pub_args=(), **pub_kwargs) -> str:
        # Disabled: only "run now" runs it, so the counts are exactly the test's.
        name = f"{class_string} {uuid.uuid4().hex[:6]}"
        return self.api.create_job(
            user_id,
            job_class_string=class_string,
            name=name,
            pub_args=list(pub_args),
            pub_kwargs=pub_kwargs,
            is_enabled=False,
        )

    def run(self, job_id, status) -> dict:
        started = self.api.post(f"/api/scheduler/jobs/{job_id}/run")
        assert started.status_code == 200, started.text
        execution = self.api.wait_execution(started.json()["execution_id"], timeout=30)
        assert execution["status"] == status, execution
        return execution

    def counters(self, user_id) -> int:
        """The sum of the user's job documents' total_executions."""
        listed = self.api.get(f"/api/scheduler/users/{user_id}/jobs").json()["data"]
        return sum(j["total_executions"] for j in listed)

    def stats(self, user_id) -> dict:
        return self.api.get("/api/scheduler/stats", params={"user_id": user_id}).json()["stats"]

    def seed(self, owner) -> tuple[str, str]:
        """Two completed runs of an echo job and one failed health check: 66.67 % success."""
        echo = self.job(owner, "jobs.echo.EchoJob")
        broken = self.job(owner, "jobs.server.ServerHealthCheckJob")  # no server_id: fails when run
        self.run(echo, "completed")
        self.run(echo, "completed")
        self.run(broken, "failed")
        return echo, broken


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stats_and_report_agree_through_the_api(start_server, provider):
    api = Api(start_server(provider).api)
    owner, admin = api.api.create_user(), api.api.create_user(role="admin")  # an admin's report covers all
    echo, broken = api.seed(owner)
    mine = api.stats(owner)
    assert mine["total_executions"] == 3 == api.counters(owner)
    assert mine["success_rate"] == 66.67

    api.run(api.job(admin, "jobs.report.ReportGenerationJob", report_type="daily"), "completed")
    report = api.api.get("/api/scheduler/reports").json()["data"][0]
    assert report["summary"]["success_rate"] == mine["success_rate"]  # the report's own run has not ended
    rows = {row["job_id"]: row for row in report["jobs"]}
    assert rows[echo]["executions"] + rows[broken]["executions"] == mine["total_executions"]
    assert rows[echo]["success_rate"] == 100.0 and rows[broken]["success_rate"] == 0.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_job_counters_equal_the_stats_after_a_cleanup_through_the_api(start_server, provider):
    api = Api(start_server(provider).api)
    owner, admin = api.api.create_user(), api.api.create_user(role="admin")  # an admin's report covers all
    echo, broken = api.seed(owner)
    assert api.stats(owner)["total_executions"] == 3 == api.counters(owner)
    time.sleep(1.5)
    api.run(echo, "completed")  # newer than the cut-off: kept

    api.run(api.job(admin, "jobs.cleanup.DataCleanupJob", days_old=1 / 86400), "completed")
    assert api.stats(owner)["total_executions"] == 1 == api.counters(owner)
    assert api.api.get(f"/api/scheduler/jobs/{echo}").json()["data"]["total_executions"] == 1
    assert api.api.get(f"/api/scheduler/jobs/{broken}").json()["data"]["total_executions"] == 0
    assert api.stats(admin)["total_executions"] == 1 == api.counters(admin)  # the clean-up's own run
