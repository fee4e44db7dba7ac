"""Retention: old execution records pruned in the background, in small batches, once across nodes.

What goes: records (monitor pings included) created more than `days` ago, and the ended records
of a job with `keep_last: N` beyond its N newest. What never goes, whatever its age:
- a record that has not ended (`scheduled`, `running`): the firing core still moves it;
- a record with `chain_pending`: its chained starts are not all made yet;
- a record whose end started runs that have not ended (`parent_execution_id` of an active one);
- the attempts of an occurrence whose retry is still pending (`retry_of` of an active one);
- the newest record of each status per job (or monitor): the dashboard and alerts read them.

Once across nodes: a round is claimed by ONE conditional write on the `retention` document of
the `state` collection (an expiring claim), so two nodes never prune at once, and the claim is
left expiring at the next allowed round, so the store sees one round per `every_seconds` however
many nodes run the check. A node that dies mid-round leaves the rest to the next claim: what it
deleted is gone, what it did not is found again. Each delete is one short write of at most
`batch` records by `_id`, taken only when no start is waiting for the store (WritePriority), and
a round stops after `round_seconds` (it continues at the next check), so neither firing nor the
other checks of the thread wait long behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from texium.core.datastore.base import Datastore
from texium.core.errors import DuplicateKeyError
from texium.core.figures import ACTIVE, FINAL

log = logging.getLogger("texium.retention")

KEY = "retention"  # the claim's document in scheduler_state
CLAIM_SECONDS = 60.0  # a claim outlives its round by far; a dead node's is taken over after this
ROUND_SECONDS = 0.5  # a round's budget; the rest is pruned at the next check


class _Guard:
    """What one round must keep: read once per round from the active records (few), and the
    newest record of each status per job, looked up once per (owner, status)."""

    def __init__(self, datastore: Datastore):
        self._ds = datastore
        active = datastore.executions.find({"status": {"$in": list(ACTIVE)}})
        self.referenced = {r["parent_execution_id"] for r in active if r.get("parent_execution_id")}
        self.retried = {r["retry_of"] for r in active if r.get("retry_of")}
        self._newest: dict[tuple[str, str, str], str | None] = {}

    def keeps(self, record: dict) -> bool:
        if record.get("status") not in FINAL or record.get("chain_pending"):
            return True
        if record["_id"] in self.referenced or record["_id"] in self.retried:
            return True
        if record.get("retry_of") in self.retried:
            return True
        return self._newest_of_status(record) == record["_id"]

    def _newest_of_status(self, record: dict) -> str | None:
        owner = ("monitor_id", record["monitor_id"]) if record.get("monitor_id") else ("job_id", record.get("job_id"))
        key = (*owner, record["status"])
        if key not in self._newest:
            newest = self._ds.executions.find_one(
                {owner[0]: owner[1], "status": record["status"]}, sort=[("created_at", -1)]
            )
            self._newest[key] = newest["_id"] if newest else None
        return self._newest[key]


class Retention:
    """The retention check of one node (see the module's docstring)."""

    def __init__(
        self,
        datastore: Datastore,
        node_id: Callable[[], str],
        days: float,
        every_seconds: float = 60.0,
        batch: int = 500,
        pruned: Callable[[int], None] = lambda n: None,
        round_seconds: float = ROUND_SECONDS,
        claim_seconds: float = CLAIM_SECONDS,
    ):
        self._ds = datastore
        self._node_id = node_id  # the node's current id (it changes when the node rejoins)
        self._days = days
        self._every = timedelta(seconds=every_seconds)
        self._batch = batch
        self._pruned = pruned  # Metrics.executions_pruned
        self._round_seconds = round_seconds
        self._claim = timedelta(seconds=max(claim_seconds, every_seconds))
        self._next_at: datetime | None = None
        self._after_job = ""  # keep_last jobs resume after this id when a round ran out of time

    def check(self, now: datetime) -> int:
        """Prune one round if it is this node's turn; the number of records deleted."""
        if self._next_at is not None and now < self._next_at:
            return 0
        self._next_at = now + self._every
        if not self._days and self._ds.jobs.find_one({"keep_last": {"$gte": 1}}) is None:
            return 0  # nothing to prune: no claim either, so a node that prunes finds none waiting
        claim = self._take_claim(now)
        if claim is None:
            return 0
        pruned, finished = 0, False
        try:
            pruned, finished = self._round(now)
        finally:
            # Left expiring at the next allowed round (or now, when the round ran out of time),
            # conditional on still being this round's claim.
            again = now + self._every if finished else now
            self._ds.state.update_many({"key": KEY, **claim}, {"claim_expires_at": again})
            if not finished:
                self._next_at = now
        self._ds.reclaim_space()
        if pruned:
            self._pruned(pruned)
            log.info("Retention: %d execution records pruned%s", pruned, "" if finished else " (more next round)")
        return pruned

    def _take_claim(self, now: datetime) -> dict | None:
        claim = {"claimed_by": self._node_id(), "claim_expires_at": now + self._claim}
        if self._ds.state.update_many({"key": KEY, "claim_expires_at": {"$lte": now}}, claim):
            return claim
        if self._ds.state.find_one({"key": KEY}) is not None:
            return None
        try:
            self._ds.state.insert({"key": KEY, **claim})
        except DuplicateKeyError:  # another node created it first: its round
            return None
        return claim

    def _round(self, now: datetime) -> tuple[int, bool]:
        """(records deleted, whether everything due was looked at)."""
        stop_at = time.monotonic() + self._round_seconds
        guard = _Guard(self._ds)
        pruned = 0
        for ids in self._due(now, guard):
            self._ds.priority.wait_turn()
            pruned += self._ds.executions.delete_many({"_id": {"$in": ids}})
            if time.monotonic() >= stop_at:
                return pruned, False
        self._after_job = ""
        return pruned, True

    def _due(self, now: datetime, guard: _Guard) -> Iterator[list[str]]:
        """Batches of record ids to delete: by age first, then by the jobs' keep_last."""
        if self._days:
            yield from self._older_than(now - timedelta(days=self._days), guard)
        query: dict = {"keep_last": {"$gte": 1}}
        if self._after_job:
            query["_id"] = {"$gt": self._after_job}
        for job in self._ds.jobs.find(query, sort=[("_id", 1)]):
            self._after_job = job["_id"]
            yield from self._beyond_last(job["_id"], int(job["keep_last"]), guard)

    def _older_than(self, cutoff: datetime, guard: _Guard) -> Iterator[list[str]]:
        # Keyset on created_at: the records kept are passed over, not read again this round.
        since = None
        while True:
            query: dict = {"created_at": {"$lt": cutoff}, "status": {"$in": list(FINAL)}}
            if since is not None:
                query["created_at"]["$gte"] = since
            found = self._ds.executions.find(query, sort=[("created_at", 1)], limit=self._batch)
            ids = [r["_id"] for r in found if not guard.keeps(r)]
            if ids:
                yield ids
            if len(found) < self._batch:
                return
            if found[-1]["created_at"] == since and not ids:
                return  # a whole batch kept at one instant: the rest next round
            since = found[-1]["created_at"]

    def _beyond_last(self, job_id: str, keep: int, guard: _Guard) -> Iterator[list[str]]:
        offset = keep  # past the N newest ended records; the kept ones stay in place
        while True:
            found = self._ds.executions.find(
                {"job_id": job_id, "status": {"$in": list(FINAL)}},
                sort=[("created_at", -1)],
                limit=self._batch,
                offset=offset,
            )
            ids = [r["_id"] for r in found if not guard.keeps(r)]
            offset += len(found) - len(ids)
            if ids:
                yield ids
            if len(found) < self._batch:
                return
