"""Pausing with intent: a pause with a note and an end, a job that pauses itself after failing
N times in a row, and the maintenance switch that pauses every job at once.

Everything here is shared by every node through the store, and every move is one conditional
write, so whichever node gets there first does it, once:

- A job's pause keeps `pause_note`, `paused_until`, `paused_at` and `paused_by`; the scheduler's
  pass (on any node) resumes a job whose `paused_until` has come, by compare-and-set on the job
  as it read it (`updated_at`, still paused, the same `paused_until`), with `next_run_time`
  computed from the schedule as a manual resume does. Only the node whose write applied audits it.
- `pause_after_failures: N` counts from the store, not in memory: the job's last N ended
  occurrences (`completed`, `failed`, `timeout`; retried attempts and records that did not run
  say nothing) since it was last resumed. When all N failed, the job is paused by a conditional
  write on "not paused", so two nodes seeing the N-th failure together pause it once.
- The maintenance switch is one document (`scheduler_state`, key "maintenance"). While it is on,
  every scheduled occurrence and retry is claimed as usual but ends `skipped` at its start, with
  the reason (the start reads the switch in its own batch), run-now answers 409, and the pass
  turns it off at its `paused_until`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from texium.core.datastore.base import Datastore
from texium.core.errors import DuplicateKeyError
from texium.core.scheduling.jobstore import next_run_for
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.scheduler")

SCHEDULER = "scheduler"  # who the audit log names for what the scheduler did by itself
MAINTENANCE = "maintenance"  # the switch's key in scheduler_state
ENDED_RUNS = ("completed", "failed", "timeout")  # the outcomes a failure streak counts
FAILED_RUNS = ("failed", "timeout")
PAUSE_FIELDS = ("pause_note", "paused_until", "paused_at", "paused_by")

Audit = Callable[[dict, str, str, str], None]  # (job, event, user, description), AuditLog.record


def pause_fields(note: str | None, until: datetime | None, by: str, now: datetime) -> dict:
    """What a pause writes on a job (or on the maintenance switch)."""
    return {"is_paused": True, "pause_note": note or None, "paused_until": until, "paused_at": now, "paused_by": by}


def resume_fields(now: datetime) -> dict:
    """What a resume writes: the pause and its reason are gone; a failure streak counts from now."""
    return {"is_paused": False, **dict.fromkeys(PAUSE_FIELDS), "resumed_at": now}


def describe_pause(doc: dict) -> str:
    """ "paused since ... by ... until ...: note" in words, for audit entries and health."""
    words = f"paused since {to_iso(doc.get('paused_at'))} by {doc.get('paused_by')}"
    if doc.get("paused_until") is not None:
        words += f" until {to_iso(doc['paused_until'])}"
    if doc.get("pause_note"):
        words += f": {doc['pause_note']}"
    return words


def next_version(doc: dict, now: datetime) -> datetime:
    """A job's new `updated_at`: strictly after the one stored (the version its writes compare)."""
    version = doc.get("updated_at")
    return max(now, version + timedelta(milliseconds=1)) if isinstance(version, datetime) else now


def maintenance_of(datastore: Datastore) -> dict | None:
    """The maintenance switch while it is on (one indexed read), else None."""
    switch = datastore.state.find_one({"key": MAINTENANCE})
    if switch is None or not switch.get("is_paused"):
        return None
    return {name: switch.get(name) for name in ("is_paused", *PAUSE_FIELDS)}


