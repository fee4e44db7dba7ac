"""The scheduler's pass: what is due, claimed in one batch, handed to the runner without waiting.

APScheduler 3's BackgroundScheduler keeps its thread, its wake-up event and its life cycle;
its pass (`_process_jobs`) is replaced, because the stock one writes each job back in its own
transaction (a hundred jobs due at once took 200 ms, so seconds were dropped) and coalesces
late firings without a trace. Each pass here:

1. reads the due job documents (one indexed query);
2. plans each job: the latest occurrence due runs if it is within the misfire grace time;
   every earlier one (the server was down or overloaded) becomes one `missed` record that
   says how many, from when to when, and how late;
3. claims the plan in one datastore batch: per job, insert the records (a unique occurrence
   key, so two nodes never both insert one) and advance `next_run_time` only if the document
   is still as it was read (compare-and-set on `next_run_time` and `updated_at`); a job whose
   document changed meanwhile (another node's pass, a pause or an edit) has its records
   taken back;
4. dispatches what it inserted onto the runner's pool (a queue put, never a wait). A pass
   wakes `lead_seconds` before the next run time and claims the occurrences due by then, so
   the claim is written before the occurrence and a timer hands them over on time;
5. claims the pending retries (execution records `scheduled` with no node yet) due before its
   next look, each by a compare-and-set of its `node_id`, so one node runs each;
6. sleeps until the next run time, but never longer than `poll_seconds`, so schedule changes
   made through another node are seen; after a store error it retries after `retry_seconds`
   and says so in health.

Job documents whose schedule cannot be built (a time zone tzdata no longer knows, a document
edited by hand) are unscheduled with `schedule_error` set, and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED

from texium.core.datastore.base import Datastore
from texium.core.jobstore import DocumentJobStore, schedule_for
from texium.core.metrics import Metrics
from texium.core.runner import ExecutionRunner
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.scheduler")
MISSED_COUNT_LIMIT = 10_000  # occurrences counted one by one in a missed record; beyond: "at least"


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def last_fire_at_or_before(schedule, floor: datetime, now: datetime) -> datetime:
    """The last fire time in (floor, now], or `floor` if there is none; looks back from `now` in
    growing windows so a long outage of a frequent job costs a few steps, not millions."""
    span = 1.0
    while True:
        probe = max(floor, now - timedelta(seconds=span))
        fire = schedule.next_after(probe)
        if fire is not None and fire <= now:
            while True:
                following = schedule.next_after(fire)
                if following is None or following > now:
                    return fire
                fire = following
        if probe == floor:
            return floor
        span *= 16


@dataclass
class PassState:
    """What health reports about the pass."""

    started: bool = False
    last_pass_at: datetime | None = None
    last_pass_ms: float = 0.0
    store_error: str = ""
    store_error_since: datetime | None = None
    missed_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class TexiumScheduler(BackgroundScheduler):
    def __init__(
        self,
        datastore: Datastore,
        store: DocumentJobStore,
        runner: ExecutionRunner,
        misfire_grace_time: float,
        poll_seconds: float = 1.0,
        retry_seconds: float = 1.0,
        lead_seconds: float = 0.25,
        metrics: Metrics | None = None,
    ):
        super().__init__(timezone="UTC", jobstores={"default": store}, jobstore_retry_interval=retry_seconds)
        self._ds = datastore
        self._store = store
        self._runner = runner
        self._grace = timedelta(seconds=misfire_grace_time)
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._lead = timedelta(seconds=lead_seconds)  # claim this long before a run is due
        self.state_of_pass = PassState()
        self._planned_wakeup: datetime | None = None  # when the thread will look again by itself
        self._metrics = metrics if metrics is not None else Metrics()

    def _process_jobs(self):
        if self.state == STATE_PAUSED:
            return None
        clock, now = time.monotonic(), utcnow()
        try:
            self._dispatch(self._claim(now, now + self._lead))
            self._dispatch(self._claim_retries(now + timedelta(seconds=self._poll) + self._lead))
            with self._metrics.store_call("scheduler_next_run"):
                next_time = self._store.next_run_time()
        except Exception as exc:  # the store failed: retry soon, never sleep for good
            self._store_failed(exc)
            self._planned_wakeup = utcnow() + timedelta(seconds=self._retry)
            return self._retry
        self._passed(now, clock)
        self._metrics.pass_finished(time.monotonic() - clock, next_time)
        wait = self._poll
        if next_time is not None:
            wait = min(wait, max(0.0, (next_time - utcnow()).total_seconds() - self._lead.total_seconds()))
        self._planned_wakeup = utcnow() + timedelta(seconds=wait)
        return wait

    def wakes_after(self, due: datetime) -> bool:
        """Would a job due at `due` be claimed late unless the thread is woken now?"""
        planned = self._planned_wakeup
        return planned is None or due - self._lead < planned

    def _dispatch(self, claimed: list[tuple[dict, dict]]) -> None:
        """Runs due now go to the pool now; runs claimed ahead go at their time, from a timer,
        so the pass's cost is paid before the occurrence, not after it."""
        now = utcnow()
        ahead = [(execution, doc) for execution, doc in claimed if execution["scheduled_at"] > now]
        for execution, doc in claimed:
            if execution["scheduled_at"] <= now:
                self._runner.dispatch(execution, doc)
        if ahead:
            at = min(execution["scheduled_at"] for execution, _ in ahead)
            timer = threading.Timer((at - utcnow()).total_seconds(), self._dispatch_all, (ahead,))
            timer.daemon = True
            timer.start()

    def _dispatch_all(self, claimed: list[tuple[dict, dict]]) -> None:
        for execution, doc in claimed:
            self._runner.dispatch(execution, doc)

    # -- planning ----------------------------------------------------------------------
    def _plan(self, doc: dict, now: datetime) -> tuple[list[dict], dict, int]:
        """(records to insert, fields to advance the job with, missed occurrences)."""
        first = doc["next_run_time"]
        try:
            schedule = schedule_for(doc)
        except Exception as exc:
            reason = getattr(exc, "detail", None) or str(exc)
            log.error("Job %s (%s) cannot be scheduled and stops firing: %s", doc["_id"], doc.get("name"), reason)
            return [], {"next_run_time": None, "schedule_error": reason}, 0
        times = [first, *schedule.fire_times_between(first, now, MISSED_COUNT_LIMIT)]
        exact = len(times) <= MISSED_COUNT_LIMIT
        if exact:
            latest, missed = times[-1], times[:-1]
        else:  # a long outage: count no further, but find the latest and the one before it
            latest = last_fire_at_or_before(schedule, times[-1], now)
            missed = [times[0], last_fire_at_or_before(schedule, times[-1], latest - timedelta(microseconds=1))]
        records = []
        if now - latest <= self._grace:
            records.append(self._runner.new_execution(doc, "scheduled", latest, f"{doc['_id']}@{to_iso(latest)}"))
        else:
            missed.append(latest)
        count = len(missed) if exact else MISSED_COUNT_LIMIT
        if missed:
            records.append(self._missed_record(doc, missed, count, exact, latest, now))
        return records, {"next_run_time": schedule.next_after(now)}, count

    def _plan_ahead(self, doc: dict) -> tuple[list[dict], dict, int]:
        """A job due within the lead time: its one occurrence, claimed before it is due."""
        due = doc["next_run_time"]
        try:
            following = schedule_for(doc).next_after(due)
        except Exception:
            return self._plan(doc, due)  # the same unscheduling, said once
        record = self._runner.new_execution(doc, "scheduled", due, f"{doc['_id']}@{to_iso(due)}")
        return [record], {"next_run_time": following}, 0

    def _missed_record(
        self, doc: dict, missed: list[datetime], count: int, exact: bool, latest: datetime, now: datetime
    ) -> dict:
        first, last = missed[0], missed[-1]
        how_many = f"{count} run{'s' if count != 1 else ''}" if exact else f"more than {count} runs"
        if last == latest and now - latest > self._grace:
            why = f"even the latest was {_seconds(now - latest)} s late, past the misfire grace time"
        else:
            why = f"the scheduler was {_seconds(now - first)} s late; only the latest due run ({to_iso(latest)}) ran"
        span = to_iso(first) if len(missed) == 1 else f"{to_iso(first)} to {to_iso(last)}"
        return self._runner.new_execution(
            doc,
            "missed",
            first,
            f"{doc['_id']}@{to_iso(first)}",
            completed_at=now,
            error=f"Missed {how_many} ({span}): {why} (server down, store unavailable or overloaded).",
            missed_count=count,
            missed_until=last,
            late_seconds=_seconds(now - first),
        )

    # -- claiming ----------------------------------------------------------------------
    def _claim(self, now: datetime, horizon: datetime | None = None) -> list[tuple[dict, dict]]:
        """Claim what is due by `now`, and the next occurrence of jobs due by `horizon`."""
        with self._metrics.store_call("scheduler_due"):
            docs = self._store.due(horizon or now)
        if not docs:
            return []
        claimed, missed, missed_records = [], 0, []
        with self._metrics.store_call("scheduler_claim"), self._ds.batch():
            for doc in docs:
                try:
                    if doc["next_run_time"] > now:
                        records, advance, missed_here = self._plan_ahead(doc)
                    else:
                        records, advance, missed_here = self._plan(doc, now)
                except Exception as exc:  # a document no pass can read must not stall the others
                    log.exception("Job %s cannot be planned and stops firing", doc.get("_id"))
                    records, advance, missed_here = [], {"next_run_time": None, "schedule_error": str(exc)}, 0
                inserted = self._ds.executions.insert_many(records) if records else []
                unchanged = {
                    "_id": doc["_id"],
                    "next_run_time": doc["next_run_time"],
                    "updated_at": doc.get("updated_at"),
                }
                if not self._ds.jobs.update_many(unchanged, advance):
                    if inserted:  # another node's pass or an edit got there first: take ours back
                        self._ds.executions.delete_many({"_id": {"$in": inserted}})
                    continue
                ours = set(inserted)
                for record in records:
                    if record["_id"] not in ours:
                        continue
                    if record["status"] == "scheduled":
                        claimed.append((record, doc))
                    else:
                        missed += missed_here
                        missed_records.append((record, doc))
        for _, doc in claimed:
            self._runner.count_run(doc["_id"])
        for record, doc in missed_records:  # counted once the batch is written
            self._metrics.occurrences_missed(record["job_class_string"], record["missed_count"])
            self._runner.outcome(record, doc)
        if missed:
            self.state_of_pass.missed_total += missed
            log.warning(
                "%d occurrences missed in the pass at %s (see executions with status 'missed')", missed, to_iso(now)
            )
        return claimed

    def _claim_retries(self, horizon: datetime) -> list[tuple[dict, dict]]:
        """Take the pending retries due by `horizon` that no node has claimed yet."""
        executions = self._ds.executions
        with self._metrics.store_call("scheduler_retries"):
            pending = executions.find(
                {"status": "scheduled", "node_id": None, "scheduled_at": {"$lte": horizon}},
                sort=[("scheduled_at", 1)],
                limit=1000,
            )
        claimed = []
        me = self._runner.identity
        for record in pending:
            ours = {"node_id": me.node_id, "hostname": me.hostname, "pid": me.pid}
            if not executions.update_many({"_id": record["_id"], "status": "scheduled", "node_id": None}, ours):
                continue  # another node took it
            record.update(ours)
            try:
                job = self._ds.jobs.get(record["job_id"])
            except Exception:  # give it back for the next pass (of any node)
                executions.update_many({"_id": record["_id"], "node_id": me.node_id}, {"node_id": None})
                raise
            if job is None or job.get("is_paused") or not job.get("is_enabled", True):
                what = "deleted" if job is None else "paused" if job.get("is_paused") else "disabled"
                self._runner.end_unstarted(record, "skipped", f"Skipped: the job was {what} before this retry", what)
                continue
            claimed.append((record, job))
        return claimed

    # -- health ------------------------------------------------------------------------
    def _passed(self, now: datetime, clock: float) -> None:
        state = self.state_of_pass
        with state.lock:
            if state.store_error:
                log.warning("The scheduler reads its store again (after: %s)", state.store_error)
            state.started = True
            state.last_pass_at, state.last_pass_ms = now, (time.monotonic() - clock) * 1000
            state.store_error, state.store_error_since = "", None

    def _store_failed(self, exc: Exception) -> None:
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        state = self.state_of_pass
        with state.lock:
            if not state.store_error:
                state.store_error_since = utcnow()
                log.error("The scheduler cannot read its store (%s); retrying every %g s", detail, self._retry)
            state.store_error = detail
