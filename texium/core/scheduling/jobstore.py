"""An APScheduler 3 job store whose jobs ARE the `scheduler_jobs` documents.

ndscheduler pickles APScheduler jobs beside its own rows; here the job document (API fields
plus `next_run_time`) is the only truth, and APScheduler `Job` objects are rebuilt from it on
each look-up. One class serves every provider because it speaks the datastore's
`Collection` interface, not a database. The scheduler's pass (texium.core.scheduling.scheduler) reads
due documents here and writes a whole pass back at once; every other change to a job is made
by SchedulerManager.
"""

from __future__ import annotations

from datetime import datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore

from texium.core.datastore.base import Collection
from texium.core.scheduling import cron
from texium.core.scheduling.spread import JitteredSchedule

EXECUTOR_ALIAS = "default"
SCHEDULED = {"next_run_time": {"$ne": None}}


def _never_called() -> None:
    """Placeholder callable: Texium runs jobs by id through its runner, not through Job.func."""


def _fields(doc: dict) -> dict:
    """What the job's cron schedule is built from: its cron fields, zone and `dst_policy`."""
    fields = {name: doc.get(name, cron.DEFAULTS.get(name)) for name in (*cron.CRON_FIELDS, "timezone")}
    return fields | {"dst_policy": doc.get("dst_policy")}


def job_schedule(fields: dict, job_id: str | None, jitter_seconds: int | None):
    """The times a job with these cron fields, id and jitter fires at: `H` resolved from the id,
    each occurrence delayed by its jitter. The one schedule the planner, the dispatcher, the
    job's next_run_time, the forecast and the preview all use, so they agree on every time."""
    schedule = cron.schedule_for(fields, job_id)
    return JitteredSchedule(schedule, str(job_id), jitter_seconds) if jitter_seconds else schedule


def schedule_for(doc: dict):
    """The job's schedule (the cron part cached by its fields); ValidationError if it cannot be
    built."""
    return job_schedule(_fields(doc), doc.get("_id"), doc.get("jitter_seconds"))


def next_run_for(doc: dict, now: datetime) -> datetime | None:
    """The job's next run after `now`: none while it is paused or disabled (ValidationError
    if its schedule cannot be built)."""
    if not doc.get("is_enabled", True) or doc.get("is_paused"):
        return None
    return schedule_for(doc).next_after(now)


class DocumentJobStore(BaseJobStore):
    def __init__(self, jobs: Collection):
        super().__init__()
        self._jobs = jobs

    # -- Texium's pass -----------------------------------------------------------------
    def due(self, now: datetime) -> list[dict]:
        return self._jobs.find({"next_run_time": {"$lte": now}}, sort=[("next_run_time", 1)])

    def next_run_time(self) -> datetime | None:
        """The earliest next_run_time of any scheduled job. Raises when the store fails: the
        caller must know, since "no job" would let the scheduler sleep forever."""
        doc = self._jobs.find_one(SCHEDULED, sort=[("next_run_time", 1)])
        return doc["next_run_time"] if doc else None

    # -- APScheduler's view (scheduler.get_jobs(), lookups) ---------------------------
    def _job(self, doc: dict) -> Job | None:
        try:
            trigger = cron.UnixCronTrigger(schedule_for(doc))
        except Exception:
            return None  # the pass unschedules it and says why (schedule_error)
        job = Job.__new__(Job)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        job.id = doc["_id"]
        job.func, job.func_ref = _never_called, f"{__name__}:_never_called"
        job.trigger = trigger
        job.executor = EXECUTOR_ALIAS
        job.args, job.kwargs = (), {}
        job.name = doc.get("name") or doc["_id"]
        job.misfire_grace_time = None
        job.coalesce = True
        job.max_instances = 1
        job.next_run_time = doc.get("next_run_time")
        return job

    def _jobs_from(self, docs: list[dict]) -> list[Job]:
        return [job for job in map(self._job, docs) if job is not None]

    def lookup_job(self, job_id: str) -> Job | None:
        doc = self._jobs.get(job_id)
        return self._job(doc) if doc else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._jobs_from(self.due(now))

    def get_next_run_time(self) -> datetime | None:
        return self.next_run_time()

    def get_all_jobs(self) -> list[Job]:
        return self._jobs_from(self._jobs.find(SCHEDULED, sort=[("next_run_time", 1)]))

    def add_job(self, job: Job) -> None:
        raise NotImplementedError("Texium jobs are created through SchedulerManager, not scheduler.add_job")

    def update_job(self, job: Job) -> None:
        raise NotImplementedError(
            "Texium's pass writes next run times back in batches (texium.core.scheduling.scheduler)"
        )

    def remove_job(self, job_id: str) -> None:
        raise NotImplementedError("Texium jobs are deleted through SchedulerManager")

    def remove_all_jobs(self) -> None:
        raise NotImplementedError("Texium never removes all jobs through the scheduler")
