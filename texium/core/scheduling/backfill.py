"""Backfills: a job's own schedule run over a past span, through the same claims as its firings.

A backfill is a document in `scheduler_backfills` holding its occurrences (the job's schedule
between `from` and `to` when it was asked for: time zone and DST, `H`, jitter, the job's
window applied, calendar blackouts left out) and a `cursor`, how many of them were claimed.
Nothing about it lives in one node's memory, so any node continues it. Each pass of every
node, for each running backfill (advance):

1. when a record of its last claim is missing (its claimer died or failed between its two
   writes), makes them again by run key (idempotent: a record already made stays as it is),
   held by nobody unless this node wrote the claim, so whichever pass takes them runs them;
2. counts its records that have not ended; all claimed and none left: `completed` (one
   conditional write);
3. while the job may run (not paused, disabled or deleted; maintenance off), claims the next
   occurrences, up to twice the job's `max_instances` minus those not ended, by compare-and-set
   on `cursor` (writing them as `last_claim`), then inserts their records held by this node,
   trigger `backfill`, and queues them (then reads the backfill again: a cancel that came in
   between ends them too). Dispatch starts them oldest first, at most
   `max_instances` at once, and never skips them for the overlap policy: like a run-now, a
   backfill run waits for the job's slot.

An occurrence that already has a record (the same run key: it ran, was skipped or is queued)
is never run again; it counts as done. Progress is derived from the cursor and the records:
`done` = claimed - not yet ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import Conflict, NotFound, ValidationError
from texium.core.figures import ACTIVE
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.occurrences import BACKFILL, run_key
from texium.core.scheduling.pausing import maintenance_of
from texium.core.scheduling.windows import TICK, CalendarReader, JobTimes
from texium.core.timeutil import parse_iso, to_iso, utcnow

log = logging.getLogger("texium.backfill")
COLLECTION = "scheduler_backfills"
BACKFILL_LIMIT = 10_000  # occurrences one backfill may run
COUNTED_LIMIT = 100_000  # occurrences counted one by one when a span holds too many
KEYS_PER_QUERY = 500  # run keys looked up in one query (has_record)
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)  # what a backfill spans
SHOWN = ("job_id", "user_id", "status", "total", "max_runs", "created_by")


class Backfills:
    def __init__(self, datastore: Datastore, claims: Claims, limit_of: Callable[[dict], int]):
        """`limit_of(job)`: the job's runs at once (Dispatcher.limit_of)."""
        self._ds = datastore
        self._docs = datastore.collection(COLLECTION)
        self._claims = claims
        self._calendars = CalendarReader(datastore)
        self._limit_of = limit_of

    # -- asking --------------------------------------------------------------------------
    def occurrences(self, job: dict, start: datetime, end: datetime, max_runs: int | None) -> list[datetime]:
        """The job's occurrences with start <= t <= end, blackouts left out, the oldest
        `max_runs`; a 400 naming the count beyond BACKFILL_LIMIT."""
        if end <= start:
            raise ValidationError(f"Invalid field to: {to_iso(end)} is not after from ({to_iso(start)})")
        times = JobTimes(job, self._calendars.blackouts_of(job))
        found, kept = times.raw_between(start - TICK, end, COUNTED_LIMIT + 1), []
        for moment in found:
            if times.excluded_by(moment) is None:
                kept.append(moment)
                if max_runs is not None and len(kept) == max_runs:
                    return kept
        if len(kept) > BACKFILL_LIMIT:
            many = f"more than {COUNTED_LIMIT}" if len(found) > COUNTED_LIMIT else str(len(kept))
            raise ValidationError(
                f"Invalid field to: {many} occurrences between from and to; a backfill runs at most "
                f"{BACKFILL_LIMIT} (narrow the span or give max_runs)"
            )
        return kept

    def dry_run(self, job: dict, moments: list[datetime]) -> dict:
        """What a backfill would run: each occurrence and whether it has a record already."""
        recorded = self._recorded(job["_id"], moments)
        shown = [{"scheduled_at": to_iso(t), "has_record": run_key(job["_id"], t) in recorded} for t in moments]
        return {"count": len(shown), "occurrences": shown}

    def _recorded(self, job_id: str, moments: list[datetime]) -> set[str]:
        """The run keys among those of `moments` that have a record."""
        keys = [run_key(job_id, t) for t in moments]
        recorded = set()
        for i in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[i : i + KEYS_PER_QUERY]
            for record in self._ds.executions.find({"occurrence_key": {"$in": chunk}}, limit=len(chunk)):
                recorded.add(run_key(job_id, record["scheduled_at"]))
        return recorded

    def start(self, job: dict, span: tuple[datetime, datetime], max_runs: int | None, moments, actor: str) -> dict:
        if job.get("is_paused") or not job.get("is_enabled", True):
            what = "paused" if job.get("is_paused") else "disabled"
            raise Conflict(f"Job {job['_id']} is {what}: its backfill would only be skipped; resume it first")
        switch = maintenance_of(self._ds)
        if switch is not None:
            raise Conflict("Maintenance is on: nothing runs until resume-all")
        now = utcnow()
        doc = {
            "_id": new_id(),
            "job_id": job["_id"],
            "user_id": job.get("user_id"),
            "status": "running",
            "from_at": span[0],  # a time field by its name (see is_time_field)
            "to_at": span[1],
            "max_runs": max_runs,
            "occurrences": [to_iso(t) for t in moments],
            "total": len(moments),
            "cursor": 0,
            "last_claim": None,
            "claimed_by": None,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
            "completed_at": None,
        }
        self._docs.insert(doc)
        return doc

    def get(self, job_id: str, backfill_id: str) -> dict:
        doc = self._docs.get(backfill_id)
        if doc is None or doc.get("job_id") != job_id:
            raise NotFound(f"Backfill {backfill_id} not found")
        return doc

    def status(self, doc: dict) -> dict:
        """What the API shows: the backfill without its list of occurrences, with `done`."""
        active = self._active(doc["_id"]) if doc["status"] != "completed" else 0
        done = doc["total"] if doc["status"] == "completed" else max(0, int(doc["cursor"]) - active)
        shown = {name: doc.get(name) for name in SHOWN}
        times = {name: to_iso(doc.get(name)) for name in ("created_at", "completed_at")}
        span = {"from": to_iso(doc["from_at"]), "to": to_iso(doc["to_at"])}
        return {"backfill_id": doc["_id"], **shown, **span, **times, "done": done}

    def cancel(self, doc: dict, actor: str) -> int:
        """running -> cancelled (one conditional write), then its records that have not started
        end `cancelled`, on whichever node holds them; running ones finish. Returns how many."""
        if doc["status"] != "running":
            raise Conflict(f"Backfill {doc['_id']} has already ended ({doc['status']})")
        now = utcnow()
        ended = {"status": "cancelled", "completed_at": now, "cancelled_by": actor, "updated_at": now}
        if not self._docs.update_many({"_id": doc["_id"], "status": "running"}, ended):
            raise Conflict(f"Backfill {doc['_id']} ended meanwhile; read it again")
        return self._end_unstarted(doc["_id"], actor, now)

    # -- the pass ------------------------------------------------------------------------
    def advance(self, on_held: Callable[[dict, dict], None]) -> int:
        """One pass over the running backfills (see the module's docstring); returns the
        records this node made."""
        made = 0
        docs = self._docs.find({"status": "running"}, limit=100)
        if not docs:
            return 0
        maintenance = maintenance_of(self._ds) is not None
        for doc in docs:
            try:
                made += self._advance(doc, on_held, maintenance)
            except Exception as exc:  # one backfill's trouble must not stop the others
                log.warning("Backfill %s not advanced this pass: %s", doc["_id"], getattr(exc, "detail", exc))
        return made

    def _advance(self, doc: dict, on_held, maintenance: bool) -> int:
        job = self._ds.jobs.get(doc["job_id"])
        if job is None:
            now = utcnow()
            self._docs.update_many(
                {"_id": doc["_id"], "status": "running"},
                {"status": "cancelled", "completed_at": now, "cancelled_by": "scheduler", "updated_at": now},
            )
            return 0
        mine = doc.get("claimed_by") == self._claims.identity.node_id
        last = doc.get("last_claim")
        if isinstance(last, dict) and self._unmade(job["_id"], last):  # a claimer died or failed in between
            self._claims.make_records(job, last, on_held if mine else None)
        active, cursor = self._active(doc["_id"]), int(doc["cursor"])
        if cursor >= doc["total"]:
            if not active:
                now = utcnow()
                self._docs.update_many(
                    {"_id": doc["_id"], "status": "running", "cursor": cursor},
                    {"status": "completed", "completed_at": now, "updated_at": now},
                )
            return 0
        if maintenance or job.get("is_paused") or not job.get("is_enabled", True):
            return 0  # it waits: what starts now would only be skipped
        room = 2 * self._limit_of(job) - active  # the next runs wait queued while the first run
        if room <= 0:
            return 0
        runs = doc["occurrences"][cursor : cursor + room]
        claim = {"runs": runs, "trigger": BACKFILL, "backfill_id": doc["_id"]}
        moved = {"cursor": cursor + len(runs), "last_claim": claim, "claimed_by": self._claims.identity.node_id}
        if not self._docs.update_many({"_id": doc["_id"], "status": "running", "cursor": cursor}, moved):
            return 0  # another node claimed these first
        made = self._claims.make_records(job, claim, on_held)
        now = self._docs.get(doc["_id"]) or {}
        if now.get("status") == "cancelled":  # cancelled between the claim and the records: end them too
            self._end_unstarted(doc["_id"], now.get("cancelled_by") or "scheduler", utcnow())
        return len(made)

    def _unmade(self, job_id: str, claim: dict) -> bool:
        keys = [run_key(job_id, datetime.fromisoformat(at)) for at in claim.get("runs") or []]
        return self._ds.executions.count({"occurrence_key": {"$in": keys}}) < len(keys)

    def _end_unstarted(self, backfill_id: str, actor: str, now: datetime) -> int:
        error = f"Cancelled by {actor} before it started: its backfill was cancelled"
        fields = {"status": "cancelled", "completed_at": now, "cancelled_by": actor, "error": error}
        return self._ds.executions.update_many({"backfill_id": backfill_id, "status": "scheduled"}, fields)

    def _active(self, backfill_id: str) -> int:
        return self._ds.executions.count({"backfill_id": backfill_id, "status": {"$in": list(ACTIVE)}})


def backfill_request(fields: dict) -> tuple[tuple[datetime, datetime], int | None, bool]:
    """((from, to), max_runs, dry_run) of a validated body; times between EARLIEST and LATEST."""
    span = []
    for name in ("from", "to"):
        try:
            moment = parse_iso(fields[name])
        except (ValueError, OverflowError):
            moment = None
        if moment is None or not EARLIEST <= moment < LATEST:
            raise ValidationError(f"Invalid field {name}: give a time from {EARLIEST.year} to {LATEST.year - 1}")
        span.append(moment)
    return (span[0], span[1]), fields.get("max_runs"), bool(fields.get("dry_run"))
