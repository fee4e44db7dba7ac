"""One dispatch queue per node: every record this node holds waits here until it starts.

It is APScheduler's executor seam: the scheduler's pass hands over what it claimed (ahead of
time, run-nows, retries and handed-back runs alike), and nothing else keeps a run in memory, so
pause, delete, cancel, shutdown and burial all look at one place. The dispatcher thread gives a
record to a worker only when it is due and a worker is free; until then it stays queued and
visible, so:

- a scheduled occurrence found later than its job's catch-up policy allows (catchup.py: the
  misfire grace time by default), or with a newer occurrence of its job due behind it (the
  workers were busy; not when the job queues or catches up on purpose), is recorded `missed`
  instead of running stale;
- the jobs are read again (one query for the batch the free workers can take) just before
  the start: a paused, disabled or deleted job, or a schedule edited so the occurrence no
  longer belongs to it, ends the record `skipped` and the job body never starts; so does
  maintenance (the switch is read in the same batch; a run-now then ends `cancelled`);
- the start itself is one conditional write per run, all of a batch in one transaction
  (claims.py): `scheduled -> running` on (holder, generation), only while the job is under its
  limit of runs at once on every node; losing it means someone else decided first.
A scheduled occurrence over its job's limit follows the job's overlap policy; a run-now, a
retry or a backfill run waits its turn in the queue.

A user whose runs hold `max_runs_per_user` of this node's workers waits for one of them to end
(the entries are set aside, not polled): runs that hang cannot take every worker from the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.executors.base import BaseExecutor

from texium.core.datastore.base import Datastore, slot_of
from texium.core.errors import ServiceUnavailable
from texium.core.figures import NOT_RUN
from texium.core.metrics import Metrics
from texium.core.scheduling.catchup import ALL, NONE, allowed_lateness, describe_window, policy_of
from texium.core.scheduling.claims import Claims, held
from texium.core.scheduling.occurrences import (
    BACKFILL,
    CHAIN,
    RETRY,
    RUN_NOW,
    SCHEDULE,
    URL,
    new_record,
    starts_others,
    trigger_of,
)
from texium.core.scheduling.pausing import describe_pause, maintenance_of
from texium.core.scheduling.recorder import Recorder, Write
from texium.core.scheduling.runner import JobRunner, Run
from texium.core.scheduling.windows import JobTimes
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.dispatch")
SLOT_RETRY_SECONDS = 0.5  # a run waiting for a slot held on another node looks again this often
STORE_RETRY_SECONDS = 0.5  # a start the store could not answer is tried again after this
# Skips made by the job's overlap policy (its runs overrun their interval): alertable as `skipped`.
# A person's pause, disable, edit, delete or maintenance switch skips too, and alerts no one.
OVERLAP_SKIPS = ("max_instances", "queue_full", "queue_one")


def runs_per_user(pool_size: int) -> int:
    """The default per-user limit: three quarters of the pool, so a quarter stays for the others."""
    return max(1, pool_size - pool_size // 4)


@dataclass(eq=False)
class _Entry:
    run: Run
    due: datetime
    not_before: float = 0.0  # monotonic: waiting for a slot or for the store
    dead: bool = False  # taken out of the queue (heap entries are dropped lazily)

    @property
    def trigger(self) -> str:
        return trigger_of(self.run.record)


class Dispatcher(BaseExecutor):
    def __init__(
        self,
        datastore: Datastore,
        claims: Claims,
        runner: JobRunner,
        recorder: Recorder,
        pool_size: int,
        max_instances: int = 1,
        misfire_grace_time: float = 3600,
        stop_grace: float = 5.0,
        metrics: Metrics | None = None,
        alerts: Any = None,
        processes: Any = None,
        max_runs_per_user: int | None = None,
    ):
        super().__init__()
        self._ds = datastore
        self.claims = claims
        self.runner = runner
        self._recorder = recorder
        self.pool_size = pool_size
        self.max_runs_per_user = max_runs_per_user or pool_size
        self._max_instances = max_instances
        self._grace = timedelta(seconds=misfire_grace_time)
        self.stop_grace = stop_grace
        self.metrics = metrics if metrics is not None else Metrics()
        self.alerts = alerts
        self.chains: Any = None  # settles the chained starts of a run's end (events/chains.py)
        self.processes = processes
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="texium-job")
        self._cond = threading.Condition()
        self._heap: list[tuple[datetime, int, _Entry]] = []
        self._order = itertools.count()
        self._queued: dict[str, _Entry] = {}  # execution id -> queued, not yet given to a worker
        self._by_job: dict[str, set[_Entry]] = {}  # job id -> its queued entries
        self._runs: dict[str, Run] = {}  # execution id -> given to a worker, not yet over
        self._futures: dict[str, Any] = {}
        self._free = pool_size
        self._set_aside: dict[str, list[_Entry]] = {}  # user id -> due entries over the user's limit
        self._starting = threading.Lock()  # held while a batch of starts is decided
        self.closing = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- APScheduler's executor seam -------------------------------------------------------
    def start(self, scheduler=None, alias="default"):
        if scheduler is not None:
            super().start(scheduler, alias)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="texium-dispatch", daemon=True)
            self._thread.start()

    def shutdown(self, wait=True):
        """The scheduler stopping does not end the runs: close() does, with a grace time."""

    def _do_submit_job(self, job, run_times):
        raise NotImplementedError("Texium's pass hands claimed records to put(), not APScheduler jobs")

    # -- what comes in ---------------------------------------------------------------------
    def put(self, record: dict, job: dict) -> None:
        """Queue a record this node holds; it starts at its `scheduled_at` (never before)."""
        entry = _Entry(Run(record, job), record["scheduled_at"])
        with self._cond:
            if record["_id"] in self._runs:
                return  # started here: a newer claim of it is refused at its start anyway
            queued = self._queued.get(record["_id"])
            if queued is not None:
                if (queued.run.record.get("generation") or 0) >= (record.get("generation") or 0):
                    return
                self._dequeue(queued)  # held again since: the older entry would be refused
            self._enqueue(entry)
            self._cond.notify_all()

    def _enqueue(self, entry: _Entry) -> None:  # with the lock held
        entry.dead = False
        self._queued[entry.run.id] = entry
        self._by_job.setdefault(entry.run.record["job_id"], set()).add(entry)
        heapq.heappush(self._heap, (entry.due, next(self._order), entry))

    def _dequeue(self, entry: _Entry) -> None:  # with the lock held
        entry.dead = True
        if self._queued.get(entry.run.id) is entry:
            del self._queued[entry.run.id]
        siblings = self._by_job.get(entry.run.record["job_id"])
        if siblings is not None:
            siblings.discard(entry)
            if not siblings:
                del self._by_job[entry.run.record["job_id"]]

    def run_now(self, job: dict, trigger: str = RUN_NOW, **fields) -> str:
        """Record a held `scheduled` run of `job` (with `fields`: parameters, triggered_by...)
        and queue it; returns its id at once."""
        if self.closing:
            raise ServiceUnavailable("The server is shutting down and accepts no new runs; try another node")
        record = new_record(job, "scheduled", utcnow(), trigger, self.claims.identity, **fields)
        self._ds.executions.insert(record)
        self._ds.jobs.update_many({"_id": job["_id"]}, {}, inc={"total_executions": 1})
        self.put(record, job)
        return record["_id"]

    # -- what goes out without running -----------------------------------------------------
    def forget(self, execution_id: str) -> None:
        """The record ended in the store (cancelled, skipped): take it out of the queue."""
        with self._cond:
            entry = self._queued.get(execution_id)
            if entry is not None:
                self._dequeue(entry)

    def forget_job(self, job_id: str) -> None:
        with self._cond:
            for entry in list(self._by_job.get(job_id, ())):
                self._dequeue(entry)

    def hand_back_all(self) -> int:
        """Give back every record queued here (shutdown, burial): any node may take them."""
        with self._cond:
            entries = list(self._queued.values())
            for entry in entries:
                self._dequeue(entry)
        handed = 0
        for entry in entries:
            try:
                handed += self.claims.hand_back(entry.run.record)
            except Exception as exc:  # the sweep hands them back once this node is gone
                log.warning("Could not hand back execution %s: %s", entry.run.id, getattr(exc, "detail", exc))
        return handed

    # -- the dispatcher thread -------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                with self._cond:
                    if self._stopped:
                        return
                    picked, ended, timeout = self._pick()
                    if not picked and not ended:
                        self._cond.wait(timeout)
                        continue
                for entry, why in ended:
                    self._record_missed(entry, why)
                if picked:
                    with self._starting:  # close() waits for a batch in flight
                        self._start_batch(picked)
            except Exception:  # a bad moment must not stop dispatching for good
                log.exception("The dispatcher hit an error; it goes on")
                time.sleep(0.1)

    def _submit(self, entry: _Entry) -> None:
        execution_id = entry.run.id
        future = self._pool.submit(self._work, entry)
        with self._cond:
            self._futures[execution_id] = future
        future.add_done_callback(lambda done: self._forget_future(execution_id, done))

    def _forget_future(self, execution_id: str, future) -> None:
        with self._cond:
            if self._futures.get(execution_id) is future:
                del self._futures[execution_id]

    def _pick(self) -> tuple[list[_Entry], list[tuple[_Entry, str]], float]:
        """(entries for free workers, stale occurrences to record missed, seconds to wait)."""
        if self.closing:
            return [], [], 1.0
        now, clock = utcnow(), time.monotonic()
        picked, ended = [], []
        later: list[tuple[datetime, int, _Entry]] = []
        timeout = 1.0
        holding = self._workers_by_user()
        while self._heap and self._free > len(picked):
            due, order, entry = self._heap[0]
            if entry.dead:
                heapq.heappop(self._heap)
                continue
            if due > now:
                timeout = min(timeout, (due - now).total_seconds())
                break
            heapq.heappop(self._heap)
            if entry.not_before > clock:  # waiting for a slot or the store: set aside for now
                later.append((due, order, entry))
                timeout = min(timeout, entry.not_before - clock)
                continue
            user = entry.run.record.get("user_id")
            if holding[user] >= self.max_runs_per_user and not self._stale(entry, now):
                self._set_aside.setdefault(user, []).append(entry)  # back when one of the user's runs ends
                continue
            self._dequeue(entry)
            why = self._stale(entry, now)
            if why:
                ended.append((entry, why))
            else:
                self._runs[entry.run.id] = entry.run
                holding[user] += 1
                picked.append(entry)
        for item in later:
            heapq.heappush(self._heap, item)
        self._free -= len(picked)
        return picked, ended, max(0.0, timeout)

    def _workers_by_user(self) -> Counter:
        """How many of this node's workers each user's runs hold (lingering ones included)."""
        return Counter(run.record.get("user_id") for run in self._runs.values())

    def _worker_freed(self, user: str | None) -> None:  # with the lock held
        """A worker came back: the user's entries set aside for their limit may go again."""
        self._free += 1
        for entry in self._set_aside.pop(user, ()):
            if not entry.dead:
                heapq.heappush(self._heap, (entry.due, next(self._order), entry))
        self._cond.notify_all()

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting due run has waited while every worker was busy (0 if a
        worker is free or nothing due waits)."""
        now = utcnow()
        with self._cond:
            if self._free > 0:
                return 0.0
            due = [entry.due for entry in self._queued.values() if entry.due <= now]
        return max(0.0, (now - min(due)).total_seconds()) if due else 0.0

    def _stale(self, entry: _Entry, now: datetime) -> str:
        """Why a scheduled occurrence must not run now (empty: it may)."""
        if entry.trigger != SCHEDULE:
            return ""
        job = entry.run.job
        if (job.get("overlap_policy") or "skip") in QUEUEING or policy_of(job) == ALL:
            newer = []  # queued or caught up on purpose: the policies, not coalescing, say which run
        else:
            newer = [
                other.due
                for other in self._by_job.get(entry.run.record["job_id"], ())
                if other.trigger == SCHEDULE and entry.due < other.due <= now
            ]
        if newer:
            return f"a newer occurrence ({to_iso(max(newer))}) was due before this one could start; only it runs"
        late = now - entry.due
        if late > allowed_lateness(job, self._grace, queued=bool(entry.run.record.get("waiting"))):
            if policy_of(job) == NONE and not entry.run.record.get("waiting"):
                return f"it could start only {late.total_seconds():.3f} s late and the job's catchup_policy is none"
            return f"it could start only {late.total_seconds():.3f} s late, past {describe_window(job)}"
        return ""

    def _record_missed(self, entry: _Entry, why: str) -> None:
        run, now = entry.run, utcnow()
        late = round((now - entry.due).total_seconds(), 3)
        fields = {
            "status": "missed",
            "completed_at": now,
            "error": f"Missed {to_iso(entry.due)}: {why} (the workers were busy or the node was late).",
            "missed_count": 1,
            "missed_until": entry.due,
            "late_seconds": late,
        }
        self.metrics.occurrences_missed(run.record.get("job_class_string"), 1)
        self._recorder.write(
            Write(
                "executions",
                {**held(run.record), "status": "scheduled"},
                fields,
                then=[Write("jobs", {"_id": run.record["job_id"]}, inc={"total_executions": -1})],
                after=lambda: self._observe(run.job, {**run.record, **fields}),
            )
        )

    # -- starting: one batch for the entries the free workers can take ------------------------
    def _start_batch(self, entries: list[_Entry]) -> None:
        """Decide with the store which of `entries` start now: their jobs read again in one
        query, then each start one conditional write, all in one batch (one SQLite
        transaction). Started runs go to the workers; the others give their worker back."""
        outcomes: dict[int, str] = {}
        try:
            with self._ds.priority.urgent():  # ahead of the recorder's next batch
                outcomes = self._decide(entries)
        except Exception as exc:  # the store: what did not start waits and tries again
            log.warning("Could not start %d runs (%s); will try again", len(entries), getattr(exc, "detail", exc))
            # A transaction undid every start of the batch; elsewhere what was decided stands.
            outcomes = {} if self._ds.atomic_batches else getattr(exc, "outcomes", {})
        self._hand_over(entries, outcomes)

    def _decide(self, entries: list[_Entry]) -> dict[int, str]:
        outcomes: dict[int, str] = {}
        try:
            jobs = self._jobs_of(entries)
            with self._ds.batch():
                switch = maintenance_of(self._ds)  # read in the starts' own batch: none starts after it was set
                ready = []
                for entry in entries:
                    refused = self._refused(entry, jobs, switch)
                    if refused:
                        outcomes[id(entry)] = refused
                    else:
                        ready.append(entry)
                started_at = utcnow()  # read once the store is ours: no end of a previous run lands after it
                starts = [(entry.run.record, self.limit_of(entry.run.job), _start_fields(entry.run)) for entry in ready]
                for entry, outcome in zip(ready, self.claims.start_many(starts, started_at)):
                    outcomes[id(entry)] = self._started(entry, outcome, started_at)
        except Exception as exc:
            exc.outcomes = outcomes  # what a non-atomic store did decide before it failed
            raise
        return outcomes

    def _hand_over(self, entries: list[_Entry], outcomes: dict[int, str]) -> None:
        for entry in entries:
            outcome = outcomes.get(id(entry), "retry")
            if outcome == "started":
                self._submit(entry)
                continue
            with self._cond:
                self._runs.pop(entry.run.id, None)
                self._worker_freed(entry.run.record.get("user_id"))
            if outcome == "overlap":
                outcome = self._overlap(entry)
            if outcome == "retry":
                self._requeue(entry, STORE_RETRY_SECONDS)
            elif outcome == "wait":
                self._requeue(entry, SLOT_RETRY_SECONDS)
            elif outcome == "closing":
                self._hand_back(entry.run)

    def _jobs_of(self, entries: list[_Entry]) -> dict[str, dict]:
        ids = sorted({entry.run.record["job_id"] for entry in entries})
        return {job["_id"]: job for job in self._ds.jobs.find({"_id": {"$in": ids}})}

    def limit_of(self, job: dict) -> int:
        """The job's runs at once: its `max_instances`, else the server's JOB_MAX_INSTANCES."""
        return int(job.get("max_instances") or self._max_instances)

    def _refused(self, entry: _Entry, jobs: dict[str, dict], switch: dict | None = None) -> str:
        """ "closing" or "dropped" (ended here, never to start); "" when it may start."""
        if self.closing:
            return "closing"
        run = entry.run
        job = jobs.get(run.record["job_id"])
        refusal = self._refusal(entry, job) or _maintenance_refusal(entry, switch)
        if refusal is not None:
            self._end_unstarted(run, *refusal)
            return "dropped"
        run.job = job
        return ""

    def _started(self, entry: _Entry, outcome: str, started_at: datetime) -> str:
        """started | wait (a slot) | dropped (ended, or lost to someone who decided first)."""
        run, record = entry.run, entry.run.record
        if outcome == "busy":
            # A person or a retry asked for it: it waits its turn; an occurrence follows the
            # job's overlap policy (decided after the batch, outside its transaction).
            return "overlap" if entry.trigger in OVERLAPPING else "wait"
        if outcome == "retry":
            return "retry"  # the store failed before this one was decided
        if outcome != "started":
            return "dropped"  # cancelled, skipped or taken over by someone else first
        run.begun = True
        self._recorder.job(run.job["_id"], fields={"last_run_time": started_at})
        lag = started_at - record["scheduled_at"] if entry.trigger == SCHEDULE else None
        self.metrics.run_started(record.get("job_class_string"), lag, entry.trigger)
        if entry.trigger == BACKFILL:
            self.metrics.run_backfilled(record.get("job_class_string"))
        return "started"

    def _overlap(self, entry: _Entry) -> str:
        """An occurrence due while the job is at its limit, by the job's `overlap_policy`:
        skip it (the default), queue it (`queue_all`, at most `max_queued` waiting; `queue_one`,
        only the newest waits), or `replace` the running runs (asked to stop; it waits for the
        slot). Returns "wait" or "dropped"."""
        run, record = entry.run, entry.run.record
        policy = run.job.get("overlap_policy") or "skip"
        limit = self.limit_of(run.job)
        if policy not in QUEUEING:
            error = f"Skipped: the previous run of this job was still in progress (at most {limit} running at once)"
            self._end_unstarted(run, "skipped", "max_instances", error)
            return "dropped"
        if record.get("waiting"):
            return "wait"  # already in the queue: only the first refusal decides
        try:
            if policy == "queue_all" and self._waiting(record["job_id"]) >= int(run.job.get("max_queued") or 1):
                error = f"Skipped: {run.job.get('max_queued') or 1} occurrences of this job were already queued"
                self._end_unstarted(run, "skipped", "queue_full", error)
                return "dropped"
            if policy == "queue_one":
                self._skip_older_waiting(record, run.job)
            if policy == "replace":
                self._replace_running(record)
        except Exception as exc:  # the store: decide again at the next try
            log.warning("Execution %s: overlap policy not applied yet (%s)", run.id, getattr(exc, "detail", exc))
            return "retry"
        record["waiting"] = QUEUEING[policy].format(limit=limit)
        self._recorder.write(
            Write("executions", {**held(record), "status": "scheduled"}, {"waiting": record["waiting"]})
        )
        return "wait"

    def _waiting(self, job_id: str) -> int:
        return self._ds.executions.count({"job_id": job_id, "status": "scheduled", "waiting": {"$ne": None}})

    def _skip_older_waiting(self, record: dict, job: dict) -> None:
        """queue_one: the job's older queued occurrences end `skipped`, whoever holds them (their
        holder's start is then refused)."""
        older = {
            "job_id": record["job_id"],
            "status": "scheduled",
            "trigger": SCHEDULE,
            "waiting": {"$ne": None},
            "scheduled_at": {"$lt": record["scheduled_at"]},
        }
        error = f"Skipped: a newer occurrence ({to_iso(record['scheduled_at'])}) took its place in the queue"
        now = utcnow()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as the store keeps it: found again below
        fields = {"status": "skipped", "error": error, "completed_at": now}
        with self._ds.batch():
            moved = self._ds.executions.update_many(older, fields)
            if moved:
                self._ds.jobs.update_many({"_id": record["job_id"]}, {}, inc={"total_executions": -moved})
        if moved:
            self.metrics.run_skipped(record.get("job_class_string"), "queue_one", moved)
        if moved and self.alerts is not None and record.get("job_id"):
            # the records this write moved: this one's fields, exactly (completed_at to the millisecond)
            mine = {"job_id": record["job_id"], **fields}
            for skipped in self._ds.executions.find(mine, limit=moved):
                self._observe(job, skipped)

    def _replace_running(self, record: dict) -> None:
        """replace: ask the job's running runs (on any node) to stop; this one takes the slot."""
        by = f"the overlap policy replace: the occurrence due {to_iso(record['scheduled_at'])} replaces it"
        for running in self._ds.executions.find({"job_id": record["job_id"], "status": "running"}, limit=100):
            if not self.stop(running["_id"], "cancelled", by):  # not here: its holder's watchdog reads it
                self.claims.request_cancel(running["_id"], by)

    def _end_unstarted(self, run: Run, status: str, reason: str, error: str) -> None:
        """A held record that must not start ends now (through the recorder: conditional)."""
        record = run.record
        fields = {"status": status, "error": error, "completed_at": utcnow()}
        counter = [Write("jobs", {"_id": record["job_id"]}, inc={"total_executions": -1})]

        def ended() -> None:
            self.metrics.run_skipped(record.get("job_class_string"), reason)
            if status == "skipped" and reason in OVERLAP_SKIPS:  # the job's own policy, not a person's act
                self._observe(run.job, {**record, **fields})

        self._recorder.write(
            Write(
                "executions",
                {**held(record), "status": "scheduled"},
                fields,
                then=counter if status in NOT_RUN else [],
                after=ended,
            )
        )

    def _work(self, entry: _Entry) -> None:
        """A worker: the run's job body, then its end."""
        run = entry.run
        try:
            status, error = self.runner.execute(run)
            self.finish(run, status, error)
        except Exception as exc:
            log.exception("Execution %s: the worker hit an error", run.id)
            if not run.ended:  # never leave the record running (and the worker counted) for good
                try:
                    self.finish(run, "failed", f"Texium could not run this job: {type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("Execution %s: could not record its end", run.id)
        finally:
            with self._cond:
                if self._runs.get(run.id) is run and run.ended:
                    del self._runs[run.id]
                self._worker_freed(run.record.get("user_id"))

    def _requeue(self, entry: _Entry, delay: float) -> None:
        with self._cond:
            if self.closing:
                return
            entry.not_before = time.monotonic() + delay
            self._enqueue(entry)
            self._cond.notify_all()

    def _refusal(self, entry: _Entry, job: dict | None) -> tuple[str, str, str] | None:
        """(status, reason, error) when the record must end without starting."""
        if job is None:
            if entry.trigger == RUN_NOW:
                return "cancelled", "deleted", "Cancelled: the job was deleted before this run started"
            return "skipped", "deleted", "Skipped: the job was deleted before this run started"
        if entry.trigger == RUN_NOW:
            return None  # run now works for paused jobs too (a chained or URL start does not)
        if job.get("is_paused") or not (job.get("is_enabled", True) or _last_of_max_runs(job, entry)):
            what = "paused" if job.get("is_paused") else "disabled"
            return "skipped", what, f"Skipped: the job was {what} before this run started"
        if entry.trigger == SCHEDULE and not _fires_at(job, entry.due):
            return "skipped", "edited", "Skipped: the job's schedule was changed before this run started"
        return None

    def _hand_back(self, run: Run) -> None:
        try:
            self.claims.hand_back(run.record)
        except Exception as exc:
            log.warning("Could not hand back execution %s: %s", run.id, getattr(exc, "detail", exc))

    # -- ending a run ----------------------------------------------------------------------
    def finish(self, run: Run, status: str, error: str, gave_up: bool = False) -> None:
        """Record how a started run ended, once: from its own thread, or from the watchdog when
        the job did not stop in time (`gave_up`: its thread lingers and its result is dropped)."""
        with self._cond:
            if run.ended:
                if run.lingering:  # the thread the watchdog gave up on has returned at last
                    run.lingering = False
                    log.warning("Execution %s's job returned after its run was recorded ended", run.id)
                return
            run.ended = True
            run.lingering = gave_up
        fields = self.runner.final_fields(run, status, error, self.stop_grace, gave_up)
        retry = self.runner.next_attempt(run, fields)
        seconds = (fields["duration_ms"] or 0) / 1000
        log.info("Execution %s of job %s %s in %d ms", run.id, run.job.get("name"), fields["status"], seconds * 1000)
        self.metrics.run_ended(run.record.get("job_class_string"), fields["status"], seconds)
        job_id = run.record["job_id"]
        then = [Write("slots", slot_of(run.record), delete=True)] if self._ds.slot_documents else []
        if retry is not None:
            then.append(
                Write("executions", insert=retry, then=[Write("jobs", {"_id": job_id}, inc={"total_executions": 1})])
            )
        outcome = {**run.record, **fields}

        def ended() -> None:
            self._slot_freed(job_id)
            if self.chains is not None:
                self.chains.ended(outcome)
            if retry is None:
                self._observe(run.job, outcome)

        self._recorder.write(
            Write("executions", {**held(run.record), "status": "running"}, fields, then=then, after=ended)
        )

    def _slot_freed(self, job_id: str) -> None:
        """A run of `job_id` gave its slot back: runs of that job waiting here may try now."""
        with self._cond:
            for entry in self._by_job.get(job_id, ()):
                entry.not_before = 0.0
            self._cond.notify_all()

    def _observe(self, job: dict, execution: dict) -> None:
        if self.alerts is not None:
            self.alerts.observe(job, execution)

    # -- stopping runs ---------------------------------------------------------------------
    def stop(self, execution_id: str, reason: str, by: str = "") -> bool:
        """Tell a running run of this node to stop; False if it is not running here."""
        with self._cond:
            run = self._runs.get(execution_id)
            if run is None or not run.begun or run.ended or run.reason:
                return False
            run.reason, run.by, run.stop_asked = reason, by, time.monotonic()
        run.cancelled.set()
        log.info("Execution %s: told to stop (%s%s)", run.id, reason, f" by {by}" if by else "")
        return True

    def started(self) -> list[Run]:
        """Runs of this node whose job is running (what the watchdog looks after)."""
        with self._cond:
            return [run for run in self._runs.values() if run.begun and not run.ended]

    @property
    def lingering(self) -> int:
        """Job threads still running after their runs were recorded ended."""
        with self._cond:
            return sum(1 for run in self._runs.values() if run.lingering)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queued)

    # -- start and shutdown ----------------------------------------------------------------
    def reap_stale_scripts(self) -> int:
        """Scripts an earlier server process on this host left running: kill them and record
        their executions `abandoned` saying so. Returns how many."""
        if self.processes is None:
            return 0
        reaped = self.processes.reap_stale()
        for entry in reaped:
            what = "was killed" if entry.get("killed") else "had already ended"
            self._ds.executions.update_many(
                {"_id": entry["execution_id"], "status": "running"},
                {
                    "status": "abandoned",
                    "completed_at": utcnow(),
                    "error": f"The server running this execution stopped before it finished; its script's "
                    f"process group {entry.get('pgid')} {what} when the server started again.",
                },
                inc={"generation": 1},
            )
        if reaped:
            log.warning("Found %d scripts left by an earlier server process on this host; stopped them", len(reaped))
        return len(reaped)

    def close(self, grace_seconds: float) -> int:
        """Hand back what has not started, wait up to `grace_seconds` for what has, then record
        `abandoned` what is still running. Returns how many runs did not finish."""
        with self._cond:
            self.closing = True
            self._cond.notify_all()
        with self._starting:  # no batch of starts in flight from here on
            pass
        self.hand_back_all()
        with self._cond:
            futures = {future: self._runs.get(execution_id) for execution_id, future in self._futures.items()}
        if futures:
            wait(futures, timeout=grace_seconds)
        with self._cond:
            unfinished = [run for run in self._runs.values() if run.begun and not run.ended]
            for run in unfinished:
                run.ended = True
            self._stopped = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        reason = f"The server shut down before this execution finished (waited {grace_seconds:g} s)."
        for run in unfinished:
            self.metrics.run_abandoned(run.record.get("job_class_string"))
            try:
                self.claims.abandon(run.record, reason)
            except Exception as exc:  # the sweep abandons it once this node is seen stopped
                log.warning("Could not record execution %s abandoned: %s", run.id, getattr(exc, "detail", exc))
        lingering = self.lingering
        if lingering:
            log.warning("%d job threads that ignored a stop request are still running; not waiting for them", lingering)
        if unfinished:
            killed = self.processes.kill_all("shutdown") if self.processes is not None else []
            log.warning(
                "Shut down with %d executions unfinished, marked abandoned%s",
                len(unfinished),
                f"; killed {len(killed)} script process groups" if killed else "",
            )
        return len(unfinished) + lingering


