"""Writes the ends of runs off the threads that make them, in batches, and keeps trying until
they are written.

A job thread hands over a `Write` and goes on; one writer thread applies what is queued in one
datastore batch (one SQLite transaction), so a hundred runs ending together cost one commit.
A write may carry a condition (the holder and generation of its record): if the condition no
longer holds, another node took the record over, the write did not happen, and neither do its
consequences (`then`: the retry record, the slot release, the counters; `after`: the alert).
When the store fails, what was not applied stays queued and is retried with backoff for as long
as the process lives. A failed SQLite batch applied nothing (one transaction) and is retried
whole; elsewhere each write stands alone, so only the writes after the one that failed are
retried, and a counter is never added twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bson.errors import InvalidDocument

from texium.core.datastore.base import Datastore
from texium.core.errors import DuplicateKeyError
from texium.core.metrics import Metrics
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.recorder")
UNSTORABLE = (TypeError, ValueError, InvalidDocument)  # a value no store can encode: retrying cannot help
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds between attempts while the store fails
BATCH_WRITES = 32  # writes per batch: a short transaction, so starts never wait behind a long one


@dataclass(eq=False)
class Write:
    """One write: an update of the documents `query` matches, an insert, or a delete."""

    collection: str  # "executions", "jobs" or "slots"
    query: dict = field(default_factory=dict)
    set: dict = field(default_factory=dict)
    inc: dict = field(default_factory=dict)
    insert: dict | None = None
    delete: bool = False
    then: list[Write] = field(default_factory=list)  # applied only when this one was
    after: Callable[[], None] | None = None  # called once this one is written (outside the batch)

    @property
    def conditional(self) -> bool:
        return set(self.query) != {"_id"}


@dataclass
class _Change:
    """Merged unconditional changes to one job: later `set` values win, increments add up."""

    set: dict = field(default_factory=dict)
    inc: dict = field(default_factory=dict)

    def merge(self, set_: dict | None, inc: dict | None) -> None:
        self.set.update(set_ or {})
        for name, amount in (inc or {}).items():
            self.inc[name] = self.inc.get(name, 0) + amount

    def under(self, newer: _Change) -> _Change:
        merged = _Change(dict(self.set), dict(self.inc))
        merged.merge(newer.set, newer.inc)
        return merged


class Recorder:
    def __init__(self, datastore: Datastore, metrics: Metrics | None = None):
        self._ds = datastore
        self._metrics = metrics if metrics is not None else Metrics()
        self._writes: list[Write] = []
        self._outputs: dict[str, Write] = {}  # execution id -> its latest output so far
        self._jobs: dict[str, _Change] = {}
        self._cond = threading.Condition()
        self._writing = False
        self._stopping = False
        self.failing_since: datetime | None = None
        self.last_error = ""
        self.refused = 0  # conditional writes whose record another node had taken over
        self._thread = threading.Thread(target=self._run, name="texium-recorder", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------
    def write(self, write: Write) -> None:
        with self._cond:
            self._writes.append(write)
            self._cond.notify_all()

    def insert(self, record: dict) -> None:
        """A new execution record; a second insert of its occurrence key is dropped by the store."""
        self.write(Write("executions", insert=record))

    def execution(self, execution_id: str, fields: dict) -> None:
        """An unconditional change of an execution (alerts sent, for instance)."""
        self.write(Write("executions", {"_id": execution_id}, fields))

    def output(self, query: dict, text: str) -> None:
        """The output so far of a running record; only the latest one queued is written."""
        with self._cond:
            self._outputs[query["_id"]] = Write("executions", {**query, "status": "running"}, {"output": text})
            self._cond.notify_all()

    def job(self, job_id: str, fields: dict | None = None, inc: dict | None = None) -> None:
        with self._cond:
            self._jobs.setdefault(job_id, _Change()).merge(fields, inc)
            self._cond.notify_all()

    # -- state -------------------------------------------------------------------------
    def _queued(self) -> int:
        return len(self._writes) + len(self._outputs) + len(self._jobs)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued() + (1 if self._writing else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written; False if time ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued() or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float) -> bool:
        """Write what is queued (up to `timeout` s), then end the writer thread."""
        written = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(1.0)
        if not written:
            log.error("Stopped with %d execution changes unwritten: %s", self.pending, self.last_error)
        return written

    # -- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            with self._cond:
                while not (self._queued() or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                writes = [*self._outputs.values(), *self._writes[:BATCH_WRITES]]
                jobs = self._jobs
                self._writes, self._outputs, self._jobs = self._writes[BATCH_WRITES:], {}, {}
                self._writing = True
            self._ds.priority.wait_turn()  # a start waiting for the store goes first
            done, left, left_jobs, error = self._apply(writes, jobs)
            with self._cond:
                self._writes[:0] = left
                for job_id, change in left_jobs.items():
                    newer = self._jobs.get(job_id)
                    self._jobs[job_id] = change.under(newer) if newer else change
                self._writing = False
                if error is not None:
                    self._failed(error)
                    self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                else:
                    delay = RETRY_FIRST
                    if self.failing_since is not None:
                        log.warning("Execution records are being written again (after: %s)", self.last_error)
                        self.failing_since, self.last_error = None, ""
                self._cond.notify_all()
            for write in done:
                try:
                    write.after()
                except Exception:
                    log.exception("A follow-up of a written record failed")

    def _apply(
        self, writes: list[Write], jobs: dict[str, _Change]
    ) -> tuple[list[Write], list[Write], dict[str, _Change], Exception | None]:
        """Apply in one batch: (written with a follow-up, not written, jobs not written, error)."""
        todo, done, jobs_left = list(writes), [], dict(jobs)
        try:
            with self._metrics.store_call("recorder_write"), self._ds.batch():
                while todo:
                    write = todo[0]
                    if self._one(write):
                        todo[1:1] = write.then
                        if write.after is not None:
                            done.append(write)
                    todo.pop(0)
                for job_id in list(jobs_left):
                    change = jobs_left[job_id]
                    self._ds.jobs.update_many({"_id": job_id}, change.set, inc=change.inc)
                    del jobs_left[job_id]
        except Exception as exc:
            if self._ds.atomic_batches:  # the transaction applied nothing: all of it again
                return [], writes, dict(jobs), exc
            return done, todo, jobs_left, exc
        return done, [], {}, None

    def _one(self, write: Write) -> bool:
        """Apply one write; False when its condition did not hold (or it cannot be stored)."""
        collection = getattr(self._ds, write.collection)
        try:
            if write.insert is not None:
                try:
                    collection.insert(write.insert)
                except DuplicateKeyError:
                    return False
                return True
            if write.delete:
                collection.delete_many(write.query)
                return True
            if collection.update_many(write.query, write.set, inc=write.inc or None):
                return True
        except UNSTORABLE as exc:  # a bug's value: dropped with an error line, never retried for ever
            log.error("Dropped a change to %s that cannot be stored (%s): %s", write.query, exc, sorted(write.set))
            return False
        if write.conditional:
            self.refused += 1
            log.info("A write to %s was refused: the record is no longer this holder's", write.query.get("_id"))
        return False

    def _failed(self, exc: Exception) -> None:
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:
            self.failing_since = utcnow()
            log.error(
                "Cannot write execution records (%s); keeping %d changes in memory and retrying",
                detail,
                self._queued(),
            )
        self.last_error = detail
