"""Every move of an execution record: one conditional write each, on both stores.

A record is held by the node in its `node_id` under its `generation`, the fencing token: a
hand-back or a reclaim adds one, so a holder that lost a record (it paused, was declared dead,
and another node took over) has every later write refused. Nothing here needs a multi-document
transaction; where two writes belong together (a record and its job's counter), the first is
the decision and the second follows only from a decision that was applied.

Concurrency: `scheduled -> running` happens only while fewer than the job's `max_instances`
runs are running, on every node (Datastore.start_run). SQLite counts the running records in the
start's own transaction; MongoDB takes a slot, a document keyed "<job id>#<n>" under a unique
index, before the conditional update, and deletes it when the run ends. A slot is a lease like
the record's: the sweep deletes the slots of dead or stopped nodes and of runs that have ended,
so a crash between two writes never leaks one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from texium.core.datastore.base import Datastore, slot_of
from texium.core.figures import ACTIVE, NOT_RUN
from texium.core.scheduling.occurrences import holder_fields
from texium.core.scheduling.planner import Plan, records_of
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.claims")


def held(record: dict) -> dict:
    """The condition of every write a holder makes: still mine, still this generation."""
    return {"_id": record["_id"], "node_id": record.get("node_id"), "generation": record.get("generation")}


class Claims:
    def __init__(self, datastore: Datastore, identity):
        self._ds = datastore
        self.identity = identity

    # -- claiming ------------------------------------------------------------------------
    def claim_plan(
        self, plan: Plan, on_held: Callable[[dict, dict], None], unfinished: list | None = None
    ) -> list[dict] | None:
        """Advance the job by compare-and-set, then make the plan's records, held by this node;
        returns the records made, or None when the job was not advanced (another pass or an
        edit got there first: then this pass makes nothing, so nothing is ever taken back).

        The compare-and-set also writes the plan on the job (`last_claim`, `claimed_by`), so
        that the records can be made again by anyone: by this node's next pass if the store
        failed in between (`unfinished` keeps it until its records are made), by the sweep if
        this node died in between (complete_claims_of)."""
        job, claim = plan.job, plan.claim()
        unchanged = {"_id": job["_id"], "next_run_time": job.get("next_run_time"), "updated_at": job.get("updated_at")}
        fields = dict(plan.advance)
        if claim is not None:
            fields.update(last_claim=claim, claimed_by=self.identity.node_id)
        inc = {"excluded_runs": plan.excluded} if plan.excluded else None
        if not self._ds.jobs.update_many(unchanged, fields, inc=inc):
            return None
        if claim is None:
            return []
        if unfinished is not None:
            unfinished.append((job, claim))
        made = self.make_records(job, claim, on_held)
        if unfinished is not None:
            unfinished.remove((job, claim))
        return made

    def make_records(self, job: dict, claim: dict, on_held: Callable[[dict, dict], None] | None) -> list[dict]:
        """Insert the records of `claim` (held by this node when `on_held` takes them, else by
        nobody); a record already made (same key) is left as it is, and not counted again.
        Returns the ones made."""
        records = records_of(job, claim, self.identity if on_held is not None else None)
        inserted = set(self._ds.executions.insert_many(records))
        made = [record for record in records if record["_id"] in inserted]
        runs = [record for record in made if record["status"] == "scheduled"]
        if runs:  # counted as made: an occurrence claimed again (an edit moved next_run_time back) is not
            self._ds.jobs.update_many({"_id": job["_id"]}, {}, inc={"total_executions": len(runs)})
        if on_held is not None:
            for record in runs:
                on_held(record, job)
        return made

    def complete_claims_of(self, node_id: str) -> int:
        """Make the records of the last claims a gone node wrote on jobs but may not have made
        (it died between the two writes); held by nobody, so any pass takes them. Idempotent."""
        made = 0
        for job in self._ds.jobs.find({"claimed_by": node_id}, limit=100_000):
            if isinstance(job.get("last_claim"), dict):
                made += len(self.make_records(job, job["last_claim"], None))
        return made

    def claim_unheld(self, horizon: datetime, on_held: Callable[[dict], None], limit: int = 1000) -> int:
        """Hold the records nobody holds (pending retries, handed-back runs) due by `horizon`."""
        found = self._ds.executions.find(
            {"status": "scheduled", "node_id": None, "scheduled_at": {"$lte": horizon}},
            sort=[("scheduled_at", 1)],
            limit=limit,
        )
        claimed = 0
        for record in found:
            generation = int(record.get("generation") or 0) + 1
            mine = {**holder_fields(self.identity), "generation": generation}
            unheld = {
                "_id": record["_id"],
                "status": "scheduled",
                "node_id": None,
                "generation": record.get("generation"),
            }
            if self._ds.executions.update_many(unheld, mine):
                record.update(mine)
                on_held(record)
                claimed += 1
        return claimed

    # -- starting ------------------------------------------------------------------------
    def start(self, record: dict, limit: int, started_at: datetime) -> str:
        """scheduled -> running if the record is still ours (not cancelled, skipped or taken
        over) and fewer than `limit` runs of its job are running, on any node: "started",
        "busy" or "lost" (see Datastore.start_run)."""
        return self.start_many([(record, limit)], started_at)[0]

    def start_many(self, starts: list[tuple], started_at: datetime) -> list[str]:
        """start() for each (record, limit[, fields of its own]), decided in one batch of the
        store; "retry" for those a store error left undecided."""
        fields = {"status": "running", "started_at": started_at}
        items = [
            (record, {**held(record), "status": "scheduled"}, {**fields, **(own[0] if own else {})}, limit)
            for record, limit, *own in starts
        ]
        if self._ds.atomic_batches:  # all of them or none
            outcomes = self._ds.start_runs(items)
        else:  # each start stands alone: a store error leaves the rest to try again ("retry")
            outcomes = []
            for item in items:
                try:
                    outcomes.append(self._ds.start_run(*item))
                except Exception as exc:
                    log.warning("A start failed (%s); the rest of the batch waits", getattr(exc, "detail", exc))
                    outcomes += ["retry"] * (len(items) - len(outcomes))
                    break
        for item, outcome in zip(items, outcomes):
            if outcome == "started":
                item[0].update(item[2])
        return outcomes

    # -- ending without a start ----------------------------------------------------------
    def end_unstarted(self, record: dict, status: str, error: str, **fields) -> bool:
        """scheduled -> skipped | missed | cancelled | abandoned, by its holder."""
        changes = {"status": status, "error": error, "completed_at": utcnow(), **fields}
        with self._ds.batch():
            if not self._ds.executions.update_many({**held(record), "status": "scheduled"}, changes):
                return False
            if status in NOT_RUN:  # it was counted as a run when it was claimed
                self._ds.jobs.update_many({"_id": record["job_id"]}, {}, inc={"total_executions": -1})
        record.update(changes)
        return True

    def cancel_unstarted(self, execution_id: str, by: str) -> bool:
        """scheduled -> cancelled, whoever holds it: the holder's start is then refused."""
        now = utcnow()
        changes = {
            "status": "cancelled",
            "completed_at": now,
            "cancel_requested_at": now,
            "cancelled_by": by,
            "error": f"Cancelled by {by} before it started",
        }
        return bool(self._ds.executions.update_many({"_id": execution_id, "status": "scheduled"}, changes))

    def request_cancel(self, execution_id: str, by: str) -> bool:
        """Ask the holder of a running record to stop it (its watchdog reads this)."""
        asked = {"cancel_requested_at": utcnow(), "cancelled_by": by}
        return bool(self._ds.executions.update_many({"_id": execution_id, "status": "running"}, asked))

    def end_job_records(self, job_id: str, triggers: tuple[str, ...], status: str, error: str) -> int:
        """After a pause or delete: the job's records that have not started end now, whoever
        holds them, so none can start after the pause or delete was answered."""
        query = {"job_id": job_id, "status": "scheduled", "trigger": {"$in": list(triggers)}}
        with self._ds.batch():
            moved = self._ds.executions.update_many(query, {"status": status, "error": error, "completed_at": utcnow()})
            if moved and status in NOT_RUN:
                self._ds.jobs.update_many({"_id": job_id}, {}, inc={"total_executions": -moved})
        return moved

    def hand_back(self, record: dict) -> bool:
        """scheduled -> scheduled with no holder: any node's next pass takes it at once."""
        changes = {**holder_fields(None), "generation": int(record.get("generation") or 0) + 1}
        return bool(self._ds.executions.update_many({**held(record), "status": "scheduled"}, changes))

    def abandon(self, record: dict, reason: str) -> bool:
        """running -> abandoned, by its holder (a shutdown that could not wait any longer)."""
        changes = {"status": "abandoned", "error": reason, "completed_at": utcnow()}
        if not self._ds.executions.update_many({**held(record), "status": "running"}, changes):
            return False
        self._ds.release_run(record)
        return True

    # -- reclaiming (the sweep) ----------------------------------------------------------
    def reclaim(self, node: dict, reason: str) -> tuple[int, int]:
        """What a dead or stopped node holds: (handed back, abandoned). Idempotent."""
        executions, node_id = self._ds.executions, node["_id"]
        released = executions.update_many(
            {"node_id": node_id, "status": "scheduled"}, holder_fields(None), inc={"generation": 1}
        )
        abandoned = executions.update_many(
            {"node_id": node_id, "status": "running"},
            {
                "status": "abandoned",
                "completed_at": utcnow(),
                "error": f"The server running this execution ({node.get('hostname')}, pid {node.get('pid')}) "
                f"stopped before it finished: {reason}.",
            },
            inc={"generation": 1},
        )
        self._ds.slots.delete_many({"node_id": node_id})
        return released, abandoned

    def free_stale_slots(self) -> int:
        """Slots whose run is not running any more (a crash between a run's end and its slot's
        release, or between a slot and a start that was refused)."""
        freed = 0
        if not self._ds.slot_documents:
            return 0
        for slot in self._ds.slots.find({}, limit=10_000):
            record = self._ds.executions.get(slot.get("execution_id") or "")
            if record is not None and record.get("status") in ACTIVE and slot_of(record) == slot_of(slot):
                continue
            freed += self._ds.slots.delete_many({"_id": slot["_id"], "execution_id": slot.get("execution_id")})
        return freed
