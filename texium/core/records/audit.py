"""The audit trail of job changes (as ndscheduler keeps it): who did what to which job, when."""

from __future__ import annotations

from texium.core.datastore.base import Datastore
from texium.core.records.listing import NEWEST_FIRST, Page, list_page
from texium.core.timeutil import utcnow
from texium.core.validation import require_id

EVENTS = (
    "created",
    "updated",
    "deleted",
    "paused",
    "resumed",
    "run_now",
    "disabled",
    "audit_cleanup",
    "trigger_created",
    "trigger_revoked",
    "trigger_used",
)


class AuditLog:
    def __init__(self, datastore: Datastore):
        self._logs = datastore.audit_logs

    def record(self, job: dict, event: str, user: str, description: str) -> None:
        self._logs.insert(
            {
                "job_id": job["_id"],
                "job_name": job.get("name"),
                "user_id": job.get("user_id"),  # the job's owner: whose trail this is
                "event": event,
                "user": user,
                "description": description,
                "created_at": utcnow(),
            }
        )

    def list(self, job_id: str | None, since, until, limit: int, offset: int, user_id: str | None = None) -> Page:
        """Newest first; `user_id` keeps only the trail of that user's jobs."""
        query: dict = {} if user_id is None else {"user_id": user_id}
        if job_id is not None:
            query["job_id"] = require_id(job_id, "job_id")
        window = {op: t for op, t in (("$gte", since), ("$lt", until)) if t is not None}
        if window:
            query["created_at"] = window
        return list_page(self._logs, query, limit, offset, sort=NEWEST_FIRST)
