"""Read-only summaries the dashboard needs in one request instead of one per job or per hour.

* `job_summaries`: for every job, its schedule in plain English, its latest runs (a strip of
  coloured squares), its last success and its last failure. One indexed query per job (two or
  three when the last success or failure is older than the strip), never a scan.
* `activity`: execution records per hour (last 24 h) or per day (last 30 days), by status, by
  indexed count() calls (statuses x buckets), never by reading the records.

Pure and blocking (datastore calls): call them off the IOLoop.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from texium.core import figures
from texium.core.datastore.base import Datastore
from texium.core.errors import ValidationError
from texium.core.records.listing import NEWEST_FIRST, OLDEST_FIRST
from texium.core.records.users import owned_by
from texium.core.scheduling import cron

MAX_JOBS = 1000  # as GET /api/scheduler/jobs
MAX_RUNS = 50
FAILED = ("failed", "abandoned", "timeout", "cancelled")
RUN_FIELDS = ("_id", "status", "created_at", "started_at", "completed_at", "duration_ms", "missed_count")
BUCKETS = {"hour": (timedelta(hours=1), 24), "day": (timedelta(days=1), 30)}


def error_summary(error: str | None) -> str:
    """One line saying what went wrong: the first line, or a traceback's last line."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[:300]


def _run(doc: dict) -> dict:
    view = {k: doc.get(k) for k in RUN_FIELDS if k in doc}
    if doc.get("status") in FAILED or doc.get("error"):
        view["error_summary"] = error_summary(doc.get("error"))
    return view


def describe(doc: dict) -> str | None:
    """The job's schedule in plain English (as the cron preview says it), None if it is broken."""
    try:
        fields = {name: str(doc.get(name, cron.DEFAULTS[name])) for name in cron.CRON_FIELDS}
        return cron.describe(cron.resolve({**fields, "timezone": doc.get("timezone") or "UTC"}, doc.get("_id")))
    except Exception:
        return None


def job_summaries(datastore: Datastore, user_id: str | None, runs: int) -> list[dict]:
    if not 1 <= runs <= MAX_RUNS:
        raise ValidationError(f"Invalid query parameter runs: must be from 1 to {MAX_RUNS}")
    jobs = datastore.jobs.find(owned_by(datastore, user_id), sort=OLDEST_FIRST, limit=MAX_JOBS)
    executions = datastore.executions
    summaries = []
    for job in jobs:
        job_id = job["_id"]
        latest = executions.find({"job_id": job_id}, sort=NEWEST_FIRST, limit=runs)
        success = next((r for r in latest if r.get("status") == "completed"), None)
        failure = next((r for r in latest if r.get("status") in FAILED), None)
        if success is None and len(latest) == runs:
            success = executions.find_one({"job_id": job_id, "status": "completed"}, sort=NEWEST_FIRST)
        if failure is None and len(latest) == runs:
            failure = executions.find_one({"job_id": job_id, "status": {"$in": list(FAILED)}}, sort=NEWEST_FIRST)
        summaries.append(
            {
                "job_id": job_id,
                "schedule_description": describe(job),
                "recent_runs": [_run(r) for r in latest],
                "last_success": _run(success) if success else None,
                "last_failure": _run(failure) if failure else None,
            }
        )
    return summaries


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except Exception:
        raise ValidationError(f"Invalid query parameter timezone: {name!r} is not an IANA time zone") from None


def activity(datastore: Datastore, bucket: str, timezone: str | None, now: datetime) -> dict:
    """Execution records created per bucket, by status: the last 24 hours or the last 30 days
    (days begin at midnight in `timezone`, default UTC), oldest bucket first."""
    if bucket not in BUCKETS:
        raise ValidationError("Invalid query parameter bucket: must be hour or day")
    size, count = BUCKETS[bucket]
    zone = _zone(timezone)
    if bucket == "hour":
        last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        starts = [last - (count - 1 - i) * size for i in range(count + 1)]
    else:
        today = now.astimezone(zone).date()
        days = [today - timedelta(days=count - 1 - i) for i in range(count + 1)]
        starts = [datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC) for d in days]
    executions = datastore.executions
    buckets = []
    for begin, end in zip(starts, starts[1:]):
        counts = {}
        for status in figures.STATUSES:
            n = executions.count({"status": status, "created_at": {"$gte": begin, "$lt": end}})
            if n:
                counts[status] = n
        buckets.append({"start": begin, "end": end, "counts": counts, "total": sum(counts.values())})
    return {"bucket": bucket, "timezone": zone.key, "statuses": list(figures.STATUSES), "buckets": buckets}
