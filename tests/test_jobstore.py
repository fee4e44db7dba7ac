"""DocumentJobStore round trips on both providers: documents in, APScheduler jobs out."""

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.base import BaseTrigger

from texium.core.scheduling import cron
from texium.core.scheduling.jobstore import DocumentJobStore


class _Scheduler:
    """Stands in for the scheduler a store is started with (the store only keeps a reference)."""


def job_doc(name, next_run_time, **fields):
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    schedule = cron.normalize({"minute": "0", "hour": "15", "day_of_week": "1", **fields}, "UTC")
    return {
        "name": name,
        "job_class_string": "jobs.echo.EchoJob",
        **schedule,
        "is_enabled": True,
        "is_paused": False,
        "next_run_time": next_run_time,
        "created_at": now,
        "updated_at": now,
    }


@pytest.fixture
def store(datastore):
    jobstore = DocumentJobStore(datastore.jobs)
    jobstore.start(_Scheduler(), "default")
    return jobstore


def test_documents_become_jobs(store, datastore):
    due_at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    job_id = datastore.jobs.insert(job_doc("monday", due_at))
    job = store.lookup_job(job_id)
    assert job.id == job_id and job.name == "monday" and job.next_run_time == due_at
    assert isinstance(job.trigger, BaseTrigger)
    following = job.trigger.get_next_fire_time(due_at, due_at + timedelta(seconds=1))
    assert following == datetime(2026, 3, 9, 15, 0, tzinfo=UTC) and following.weekday() == 0


def test_due_jobs_and_next_wake_up(store, datastore):
    base = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    late = datastore.jobs.insert(job_doc("late", base + timedelta(hours=1)))
    early = datastore.jobs.insert(job_doc("early", base))
    datastore.jobs.insert(job_doc("paused", None))
    assert [j.id for j in store.get_due_jobs(base + timedelta(minutes=30))] == [early]
    assert [j.id for j in store.get_due_jobs(base + timedelta(hours=2))] == [early, late]
    assert store.get_next_run_time() == base
    assert [j.id for j in store.get_all_jobs()] == [early, late]


def test_a_failed_read_is_an_error_not_no_jobs(store, datastore, monkeypatch):
    """Returning None here would let the scheduler sleep until something woke it."""

    def broken(*args, **kwargs):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(datastore.jobs, "find_one", broken)
    with pytest.raises(RuntimeError):
        store.get_next_run_time()


def test_unusable_schedule_is_skipped_not_fatal(store, datastore):
    base = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    bad = job_doc("bad", base)
    bad["timezone"] = "Not/AZone"
    datastore.jobs.insert(bad)
    good = datastore.jobs.insert(job_doc("good", base))
    assert [j.id for j in store.get_due_jobs(base)] == [good]
