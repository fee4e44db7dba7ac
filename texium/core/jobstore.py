"""An APScheduler 3 job store whose jobs ARE the `scheduler_jobs` documents.

ndscheduler pickles APScheduler jobs beside its own rows; here the job document (API fields
plus `next_run_time`) is the only truth, and APScheduler `Job` objects are rebuilt from it on
each look-up. One class serves every provider because it speaks the datastore's
`Collection` interface, not a database. The scheduler only reads due jobs and writes back
`next_run_time`; everything else about a job is changed by SchedulerManager.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError

from texium.core import cron
from texium.core.datastore.base import Collection

log = logging.getLogger("texium.jobstore")
EXECUTOR_ALIAS = "default"


def _never_called() -> None:
    """Placeholder callable: the Texium executor runs jobs by id, not through Job.func."""


def trigger_for(doc: dict):
    return cron.build_trigger({name: doc.get(name, cron.DEFAULTS.get(name)) for name in (*cron.CRON_FIELDS, "timezone")})


class DocumentJobStore(BaseJobStore):
    def __init__(self, jobs: Collection, misfire_grace_time: int | None, max_instances: int):
        super().__init__()
        self._jobs = jobs
        self._grace = misfire_grace_time
        self._max_instances = max_instances
        # Held by SchedulerManager while it changes a schedule, so the scheduler's write-back
        # of next_run_time can never undo a pause or an edit made at the same moment.
        self.lock = threading.RLock()
        self._versions: dict[str, datetime | None] = {}  # job id -> updated_at when last read

    def _job(self, doc: dict) -> Job | None:
        try:
            trigger = trigger_for(doc)
        except Exception as exc:
            log.error("Job %s has an unusable schedule and will not fire: %s", doc["_id"], exc)
            return None
        job = Job.__new__(Job)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        job.id = doc["_id"]
        job.func, job.func_ref = _never_called, f"{__name__}:_never_called"
        job.trigger = trigger
        job.executor = EXECUTOR_ALIAS
        job.args, job.kwargs = (), {}
        job.name = doc.get("name") or doc["_id"]
        job.misfire_grace_time = self._grace
        job.coalesce = True
        job.max_instances = self._max_instances
        job.next_run_time = doc.get("next_run_time")
        self._versions[job.id] = doc.get("updated_at")  # Job has __slots__: keep it beside
        return job

    def _jobs_from(self, docs: list[dict]) -> list[Job]:
        return [job for job in map(self._job, docs) if job is not None]

    def lookup_job(self, job_id: str) -> Job | None:
        doc = self._jobs.get(job_id)
        return self._job(doc) if doc else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._jobs_from(self._jobs.find({"next_run_time": {"$lte": now}}, sort=[("next_run_time", 1)]))

    def get_next_run_time(self) -> datetime | None:
        try:
            doc = self._jobs.find_one({"next_run_time": {"$ne": None}}, sort=[("next_run_time", 1)])
        except Exception as exc:  # APScheduler would let this kill its thread
            log.warning("Could not read the next run time: %s", exc)
            return None
        return doc["next_run_time"] if doc else None

    def get_all_jobs(self) -> list[Job]:
        return self._jobs_from(self._jobs.find({"next_run_time": {"$ne": None}}, sort=[("next_run_time", 1)]))

    def add_job(self, job: Job) -> None:
        if self._jobs.get(job.id):
            raise ConflictingIdError(job.id)
        raise NotImplementedError("Texium jobs are created through SchedulerManager, not scheduler.add_job")

    def update_job(self, job: Job) -> None:
        """Write back the next run time after a firing, unless the job changed meanwhile."""
        try:
            with self.lock:
                doc = self._jobs.get(job.id)
                if doc is None:
                    raise JobLookupError(job.id)
                if doc.get("updated_at") != self._versions.pop(job.id, None) or doc.get("next_run_time") is None:
                    return  # edited, paused or disabled since it was read: its own write wins
                self._jobs.update(job.id, set={"next_run_time": job.next_run_time})
        except JobLookupError:
            return  # deleted while it fired
        except Exception as exc:  # an exception here would stop APScheduler's thread for good
            log.warning("Could not save the next run time of job %s: %s", job.id, exc)

    def remove_job(self, job_id: str) -> None:
        """Called when a trigger is exhausted: keep the document, just stop scheduling it."""
        try:
            with self.lock:
                self._jobs.update(job_id, set={"next_run_time": None})
        except Exception as exc:
            log.warning("Could not unschedule job %s: %s", job_id, exc)

    def remove_all_jobs(self) -> None:
        raise NotImplementedError("Texium never removes all jobs through the scheduler")