def _start_fields(run: Run) -> dict:
    """What a start writes besides its status: the obligation to start the chained jobs, made
    durable with the start itself so that whoever ends the run (its holder, or the sweep) leaves
    it for the chain settler to fulfil."""
    return {"chain_pending": True} if starts_others(run.job, run.record) else {}


def _maintenance_refusal(entry: _Entry, switch: dict | None) -> tuple[str, str, str] | None:
    """While maintenance is on nothing starts: an occurrence or a retry is skipped, a run-now
    (accepted before maintenance began) cancelled."""
    if switch is None:
        return None
    why = f"maintenance is on (every job {describe_pause(switch)})"
    if entry.trigger == RUN_NOW:
        return "cancelled", "maintenance", f"Cancelled: {why} before this run started"
    return "skipped", "maintenance", f"Skipped: {why}"


def _fires_at(job: dict, due: datetime) -> bool:
    """Whether the job's schedule, as stored now (window and run_at included), still has an
    occurrence at `due`."""
    try:
        return JobTimes(job).fires_at(due)
    except Exception:
        return False


def _last_of_max_runs(job: dict, entry) -> bool:
    """A scheduled occurrence the job claimed before it disabled itself at its `max_runs`: it
    still runs (it is one of those runs)."""
    last = job.get("final_run_at")
    return (
        entry.trigger == SCHEDULE
        and bool(job.get("disabled_reason"))
        and isinstance(last, datetime)
        and entry.due <= last
    )


RETRY_TRIGGERS = (SCHEDULE, RETRY, CHAIN, URL)  # the records a pause or a disable ends (a run-now still runs)
OVERLAPPING = (SCHEDULE, CHAIN)  # over the job's limit they follow its overlap policy; the others wait
# The overlap policies that keep an occurrence waiting for the job's slot, and why it waits.
QUEUEING = {
    "queue_all": "queued: the job was at its limit ({limit} running at once); it runs when a run ends",
    "queue_one": "queued: the job was at its limit ({limit} running at once); it runs when a run ends "
    "unless a newer occurrence takes its place",
    "replace": "replacing: the job's running run was asked to stop; this one runs when it has",
}
