"""Owns the APScheduler scheduler and every change to a job's schedule.

Each change writes the job document (the schedule itself) under the job store's lock, records
an audit entry, and wakes the scheduler so the new next_run_time takes effect at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from texium.core import cron
from texium.core.audit import AuditLog
from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound, ValidationError
from texium.core.jobstore import EXECUTOR_ALIAS, DocumentJobStore, trigger_for
from texium.core.listing import Page, list_page
from texium.core.registry import JobRegistry
from texium.core.runner import ExecutionRunner
from texium.core.timeutil import to_iso, utcnow
from texium.core.users import owned_by
from texium.core.validation import Field, require_id, validate_body

log = logging.getLogger("texium.scheduler")
SCHEDULE_FIELDS = (*cron.CRON_FIELDS, "timezone")
JOB_FIELDS = (
    Field("user_id", "id", required=True),
    Field("job_class_string", required=True, max_length=300),
    Field("name", required=True, max_length=200),
    Field("description", max_length=2000, default=""),
    Field("pub_args", "list", default=[]),
    Field("pub_kwargs", "object", default={}),
    Field("is_enabled", "bool", default=True),
)


class _RunnerExecutor(BaseExecutor):
    """Hands due firings to the ExecutionRunner's pool, keeping APScheduler's instance count."""

    def __init__(self, runner: ExecutionRunner):
        super().__init__()
        self._runner = runner

    def _do_submit_job(self, job, run_times) -> None:
        def done(future) -> None:
            error = future.exception()
            if error is None:
                self._run_job_success(job.id, [])
            else:
                self._run_job_error(job.id, error, error.__traceback__)

        self._runner.submit_fire(job.id, run_times, done)

    def shutdown(self, wait: bool = True) -> None:
        """The runner owns the pool and its shutdown."""


def _split(body: dict) -> tuple[dict, dict]:
    schedule = {k: body[k] for k in SCHEDULE_FIELDS if k in body}
    return schedule, {k: v for k, v in body.items() if k not in SCHEDULE_FIELDS}


class SchedulerManager:
    def __init__(self, datastore: Datastore, registry: JobRegistry, runner: ExecutionRunner, audit: AuditLog,
                 timezone: str = "UTC", misfire_grace_time: int | None = 3600, max_instances: int = 1):
        self._ds = datastore
        self._registry = registry
        self._runner = runner
        self._audit = audit
        self._timezone = timezone
        self._max_instances = max_instances
        self._store = DocumentJobStore(datastore.jobs, misfire_grace_time, max_instances)
        # After a failed look-up of due jobs, try again in 2 s rather than APScheduler's 10 s.
        self._scheduler = BackgroundScheduler(timezone="UTC", jobstores={"default": self._store},
                                              executors={EXECUTOR_ALIAS: _RunnerExecutor(runner)},
                                              jobstore_retry_interval=2)
        self._scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> int:
        """Mark orphaned executions abandoned, then start firing; returns how many were orphaned."""
        orphans = self._runner.abandon_orphans()
        self._scheduler.start()
        return orphans

    def shutdown(self, grace_seconds: float) -> int:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        return self._runner.shutdown(grace_seconds)

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def _on_max_instances(self, event) -> None:
        reason = (f"Skipped: the previous run of this job was still in progress "
                  f"(at most {self._max_instances} running at once)")
        self._runner.record_skipped(event.job_id, list(event.scheduled_run_times), reason)

    def _wake(self) -> None:
        if self._scheduler.running:
            self._scheduler.wakeup()

    # -- reading -----------------------------------------------------------------------
    def get(self, job_id: str) -> dict:
        doc = self._ds.jobs.get(require_id(job_id, "job_id"))
        if doc is None:
            raise NotFound("Job not found")
        return doc

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        return list_page(self._ds.jobs, owned_by(self._ds, user_id), limit, offset)

    # -- changing ----------------------------------------------------------------------
    def _next_run(self, doc: dict, now: datetime) -> datetime | None:
        if not doc.get("is_enabled", True) or doc.get("is_paused"):
            return None
        return trigger_for(doc).get_next_fire_time(None, now)

    def _check_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def create(self, body: dict, actor: str) -> tuple[str, str]:
        schedule, rest = _split(body)
        doc = validate_body(rest, JOB_FIELDS)
        doc["job_class_string"] = self._registry.canonical(doc["job_class_string"])
        doc.update(cron.normalize(schedule, self._timezone))
        self._check_user(doc["user_id"])
        now = utcnow()
        doc.update(is_paused=False, created_at=now, updated_at=now, last_run_time=None, total_executions=0)
        doc["next_run_time"] = self._next_run(doc, now)
        with self._store.lock:
            doc["_id"] = self._ds.jobs.insert(doc)
        self._audit.record(doc, "created", actor, f"Created {doc['job_class_string']} job, next run {to_iso(doc['next_run_time'])}")
        self._wake()
        return doc["_id"], doc["name"]

    def update(self, job_id: str, body: dict, actor: str) -> None:
        if not body:
            raise ValidationError("No fields to update")
        schedule, rest = _split(body)
        changes = validate_body(rest, JOB_FIELDS, partial=True) if rest else {}
        if "job_class_string" in changes:
            changes["job_class_string"] = self._registry.canonical(changes["job_class_string"])
        if "user_id" in changes:
            self._check_user(changes["user_id"])
        with self._store.lock:
            doc = self.get(job_id)
            if schedule:
                current = {k: doc.get(k, cron.DEFAULTS.get(k)) for k in cron.CRON_FIELDS}
                changes.update(cron.normalize({**current, **schedule}, schedule.get("timezone") or doc.get("timezone") or self._timezone))
            changed = {k: v for k, v in changes.items() if doc.get(k) != v}
            now = utcnow()
            updated = {**doc, **changes}
            self._ds.jobs.update(job_id, set={**changes, "updated_at": now, "next_run_time": self._next_run(updated, now)})
        summary = "; ".join(f"{k}: {doc.get(k)!r} -> {v!r}" for k, v in changed.items()) or "no changes"
        self._audit.record(updated, "updated", actor, summary)
        self._wake()

    def _set_paused(self, job_id: str, paused: bool, actor: str) -> None:
        with self._store.lock:
            doc = self.get(job_id)
            now = utcnow()
            doc["is_paused"] = paused
            next_run = self._next_run(doc, now)
            self._ds.jobs.update(job_id, set={"is_paused": paused, "updated_at": now, "next_run_time": next_run})
        event = "paused" if paused else "resumed"
        self._audit.record(doc, event, actor, f"Job {event}, next run {to_iso(next_run)}")
        self._wake()

    def pause(self, job_id: str, actor: str) -> None:
        self._set_paused(job_id, True, actor)

    def resume(self, job_id: str, actor: str) -> None:
        self._set_paused(job_id, False, actor)

    def delete(self, job_id: str, actor: str) -> None:
        with self._store.lock:
            doc = self.get(job_id)
            self._ds.jobs.delete(job_id)
        self._audit.record(doc, "deleted", actor, "Job deleted; its executions are kept")
        self._wake()

    def delete_many(self, docs: list[dict], actor: str) -> None:
        """Cascade from a deleted user."""
        for doc in docs:
            try:
                self.delete(doc["_id"], actor)
            except NotFound:
                pass

    def run_now(self, job_id: str, actor: str) -> str:
        doc = self.get(job_id)
        execution_id = self._runner.run_now(doc)
        self._audit.record(doc, "run_now", actor, f"Run now requested: execution {execution_id}")
        return execution_id

    # -- utilities ---------------------------------------------------------------------
    def preview(self, fields: dict, count: int) -> dict:
        spec = cron.normalize({k: v for k, v in fields.items() if k != "timezone"}, fields.get("timezone") or self._timezone)
        return {
            "description": cron.describe(spec), "timezone": spec["timezone"],
            "next_run_times": cron.next_fire_times(spec, count, utcnow()),
        }
