"""The scheduler's pass on both providers, with a fixed clock: claims, missed runs, races, broken
documents and a store that fails. Real datastore, real runner; only the clock is chosen."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from texium.core.registry import JobRegistry
from texium.core.scheduling import cron
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.jobstore import DocumentJobStore
from texium.core.scheduling.nodes import NodeIdentity
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import JobRunner
from texium.core.scheduling.scheduler import TexiumScheduler

BASE = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Node:
    """One node's pass over a shared datastore; queued runs are collected, not run."""

    def __init__(self, datastore, grace=3600):
        self.recorder = Recorder(datastore)
        self.claims = Claims(datastore, NodeIdentity())
        runner = JobRunner(datastore, JobRegistry())
        self.dispatcher = Dispatcher(datastore, self.claims, runner, self.recorder, 1, misfire_grace_time=grace)
        self.dispatched = []
        self.dispatcher.put = lambda record, job: self.dispatched.append((record, job))
        self.store = DocumentJobStore(datastore.jobs)
        self.scheduler = TexiumScheduler(datastore, self.store, self.dispatcher, self.claims, grace)

    def claim(self, now):
        """The runs the pass at `now` queued on this node: (record, job) pairs."""
        before = len(self.dispatched)
        self.scheduler.claim_due(now)
        return self.dispatched[before:]

    def close(self):
        self.recorder.stop(2)


@pytest.fixture
def node(datastore):
    made = Node(datastore)
    yield made
    made.close()


def add_job(datastore, next_run_time, **fields):
    schedule = cron.normalize({"second": "*/1", **fields}, "UTC")
    return datastore.jobs.insert(
        {
            "name": "tick",
            "user_id": "507f1f77bcf86cd799439011",
            "job_class_string": "jobs.echo.EchoJob",
            **schedule,
            "is_enabled": True,
            "is_paused": False,
            "next_run_time": next_run_time,
            "created_at": BASE,
            "updated_at": BASE,
            "total_executions": 0,
            "pub_args": [],
            "pub_kwargs": {},
        }
    )


def records(datastore, job_id, status=None):
    query = {"job_id": job_id} | ({"status": status} if status else {})
    return datastore.executions.find(query, sort=[("scheduled_at", 1)])


def test_a_due_job_is_claimed_once_and_advanced(datastore, node):
    job_id = add_job(datastore, BASE)
    claimed = node.claim(BASE + timedelta(milliseconds=5))
    assert [execution["scheduled_at"] for execution, _ in claimed] == [BASE]
    assert datastore.jobs.get(job_id)["next_run_time"] == BASE + timedelta(seconds=1)
    assert [r["status"] for r in records(datastore, job_id)] == ["scheduled"]
    assert node.claim(BASE + timedelta(milliseconds=10)) == []  # nothing due any more


def test_two_nodes_with_the_same_stale_read_run_an_occurrence_once(datastore):
    job_id = add_job(datastore, BASE)
    first, second = Node(datastore), Node(datastore)
    try:
        stale = first.store.due(BASE)
        second.store.due = lambda now: [dict(doc) for doc in stale]  # read before the first claimed
        assert len(first.claim(BASE + timedelta(milliseconds=5))) == 1
        assert second.claim(BASE + timedelta(milliseconds=5)) == []
        assert len(records(datastore, job_id)) == 1
        assert datastore.jobs.get(job_id)["next_run_time"] == BASE + timedelta(seconds=1)
    finally:
        first.close()
        second.close()


def test_an_edit_between_read_and_claim_wins(datastore, node):
    """The stale pass loses its compare-and-set first, so it makes no record at all."""
    job_id = add_job(datastore, BASE)
    stale = node.store.due(BASE)
    datastore.jobs.update(
        job_id, fields={"is_paused": True, "next_run_time": None, "updated_at": BASE + timedelta(seconds=1)}
    )
    node.store.due = lambda now: stale
    assert node.claim(BASE + timedelta(milliseconds=5)) == []
    assert records(datastore, job_id) == []
    assert datastore.jobs.get(job_id)["next_run_time"] is None  # the pause stands


def test_late_occurrences_are_recorded_missed_and_the_latest_runs(datastore, node):
    job_id = add_job(datastore, BASE)
    claimed = node.claim(BASE + timedelta(seconds=10, milliseconds=300))
    assert [execution["scheduled_at"] for execution, _ in claimed] == [BASE + timedelta(seconds=10)]
    [missed] = records(datastore, job_id, "missed")
    assert missed["scheduled_at"] == BASE and missed["missed_until"] == BASE + timedelta(seconds=9)
    assert missed["missed_count"] == 10 and missed["late_seconds"] == 10.3
    assert "Missed 10 runs" in missed["error"] and missed["completed_at"] is not None
    assert datastore.jobs.get(job_id)["next_run_time"] == BASE + timedelta(seconds=11)
    assert node.scheduler.state_of_pass.missed_total == 10


def test_past_the_grace_time_nothing_runs_and_all_is_recorded(datastore):
    node = Node(datastore, grace=5)
    try:
        job_id = add_job(datastore, BASE, second="0")  # every minute
        assert node.claim(BASE + timedelta(minutes=3, seconds=30)) == []
        [missed] = records(datastore, job_id)
        assert missed["status"] == "missed" and missed["missed_count"] == 4
        assert missed["missed_until"] == BASE + timedelta(minutes=3)
        assert "past the misfire grace time" in missed["error"]
    finally:
        node.close()


def test_a_long_outage_costs_little_and_still_runs_the_latest(datastore, node):
    job_id = add_job(datastore, BASE)
    now = BASE + timedelta(days=2, milliseconds=200)
    clock = time.monotonic()
    claimed = node.claim(now)
    assert time.monotonic() - clock < 5
    assert [execution["scheduled_at"] for execution, _ in claimed] == [BASE + timedelta(days=2)]
    [missed] = records(datastore, job_id, "missed")
    assert "more than 10000 runs" in missed["error"] and missed["missed_until"] == BASE + timedelta(days=2, seconds=-1)
    assert datastore.jobs.get(job_id)["next_run_time"] == BASE + timedelta(days=2, seconds=1)


def test_a_broken_document_is_unscheduled_and_flagged_not_spun_on(datastore, node, caplog):
    bad = add_job(datastore, BASE)
    datastore.jobs.update(bad, fields={"timezone": "Mars/Olympus_Mons"})
    good = add_job(datastore, BASE)
    claimed = node.claim(BASE + timedelta(milliseconds=5))
    assert [job["_id"] for _, job in claimed] == [good]
    doc = datastore.jobs.get(bad)
    assert doc["next_run_time"] is None and "Mars/Olympus_Mons" in doc["schedule_error"]
    assert node.claim(BASE + timedelta(milliseconds=6)) == []  # not due again: no busy loop
    assert sum("cannot be scheduled" in r.message for r in caplog.records) == 1


def test_a_failed_store_read_retries_soon_and_says_so(datastore, node, monkeypatch):
    add_job(datastore, BASE)
    real_due = node.store.due

    def failing(now):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(node.store, "due", failing)
    assert node.scheduler._process_jobs() == 1.0  # JOBSTORE_RETRY_SECONDS, not "sleep until woken"
    state = node.scheduler.state_of_pass
    assert "database is locked" in state.store_error and state.store_error_since is not None
    monkeypatch.setattr(node.store, "due", real_due)
    wait = node.scheduler._process_jobs()
    assert 0 <= wait <= 1.0 and state.store_error == "" and len(node.dispatched) == 1