class Pauses:
    def __init__(self, datastore: Datastore, audit: Audit):
        self._ds = datastore
        self._audit = audit

    # -- paused until ------------------------------------------------------------------
    def resume_due(self, now: datetime) -> datetime | None:
        """Resume the jobs whose pause ended by `now`, and turn maintenance off at its end (the
        pass calls it: two indexed reads when nothing is due). Returns the earliest end still
        ahead, so the pass wakes for it."""
        ends = self.next_resume()
        if ends is None or ends > now:
            return ends
        self.end_maintenance_due(now)
        for job in self._ds.jobs.find({"paused_until": {"$lte": now}}, sort=[("paused_until", 1)], limit=1000):
            self._resume(job, now)
        return self.next_resume()

    def _resume(self, job: dict, now: datetime) -> dict | None:
        fields = resume_fields(now)
        error = None
        try:
            fields["next_run_time"] = next_run_for({**job, **fields}, now)
        except Exception as exc:  # the pass's planner says why it cannot fire; the job is resumed all the same
            error = getattr(exc, "detail", None) or str(exc)
            fields.update(next_run_time=None, schedule_error=error)
        fields["updated_at"] = next_version(job, now)
        unchanged = {"_id": job["_id"], "updated_at": job.get("updated_at"), "is_paused": True}
        unchanged["paused_until"] = job["paused_until"]
        with self._ds.batch():
            if not self._ds.jobs.update_many(unchanged, fields):
                return None  # another node resumed it, or someone changed it meanwhile
            why = f"Resumed automatically: it was {describe_pause(job)}"
            self._audit({**job, **fields}, "resumed", SCHEDULER, f"{why}; next run {to_iso(fields['next_run_time'])}")
        log.info("Job %s (%s) resumed: its pause ended at %s", job["_id"], job.get("name"), to_iso(job["paused_until"]))
        return fields

    def next_resume(self) -> datetime | None:
        """The earliest end of a job's pause or of maintenance (the pass wakes for it)."""
        found = self._ds.jobs.find_one({"paused_until": {"$ne": None}}, sort=[("paused_until", 1)])
        times = [found["paused_until"]] if found and isinstance(found.get("paused_until"), datetime) else []
        switch = self.maintenance()
        if switch is not None and isinstance(switch.get("paused_until"), datetime):
            times.append(switch["paused_until"])
        return min(times) if times else None

    # -- pause after failures ----------------------------------------------------------
    def failure_streak(self, job: dict, limit: int) -> int:
        """How many of the job's last `limit` ended occurrences since its last resume failed in
        a row (newest first; a completed one ends the streak)."""
        query: dict = {"job_id": job["_id"], "status": {"$in": list(ENDED_RUNS)}}
        if isinstance(job.get("resumed_at"), datetime):
            query["created_at"] = {"$gt": job["resumed_at"]}
        streak = 0
        for record in self._ds.executions.find(query, sort=[("created_at", -1)], limit=limit):
            if record["status"] not in FAILED_RUNS:
                break
            streak += 1
        return streak

    def pause_after_failure(self, job_id: str) -> dict | None:
        """After a failed or timed-out occurrence of the job: pause it if its last
        `pause_after_failures` occurrences all failed. Returns the job as paused by this call
        (None: no pause, or another node paused it first)."""
        job = self._ds.jobs.get(job_id)
        limit = job and job.get("pause_after_failures")
        if not job or not isinstance(limit, int) or job.get("is_paused") or not job.get("is_enabled", True):
            return None
        if self.failure_streak(job, limit) < limit:
            return None
        now = utcnow()
        note = f"Paused automatically after {limit} failed run{'s' if limit != 1 else ''} in a row"
        fields = {**pause_fields(note, None, SCHEDULER, now), "next_run_time": None}
        fields["updated_at"] = next_version(job, now)
        with self._ds.batch():
            if not self._ds.jobs.update_many({"_id": job_id, "updated_at": job.get("updated_at")}, fields):
                return None  # changed meanwhile (paused, edited): the next failure looks again
            self._audit({**job, **fields}, "paused", SCHEDULER, f"{note} (pause_after_failures: {limit})")
        log.warning("Job %s (%s): %s", job_id, job.get("name"), note.lower())
        return {**job, **fields}

    # -- the maintenance switch -----------------------------------------------------------
    def maintenance(self) -> dict | None:
        return maintenance_of(self._ds)

    def set_maintenance(self, on: bool, note: str | None, until: datetime | None, by: str) -> dict:
        """Turn the switch on (again: with this note and end) or off; returns it as written."""
        now = utcnow()
        fields = pause_fields(note, until, by, now) if on else {**resume_fields(now), "resumed_by": by}
        if not self._ds.state.update_many({"key": MAINTENANCE}, fields):
            try:
                self._ds.state.insert({"key": MAINTENANCE, **fields})
            except DuplicateKeyError:  # another node made it just now: ours is the later word
                self._ds.state.update_many({"key": MAINTENANCE}, fields)
        log.warning("Maintenance %s", describe_pause(fields) if on else f"ended by {by}: jobs fire again")
        return fields

    def end_maintenance_due(self, now: datetime) -> bool:
        """Turn the switch off at its end, once, whichever node sees it first."""
        switch = self.maintenance()
        until = switch and switch.get("paused_until")
        if not isinstance(until, datetime) or until > now:
            return False
        ended = {**resume_fields(now), "resumed_by": SCHEDULER}
        if not self._ds.state.update_many({"key": MAINTENANCE, "is_paused": True, "paused_until": until}, ended):
            return False
        log.warning("Maintenance ended by itself (it was %s): jobs fire again", describe_pause(switch))
        return True
