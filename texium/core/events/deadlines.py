"""Deadlines: "must have succeeded by 06:00 Europe/Berlin on weekdays".

A job's `deadline` is cron day fields (day_of_month, month, day_of_week, week) with a wall
`time` (HH:MM or HH:MM:SS) and a `timezone`; its instants come from the firing core's cron
engine (cron.py), so daylight saving is handled as for a fixed-time schedule (a time in the
spring-forward gap falls at the change, a repeated one counts once).

The job keeps `deadline_due_at` (the next instant not yet checked; indexed) and
`deadline_checked_until` (the last instant checked). A periodic check on every node reads the
jobs whose `deadline_due_at` has passed (one indexed query) and moves each forward by ONE
conditional write on both fields; only the node whose write applied looks for a success and
may alert, so two nodes never both send. When several instants passed (the server was down),
only the latest is judged: one alert, not a flood. A deadline is missed when no run of the job
`completed` after the previous instant and by this one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from texium.core.datastore.base import Datastore
from texium.core.errors import ValidationError
from texium.core.scheduling import cron
from texium.core.timeutil import as_utc, to_iso

log = logging.getLogger("texium.alerts")

EVENT = "deadline_missed"
DAY_FIELDS = ("day_of_month", "month", "day_of_week", "week")
BATCH = 100  # jobs judged per check at most; the rest the next check
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
# Windows looked back through for the latest instant, widest last (a deadline fires at least yearly).
_LOOKBACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32), timedelta(days=400))
_TICK = timedelta(microseconds=1)


def check_deadline(value: Any, default_timezone: str) -> dict | None:
    """A job's `deadline` checked and completed (day fields default to `*`, the zone to
    `default_timezone`, the job's own); None for none. ValidationError names `deadline.<field>`."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("Invalid field deadline: must be an object (time, timezone, day fields) or null")
    unknown = sorted(str(k) for k in value if k not in (*DAY_FIELDS, "time", "timezone"))
    if unknown:
        known = ", ".join(("time", "timezone", *DAY_FIELDS))
        raise ValidationError(f"Invalid field deadline.{unknown[0]}: unknown (give {known})")
    time = value.get("time")
    if not isinstance(time, str) or not _TIME.match(time.strip()):
        raise ValidationError("Invalid field deadline.time: must be HH:MM or HH:MM:SS (24-hour wall time)")
    zone = value.get("timezone")
    deadline = {
        "time": time.strip(),
        "timezone": default_timezone if zone is None else zone,
        **{name: value.get(name, "*") for name in DAY_FIELDS},
    }
    try:
        schedule_of(deadline)
    except ValidationError as exc:  # "Invalid cron field day_of_week: ..." / "Invalid timezone: ..."
        detail = str(exc)
        for prefix, field in (("Invalid cron field ", "deadline."), ("Invalid timezone", "deadline.timezone")):
            detail = detail.replace(prefix, f"Invalid field {field}", 1)
        raise ValidationError(detail) from None
    return deadline


def schedule_of(deadline: Mapping[str, Any]) -> cron.CronSchedule:
    """The cron schedule whose fire times are the deadline's instants."""
    hour, minute, second = (*_TIME.match(str(deadline["time"]).strip()).groups(),)
    fields = {name: deadline.get(name, "*") for name in DAY_FIELDS}
    fields.update(hour=str(int(hour)), minute=str(int(minute)), second=str(int(second or 0)))
    fields["timezone"] = deadline.get("timezone")
    return cron.schedule_for(cron.normalize(fields, str(deadline.get("timezone"))))


def latest_until(schedule: cron.CronSchedule, moment: datetime) -> datetime | None:
    """The latest instant at or before `moment` (None if there is none within 400 days): looks
    back through growing windows, so a frequent deadline costs a few steps, a yearly one too."""
    for back in _LOOKBACK:
        found, t = None, moment - back
        while (t := schedule.next_after(t)) is not None and t <= moment:
            found = t
        if found is not None:
            return found
    return None


def deadline_fields(deadline: dict | None, now: datetime) -> dict:
    """The job fields a new or changed deadline starts with: the next instant to check and,
    as checked already, the latest one before now (a new deadline judges no past)."""
    if deadline is None:
        return {"deadline_due_at": None, "deadline_checked_until": None}
    schedule = schedule_of(deadline)
    return {"deadline_due_at": schedule.next_after(now), "deadline_checked_until": latest_until(schedule, now)}


class Deadlines:
    """The periodic deadline check of one node (see the module's docstring)."""

    def __init__(self, datastore: Datastore, announce: Callable[[dict, str, dict], None], batch: int = BATCH):
        self._ds = datastore
        self._announce = announce  # Alerts.announce: queued on the alerts thread, sent like any alert
        self._batch = batch

    def check(self, now: datetime) -> int:
        """Judge every job whose next deadline has passed; returns the deadlines missed (alerted)."""
        due = self._ds.jobs.find({"deadline_due_at": {"$lte": now}}, sort=[("deadline_due_at", 1)], limit=self._batch)
        missed = 0
        for job in due:
            try:
                missed += self._judge(job, now)
            except Exception:  # one job's bad deadline must not stop the others
                log.exception("Deadline check of job %s failed", job.get("_id"))
        return missed

    def _judge(self, job: dict, now: datetime) -> int:
        schedule = schedule_of(job["deadline"])
        instant = latest_until(schedule, now)
        fields = {"deadline_due_at": schedule.next_after(now), "deadline_checked_until": instant}
        expected = {
            "_id": job["_id"],
            "deadline_due_at": job["deadline_due_at"],
            "deadline_checked_until": job.get("deadline_checked_until"),
        }
        if instant is None or self._ds.jobs.update_many(expected, fields) != 1:
            return 0  # another node judged it (or the job changed meanwhile: its new fields hold)
        if not job.get("is_enabled", True):
            return 0  # a disabled job is not expected to succeed
        previous = latest_until(schedule, instant - _TICK)
        window: dict = {"$lte": instant}
        if previous is not None:
            window["$gt"] = previous
        if self._ds.executions.find_one({"job_id": job["_id"], "status": "completed", "completed_at": window}):
            return 0
        since = f"since {to_iso(previous)}" if previous is not None else "before it"
        self._announce(
            job,
            EVENT,
            {
                "_id": None,
                "job_id": job["_id"],
                "status": "no success",
                "scheduled_at": as_utc(instant),
                "error": f"No successful run {since}: the deadline {to_iso(instant)} passed.",
            },
        )
        return 1
