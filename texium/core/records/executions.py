"""Reading the execution history: filtered newest-first pages, single runs, and statistics."""

from __future__ import annotations

from datetime import datetime

from texium.core import figures
from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound, ValidationError
from texium.core.jsontext import Raw
from texium.core.records import adherence
from texium.core.records.listing import NEWEST_FIRST, Page, list_page
from texium.core.scheduling.occurrences import HIDDEN, TRIGGERS
from texium.core.timeutil import utcnow
from texium.core.validation import require_id

# Where an execution came from: a job's run, or a heartbeat monitor's ping (job records carry no
# `source`; a monitor's carry "monitor").
SOURCES = ("job", "monitor")


def one_of(execution_id: str, owner: str | None) -> dict:
    """The query for one execution, of `owner`'s only when given (a non-admin's view)."""
    query = {"_id": require_id(execution_id, "execution_id")}
    if owner is not None:
        query["user_id"] = owner
    return query


def find_execution(datastore: Datastore, execution_id: str, owner: str | None = None) -> dict:
    """The execution document, or NotFound (also for someone else's, as for an unknown id)."""
    found = datastore.executions.find_one(one_of(execution_id, owner))
    if found is None:
        raise NotFound("Execution not found")
    return found


class ExecutionHistory:
    def __init__(self, datastore: Datastore):
        self._ds = datastore

    def list(
        self,
        job_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        monitor_id: str | None = None,
        source: str | None = None,
        parent_execution_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        owner: str | None = None,
    ) -> Page:
        """Newest first, filtered; `owner` (a non-admin) sees only their own executions."""
        query: dict = {}
        if job_id is not None:
            query["job_id"] = require_id(job_id, "job_id")
        if user_id is not None:
            query["user_id"] = require_id(user_id, "user_id")
        if monitor_id is not None:
            query["monitor_id"] = require_id(monitor_id, "monitor_id")
        if parent_execution_id is not None:
            query["parent_execution_id"] = require_id(parent_execution_id, "parent_execution_id")
        if source is not None:
            if source not in SOURCES:
                raise ValidationError(f"Invalid query parameter source: must be one of {', '.join(SOURCES)}")
            query["source"] = "monitor" if source == "monitor" else {"$ne": "monitor"}
        if owner is not None and query.setdefault("user_id", owner) != owner:
            return Page(total=0, items=[])
        if status is not None:
            if status not in figures.STATUSES:
                raise ValidationError(f"Invalid query parameter status: must be one of {', '.join(figures.STATUSES)}")
            query["status"] = status
        window = {op: t for op, t in (("$gte", since), ("$lt", until)) if t is not None}
        if window:
            query["created_at"] = window
        return list_page(self._ds.executions, query, limit, offset, sort=NEWEST_FIRST, hidden=HIDDEN)

    def get(self, execution_id: str, owner: str | None = None) -> Raw:
        """The execution as clients see it (JSON text); with `owner`, only one of theirs."""
        found = self._ds.executions.find_json(one_of(execution_id, owner), limit=1, hidden=HIDDEN)
        if not found:
            raise NotFound("Execution not found")
        return found[0]

    def progress(self, execution_id: str, owner: str | None = None) -> tuple[str, str, str]:
        """(status, output so far, error) of an execution, for following it while it runs."""
        found = find_execution(self._ds, execution_id, owner)
        return found["status"], found.get("output") or "", found.get("error") or ""

    def stats(self, user_id: str | None = None, job_id: str | None = None) -> dict:
        """Job counts and the execution figures (texium/core/figures.py), for everything, one
        user or one job, and the runs by what started them (`by_trigger`: one indexed count
        each); for one job also its schedule adherence (adherence.py)."""
        scope: dict = {}
        if user_id is not None:
            scope["user_id"] = require_id(user_id, "user_id")
        if job_id is not None:
            scope["job_id"] = require_id(job_id, "job_id")
        jobs = self._ds.jobs
        job_scope = {("_id" if k == "job_id" else k): v for k, v in scope.items()}
        stats = {
            "total_jobs": jobs.count(job_scope),
            "enabled_jobs": jobs.count({**job_scope, "is_enabled": True}),
            "paused_jobs": jobs.count({**job_scope, "is_paused": True}),
            **figures.compute(figures.count_tally(self._ds.executions, scope)),
            "excluded_executions": sum(
                int(job.get("excluded_runs") or 0) for job in jobs.find({**job_scope, "excluded_runs": {"$gt": 0}})
            ),
        }
        stats["by_trigger"] = {
            trigger: self._ds.executions.count({**scope, "trigger": trigger, "status": {"$nin": list(figures.NOT_RUN)}})
            for trigger in TRIGGERS
        }
        job = jobs.find_one(job_scope) if job_id is not None else None
        if job is not None:
            stats["adherence"] = adherence.job_figures(self._ds, job, utcnow())
        return stats
