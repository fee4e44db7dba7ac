"""Schedule adherence: of a job's scheduled occurrences in the last 7 and 30 days, the share that
started within `adherence_seconds` of their time, and their success rate.

Which records count (one definition, used by the job's stats, /metrics and `adherence_low`):

- records of the job whose `scheduled_at` (the occurrence's time, jitter included) lies in the
  window, with trigger `schedule` (catch-up runs included); run-now, backfill and retry records
  are no occurrences of the schedule (a retry's occurrence is its first attempt, judged by that
  attempt's start);
- a `missed` record counts each occurrence it names (`missed_count`), none on time; it falls in
  the window of its first occurrence (`scheduled_at`);
- `skipped` records do not count: someone decided the occurrence should not run (the overlap
  policy, a pause, an edit, maintenance); the `skipped` alert reports those of the overlap
  policy. Nor does a record cancelled before it started;
- an occurrence is on time when it started at most `adherence_seconds` after `scheduled_at`; one
  not started yet counts only once that time has passed (late);
- `ratio` = on_time / occurrences (null with none); `success_rate` as the stats define it
  (figures.py): completed / ended * 100 over these occurrences, each judged by its last attempt.

Reads are bounded: one indexed query on (job_id, scheduled_at) for the 30 days, at most
MAX_RECORDS records (the newest); the 7 days are taken from the same read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from texium.core import figures
from texium.core.datastore.base import Datastore
from texium.core.scheduling.occurrences import RETRY, SCHEDULE, trigger_of
from texium.core.timeutil import as_utc

WINDOWS = {"7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_SECONDS = 60
MAX_RECORDS = 100_000  # per job and computation; a job firing every 30 s fills 30 days with 86,400


def job_figures(datastore: Datastore, job: dict, now: datetime) -> dict:
    """`{"7d": {...}, "30d": {...}}` of one job (see the module's docstring)."""
    since = now - max(WINDOWS.values())
    records = datastore.executions.find(
        {"job_id": job["_id"], "scheduled_at": {"$gte": since, "$lte": now}},
        sort=[("scheduled_at", -1)],
        limit=MAX_RECORDS,
    )
    seconds = job.get("adherence_seconds") or DEFAULT_SECONDS
    return summarize(records, float(seconds), now)


def summarize(records: Iterable[dict], seconds: float, now: datetime) -> dict:
    """The figures of each window from the records of the widest one."""
    records = list(records)
    last_attempt: dict[str, tuple[int, str]] = {}  # first attempt's id -> (attempt, status) of its latest retry
    for record in records:
        if trigger_of(record) == RETRY and record.get("retry_of"):
            seen = last_attempt.get(record["retry_of"])
            if seen is None or int(record.get("attempt") or 0) > seen[0]:
                last_attempt[record["retry_of"]] = (int(record.get("attempt") or 0), record.get("status"))
    result = {}
    for name, span in WINDOWS.items():
        since = now - span
        on_time = occurrences = completed = ended = 0
        for record in records:
            scheduled = record.get("scheduled_at")
            if scheduled is None or as_utc(scheduled) < since or trigger_of(record) != SCHEDULE:
                continue
            judged = _judge(record, as_utc(scheduled), seconds, now)
            if judged is None:
                continue
            count, in_time = judged
            occurrences += count
            on_time += in_time
            outcome = last_attempt.get(record["_id"], (0, record.get("status")))[1]
            ended += outcome in figures.ENDED
            completed += outcome in figures.ENDED_WELL
        result[name] = {
            "ratio": round(on_time / occurrences, 4) if occurrences else None,
            "on_time": on_time,
            "occurrences": occurrences,
            "success_rate": figures.success_rate(completed, ended),
        }
    return result


def _judge(record: dict, scheduled: datetime, seconds: float, now: datetime) -> tuple[int, int] | None:
    """(occurrences, of which on time) of one scheduled record; None when it does not count."""
    status = record.get("status")
    if status == "missed":
        return int(record.get("missed_count") or 1), 0
    started = record.get("started_at")
    if status == "skipped" or (status == "cancelled" and started is None):
        return None
    limit = scheduled + timedelta(seconds=seconds)
    if started is None:
        return None if now < limit else (1, 0)
    return 1, int(as_utc(started) <= limit)
