"""The schedule forecast: how many runs the cron schedules will fire in each coming hour.

The dashboard draws it as a heatmap (days x hours) so that a pile-up (forty jobs at 02:00)
shows before it happens. Only enabled, unpaused jobs count, with the same cron engine that
fires them (texium.core.scheduling.cron), so the forecast and the scheduler always agree.

The cost is bounded: each job's fire times are counted up to `per_job_limit` (at least one per
hour of the window, at most one per minute, and less when there are many jobs, so a whole
forecast looks at no more than about `BUDGET` fire times). A job that reaches its limit is
reported with `capped: true`, and the counts are then lower bounds. Pure and blocking: call it
off the IOLoop.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from texium.core.scheduling.jobstore import schedule_for

MAX_HOURS = 336  # two weeks
BUDGET = 200_000  # fire times looked at per forecast, across every job (about a second of CPU)
_HOUR = timedelta(hours=1)


def per_job_limit(hours: int, jobs: int) -> int:
    """How many fire times of one job are counted in a window of `hours` hours with `jobs` jobs."""
    return max(hours, min(60 * hours, BUDGET // max(1, jobs)))


def forecast(job_docs: list[dict], hours: int, now: datetime) -> dict:
    """Fire times per UTC hour from the start of the current hour, for `hours` hours.

    Returns {start, end, hours, per_job_limit, total_runs, capped_jobs, buckets, jobs, errors}:
    `buckets` has one entry per hour ({start, runs, jobs}: fire times and distinct jobs in it),
    `jobs` one per counted job ({job_id, name, runs, capped, first_run}), busiest first, and
    `errors` the jobs whose schedule cannot be built ({job_id, name, error}).
    """
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"hours must be from 1 to {MAX_HOURS}")
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    start = now.replace(minute=0, second=0, microsecond=0)
    end = start + hours * _HOUR
    active = [doc for doc in job_docs if doc.get("is_enabled", True) and not doc.get("is_paused")]
    limit = per_job_limit(hours, len(active))
    runs = [0] * hours
    job_sets: list[set[str]] = [set() for _ in range(hours)]
    jobs, errors = [], []
    for doc in active:
        job_id, name = str(doc.get("_id")), doc.get("name", "")
        try:
            schedule = schedule_for(doc)
        except Exception as exc:  # ValidationError: a stored schedule that no longer builds
            errors.append({"job_id": job_id, "name": name, "error": str(exc)})
            continue
        # Fire times in [start, end): from the hour's start, so runs earlier this hour count too.
        times = schedule.fire_times_between(start - timedelta(microseconds=1), end - timedelta(microseconds=1), limit)
        for moment in times:
            index = int((moment - start) / _HOUR)
            runs[index] += 1
            job_sets[index].add(job_id)
        if times:
            jobs.append(
                {
                    "job_id": job_id,
                    "name": name,
                    "runs": len(times),
                    "capped": len(times) >= limit,
                    "first_run": times[0],
                }
            )
    jobs.sort(key=lambda job: (-job["runs"], job["name"]))
    return {
        "start": start,
        "end": end,
        "hours": hours,
        "per_job_limit": limit,
        "total_runs": sum(runs),
        "capped_jobs": sum(1 for job in jobs if job["capped"]),
        "buckets": [{"start": start + i * _HOUR, "runs": runs[i], "jobs": len(job_sets[i])} for i in range(hours)],
        "jobs": jobs,
        "errors": errors,
    }
