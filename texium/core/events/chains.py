"""Chained starts: what a run's end sets off (on_success / on_failure / on_finish, fan-ins).

A run whose job starts others is marked `chain_pending` in the same write that starts it, so
whoever ends it (its holder, a shutdown, the sweep of a dead node) leaves the obligation in the
store. Settling it makes each chained start a record keyed "chain:<upstream execution>:<job>"
(a fan-in's "fanin:<job>:<n>"), so a second settler, on this node or another, makes nothing:
the unique occurrence key decides. Only then is the flag cleared, by a conditional write. The
holder settles at once (its recorder hands the end over); every node's periodic check settles
what a node that died or stopped left behind.

A fan-in keeps its state in one document per waiting job (`scheduler_fanins`): the upstream
runs that arrived and are not used yet, the runs already counted (so a settle repeated after a
crash counts nothing twice), and an outbox of complete sets whose start is not made yet. Every
change is one compare-and-set on its `version`: two nodes settling two upstream runs at once
cannot both take the same run, nor both miss a complete set.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from texium.core import parameters
from texium.core.datastore.base import Datastore
from texium.core.errors import DuplicateKeyError, ServiceUnavailable, ValidationError
from texium.core.figures import ACTIVE
from texium.core.records.chains import FAN_IN, MAX_DEPTH, ChainLinks
from texium.core.scheduling.occurrences import CHAIN, new_record
from texium.core.timeutil import parse_iso, to_iso, utcnow

log = logging.getLogger("texium.chains")
SUCCESS, FAILURE = "success", "failure"
KINDS_FOR = {SUCCESS: ("on_success", "on_finish"), FAILURE: ("on_failure", "on_finish")}
SETTLE_GRACE_SECONDS = 5.0  # a holder settles its runs' ends in milliseconds; the check takes over after this
SEEN_KEPT = timedelta(days=1)  # how long past its window a fan-in remembers a counted run


def outcome_of(execution: dict) -> str | None:
    """success | failure | None (not a final outcome: a retried attempt, or a run that never started)."""
    status = execution.get("status")
    if status == "completed":
        return SUCCESS
    if status in ("failed", "timeout", "abandoned", "cancelled") and execution.get("started_at") is not None:
        return FAILURE
    return None


class Chains:
    def __init__(
        self,
        datastore: Datastore,
        links: ChainLinks,
        dispatcher: Any,
        secrets: Any = None,
        grace_seconds: float = SETTLE_GRACE_SECONDS,
        cancel_started_by: Callable[[str], object] | None = None,
    ):
        self._ds = datastore
        self._links = links
        self._dispatcher = dispatcher  # makes and queues a held record: run_now(job, trigger, **fields)
        self._secrets = secrets
        # Cancels what a run's end started: for a cancel_downstream that raced this settle.
        self._cancel_started_by = cancel_started_by
        self._grace = timedelta(seconds=grace_seconds)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="texium-chains", daemon=True)
        self._thread.start()

    # -- the holder's fast path ----------------------------------------------------------
    def ended(self, execution: dict) -> None:
        """A run's end was written (called off the recorder's batch): settle it soon."""
        if execution.get("chain_pending"):
            self._queue.put(execution["_id"])

    def _run(self) -> None:
        while True:
            execution_id = self._queue.get()
            if execution_id is None:
                return
            try:
                self.settle(execution_id)
            except Exception as exc:  # the store; every node's check settles it later
                log.warning("Execution %s: chained starts not made yet (%s)", execution_id, getattr(exc, "detail", exc))

    def stop(self) -> None:
        self._queue.put(None)

    # -- every node's check --------------------------------------------------------------
    def check_due(self, now: datetime) -> None:
        """Settle the ends a holder left unsettled (it died, stopped, or the store failed), and
        start the complete fan-in sets whose start a node left unmade."""
        before = now - self._grace
        pending = self._ds.executions.find(
            {"chain_pending": True, "status": {"$nin": list(ACTIVE)}, "completed_at": {"$lte": before}},
            sort=[("completed_at", 1)],
            limit=200,
        )
        for execution in pending:
            self.settle(execution["_id"])
        for doc in self._ds.fanins.find({"outbox_pending": True, "updated_at": {"$lte": before}}, limit=100):
            self._flush(doc["_id"])

    # -- settling one end ----------------------------------------------------------------
    def settle(self, execution_id: str) -> list[dict]:
        """Make the chained starts of one ended run, once; returns what it started."""
        run = self._ds.executions.get(execution_id)
        if run is None or not run.get("chain_pending") or run.get("status") in ACTIVE:
            return []
        outcome = outcome_of(run)
        started: list[dict] = []
        if outcome is not None and not run.get("cancel_downstream") and not run.get("no_chain"):
            job = self._ds.jobs.get(run["job_id"])
            targets: dict[str, str] = {}
            for kind in KINDS_FOR[outcome]:
                for target in (job or {}).get(kind) or ():
                    targets.setdefault(target, kind)
            for target, kind in targets.items():
                started.append(self._start(target, f"chain:{run['_id']}:{target}", run, kind))
            for waiting in self._links.waiting_for(run["job_id"]):
                started += self._arrive(waiting, run, outcome)
        raced = started and self._cancel_started_by is not None  # a cancel_downstream that came meanwhile
        if raced and (self._ds.executions.get(run["_id"]) or {}).get("cancel_downstream"):
            self._cancel_started_by(run["_id"])
        self._ds.executions.update_many(
            {"_id": run["_id"], "chain_pending": True}, {"chain_pending": False, "chain_started": started or None}
        )
        return started

    def _start(self, job_id: str, key: str, parent: dict, via: str, fan_in: list | None = None) -> dict:
        """The chained start of `job_id` by `parent`'s end, made once (by its key)."""
        entry: dict[str, Any] = {"job_id": job_id, "via": via}
        job = self._ds.jobs.get(job_id)
        if job is None:
            return {**entry, "error": "the job no longer exists"}
        depth = int(parent.get("chain_depth") or 0) + 1
        if depth > MAX_DEPTH:
            log.error("Execution %s: not starting job %s, %d chained starts in a row", parent["_id"], job_id, depth)
            return {**entry, "error": f"not started: {MAX_DEPTH} chained starts in a row (a cycle?)"}
        triggered_by = {"job_id": parent["job_id"], "execution_id": parent["_id"]}
        if fan_in:
            triggered_by["fan_in"] = fan_in
        fields = {
            "occurrence_key": key,
            "triggered_by": triggered_by,
            "parent_execution_id": parent["_id"],
            "chain_depth": depth,
        }
        try:
            try:
                fields.update(parameters.run_fields(job.get("parameters"), {}, self._secrets))
            except ValidationError as exc:  # a required parameter without a default: recorded, not run
                now = utcnow()
                error = f"Skipped: a chained start gives no parameter values, only the declared defaults ({exc.detail})"
                skipped = new_record(job, "skipped", now, CHAIN, None, error=error, completed_at=now, **fields)
                self._ds.executions.insert(skipped)
                return {**entry, "execution_id": skipped["_id"], "error": error}
            execution_id = self._dispatcher.run_now(job, CHAIN, **fields)
        except DuplicateKeyError:  # made already, by an earlier settle of this end
            made = self._ds.executions.find_one({"occurrence_key": key})
            return {**entry, "execution_id": made["_id"] if made else None}
        return {**entry, "execution_id": execution_id}

    # -- fan-in ----------------------------------------------------------------------------
    def _arrive(self, waiting: dict, run: dict, outcome: str) -> list[dict]:
        """Count `run` for the fan-in of `waiting` (once), and start each set it completes."""
        spec = waiting.get(FAN_IN) or {}
        listed = list(spec.get("jobs") or ())
        if run["job_id"] not in listed or (spec.get("require") or "success") == "success" and outcome != SUCCESS:
            return []
        within = timedelta(seconds=float(spec.get("within_seconds") or 86400))
        ended_at = run.get("completed_at") or utcnow()
        for _ in range(50):
            doc = self._fan_in_state(waiting["_id"])
            seen = dict(doc.get("seen") or {})
            if run["_id"] in seen:
                break  # counted before (a settle repeated after a crash)
            now = utcnow()
            arrivals = {
                job_id: [a for a in (doc.get("arrivals") or {}).get(job_id, []) if parse_iso(a[1]) >= now - within]
                for job_id in listed
            }
            arrivals[run["job_id"]].append([run["_id"], to_iso(ended_at)])
            seen = {k: v for k, v in seen.items() if parse_iso(v) >= now - within - SEEN_KEPT}
            seen[run["_id"]] = to_iso(ended_at)
            outbox, fired = list(doc.get("outbox") or []), int(doc.get("fired") or 0)
            if all(arrivals.values()):
                fired += 1
                used = [{"job_id": job_id, "execution_id": arrivals[job_id].pop(0)[0]} for job_id in listed]
                last = {"job_id": run["job_id"], "execution_id": run["_id"], "chain_depth": run.get("chain_depth") or 0}
                outbox.append({"key": f"fanin:{waiting['_id']}:{fired}", "fan_in": used, "last": last})
            changes = {
                "arrivals": arrivals,
                "seen": seen,
                "outbox": outbox,
                "outbox_pending": bool(outbox),
                "fired": fired,
                "version": doc["version"] + 1,
                "updated_at": now,
            }
            if self._ds.fanins.update_many({"_id": waiting["_id"], "version": doc["version"]}, changes):
                break
        return self._flush(waiting["_id"])

    def _fan_in_state(self, job_id: str) -> dict:
        for _ in range(3):
            doc = self._ds.fanins.get(job_id)
            if doc is not None:
                return doc
            try:
                self._ds.fanins.insert(
                    {"_id": job_id, "version": 0, "arrivals": {}, "seen": {}, "outbox": [], "fired": 0}
                )
            except DuplicateKeyError:
                pass
        raise ServiceUnavailable(f"The fan-in state of job {job_id} could not be read")

    def _flush(self, job_id: str) -> list[dict]:
        """Make the starts of the complete sets in the outbox, then take each out of it."""
        started = []
        doc = self._ds.fanins.get(job_id) or {}
        for item in doc.get("outbox") or ():
            last = item["last"]
            parent = {"_id": last["execution_id"], "job_id": last["job_id"], "chain_depth": last.get("chain_depth")}
            started.append(self._start(job_id, item["key"], parent, FAN_IN, item["fan_in"]))
            for _ in range(50):
                current = self._ds.fanins.get(job_id)
                outbox = [other for other in current.get("outbox") or () if other["key"] != item["key"]]
                changes = {"outbox": outbox, "outbox_pending": bool(outbox), "version": current["version"] + 1}
                if self._ds.fanins.update_many({"_id": job_id, "version": current["version"]}, changes):
                    break
        return started
