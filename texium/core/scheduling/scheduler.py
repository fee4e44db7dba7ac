"""The scheduler's pass: plan what is due, claim it in one short batch, queue it on this node.

APScheduler 3's BackgroundScheduler keeps its thread, its wake-up event and its life cycle, the
document job store (jobstore.py) and the dispatcher as its executor (dispatch.py); its pass
(`_process_jobs`) is replaced, because the stock one writes each job back in its own
transaction and coalesces late firings without a trace. Each pass:

1. reads the job documents due by now + the lead (one indexed query): `lead_seconds`, or
   longer when many jobs are due at one instant, so that their claim is written before they
   are due (the claim cost per job is measured);
2. plans each one outside any write transaction (planner.py; a document that cannot be planned
   is answered with its fix, and an error in one job's plan never stops the others);
3. claims the plans in one short batch (claims.py): advances each job's `next_run_time` by
   compare-and-set, writing the plan on it, then inserts its records, held by this node, and
   queues them at once (a pass whose compare-and-set lost makes nothing);
4. resumes the jobs whose pause ended (pausing.py), and ends maintenance at its end;
   advances the running backfills (backfill.py: claims their next occurrences);
5. claims the records nobody holds (pending retries, runs handed back by a stopped or dead
   node) due before its next look, and queues them (they start at their time, never before);
6. sleeps until the next run time less the lead (or the next end of a pause), but never
   longer than `poll_seconds`; after a store error it tries again after `retry_seconds` and
   says so in health. The thread never dies: whatever a pass raises ends the pass, not the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED

from texium.core.datastore.base import Datastore
from texium.core.errors import DatastoreUnavailable
from texium.core.metrics import Metrics
from texium.core.scheduling.backfill import Backfills
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.jobstore import DocumentJobStore
from texium.core.scheduling.pausing import Pauses
from texium.core.scheduling.planner import Plan, Planner
from texium.core.scheduling.windows import NO_BLACKOUTS, CalendarReader
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.scheduler")
MAX_LEAD_SECONDS = 5.0  # the furthest ahead a pass claims (records wait in the dispatch queue)


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
        dispatcher: Dispatcher,
        claims: Claims,
        misfire_grace_time: float,
        poll_seconds: float = 1.0,
        retry_seconds: float = 1.0,
        lead_seconds: float = 0.25,
        metrics: Metrics | None = None,
        pauses: Pauses | None = None,
        on_job_event: Callable[[dict, str, str], None] | None = None,
        backfills: Backfills | None = None,
    ):
        """`on_job_event(job, event, description)` records what the pass did to a job by itself
        (the audit log: a job that disabled itself after its `max_runs`)."""
        super().__init__(
            timezone="UTC",
            jobstores={"default": store},
            executors={"default": dispatcher},
            jobstore_retry_interval=retry_seconds,
        )
        self._ds = datastore
        self._store = store
        self._dispatcher = dispatcher
        self._claims = claims
        self._planner = Planner(misfire_grace_time)
        self._calendars = CalendarReader(datastore)
        self._on_job_event = on_job_event
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._lead = timedelta(seconds=lead_seconds)  # claim at least this long before a run is due
        self._lead_now = self._lead  # longer when many jobs are due at one instant (see _lead_for)
        self._claim_cost = 0.001  # seconds per job claimed, as measured (moving average)
        self.state_of_pass = PassState()
        self._planned_wakeup: datetime | None = None  # when the thread will look again by itself
        self._metrics = metrics if metrics is not None else Metrics()
        self._unfinished: list[tuple[dict, dict]] = []  # (job, claim) advanced but not yet made
        self._pauses = pauses
        self._backfills = backfills

    def _process_jobs(self):
        if self.state == STATE_PAUSED:
            return None
        clock, now = time.monotonic(), utcnow()
        try:
            resume_at = None
            if self._pauses is not None:
                with self._metrics.store_call("scheduler_pauses"):
                    resume_at = self._pauses.resume_due(now)
            # What nobody holds (handed back, retries) was asked for before what is due now: queue
            # it first, or a past-due occurrence could take the job's slot ahead of it.
            with self._metrics.store_call("scheduler_unheld"):
                self._claims.claim_unheld(now + timedelta(seconds=self._poll) + self._lead_now, self._queue_unheld)
            self.claim_due(now, now + self._lead_now)
            if self._backfills is not None:
                with self._metrics.store_call("scheduler_backfills"):
                    self._backfills.advance(self._dispatcher.put)
            with self._metrics.store_call("scheduler_next_run"):
                next_time = self._store.next_run_time()
            if next_time is not None and not isinstance(next_time, datetime):
                self._repair(next_time)  # a value edited by hand that no time query finds
                next_time = None
            self._passed(now, clock)
            self._metrics.pass_finished(time.monotonic() - clock, next_time)
            wait = self._poll
            if next_time is not None:
                self._lead_now = self._lead_for(next_time)
                wait = min(wait, max(0.0, (next_time - utcnow()).total_seconds() - self._lead_now.total_seconds()))
            if resume_at is not None:
                wait = min(wait, max(0.0, (resume_at - utcnow()).total_seconds()))
        except Exception as exc:  # the store failed (or a bug): retry soon, never sleep for good
            self._store_failed(exc)
            wait = self._retry
        self._planned_wakeup = utcnow() + timedelta(seconds=wait)
        return wait

    def _repair(self, value) -> None:
        """Plan (and so repair) the jobs whose next_run_time is `value`, which is not a time."""
        for doc in self._ds.jobs.find({"next_run_time": value}, limit=100):
            self._claims.claim_plan(self._planner.plan(doc, utcnow()), self._dispatcher.put)

    def wakes_after(self, due: datetime) -> bool:
        """Would a job due at `due` be claimed late unless the thread is woken now?"""
        planned = self._planned_wakeup
        return planned is None or due - self._lead_now < planned

    def _lead_for(self, next_time: datetime) -> timedelta:
        """How long before `next_time` to claim: long enough that the claim of every job due
        in the second from it is written before it is due (1,000 jobs due at one instant take
        about half a second to claim here), never less than `lead_seconds`, at most MAX_LEAD."""
        with self._metrics.store_call("scheduler_due_count"):
            due = self._ds.jobs.count({"next_run_time": {"$lte": next_time + timedelta(seconds=1)}})
        needed = timedelta(seconds=min(MAX_LEAD_SECONDS, due * self._claim_cost * 2))
        return max(self._lead, needed)

    def _queue_unheld(self, record: dict) -> None:
        try:
            job = self._ds.jobs.get(record["job_id"]) or {"_id": record["job_id"]}
        except Exception:
            job = {"_id": record["job_id"]}  # the start re-reads it anyway
        self._dispatcher.put(record, job)

    # -- claiming ----------------------------------------------------------------------
    def claim_due(self, now: datetime, horizon: datetime | None = None) -> list[dict]:
        """Claim what is due by `now`, and the next occurrence of jobs due by `horizon`;
        returns the records inserted (runs queued on this node, and missed records)."""
        with self._metrics.store_call("scheduler_due"):
            docs = self._store.due(horizon or now)
        if not docs and not self._unfinished:
            return []
        plans = []
        blackouts = self._calendars.blackouts_for(docs) if docs else {}
        for doc in docs:
            try:
                plans.append(self._planner.plan(doc, now, blackouts.get(doc["_id"], NO_BLACKOUTS)))
            except Exception as exc:  # a document no pass can read must not stall the others
                log.exception("Job %s cannot be planned and stops firing", doc.get("_id"))
                plans.append(Plan(doc, advance={"next_run_time": None, "schedule_error": str(exc)}))
        made: list[dict] = []
        clock = time.monotonic()
        try:
            with self._metrics.store_call("scheduler_claim"), self._ds.batch():
                made += self._finish_unfinished()
                for plan in plans:
                    try:
                        claimed = self._claims.claim_plan(plan, self._dispatcher.put, self._unfinished)
                        made += claimed or []
                        if claimed is not None and self._on_job_event is not None:
                            for event, description in plan.events:
                                self._on_job_event(plan.job, event, description)
                    except DatastoreUnavailable:
                        raise
                    except Exception:
                        log.exception("Job %s could not be claimed; the next pass tries again", plan.job.get("_id"))
        except Exception:
            if self._ds.atomic_batches:  # the transaction undid the claims too: nothing to finish
                self._unfinished.clear()
            raise
        if plans:
            spent = (time.monotonic() - clock) / len(plans)
            self._claim_cost = 0.8 * self._claim_cost + 0.2 * spent
        self._after_claim(made, plans, now)
        return made

    def _finish_unfinished(self) -> list[dict]:
        """Claims this node advanced a job for, whose records a store error kept it from making."""
        made = []
        while self._unfinished:
            job, claim = self._unfinished[0]
            made += self._claims.make_records(job, claim, self._dispatcher.put)
            self._unfinished.pop(0)
        return made

    def _after_claim(self, inserted: list[dict], plans: list[Plan], now: datetime) -> None:
        jobs = {plan.job["_id"]: plan.job for plan in plans}
        missed = [record for record in inserted if record["status"] == "missed"]
        for record in missed:  # counted once the batch is written
            self._metrics.occurrences_missed(record["job_class_string"], record["missed_count"])
            if self._dispatcher.alerts is not None:
                self._dispatcher.alerts.observe(jobs.get(record["job_id"], {"_id": record["job_id"]}), record)
        if missed:
            count = sum(record["missed_count"] for record in missed)
            self.state_of_pass.missed_total += count
            log.warning(
                "%d occurrences missed in the pass at %s (see executions with status 'missed')", count, to_iso(now)
            )

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
        if not isinstance(exc, DatastoreUnavailable):
            log.exception("The scheduler's pass failed")
        state = self.state_of_pass
        with state.lock:
            if not state.store_error:
                state.store_error_since = utcnow()
                log.error("The scheduler cannot read its store (%s); retrying every %g s", detail, self._retry)
            state.store_error = detail
