"""Writes the state changes of executions off the threads that make them, in batches, and keeps
trying until they are written.

Job threads hand a change here and go on: one writer thread applies everything queued in one
datastore batch (one SQLite transaction), so a hundred runs finishing together cost one
commit, and a job thread never waits behind the store or sleeps on a retry. When the store
fails, the changes stay queued in memory and are retried with backoff for as long as the
process lives: a live node never leaves a run it started `running` because a write failed.
What dies with the process (kill -9) is found by the node heartbeat and marked `abandoned`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from bson.errors import InvalidDocument

from texium.core.datastore.base import Datastore
from texium.core.metrics import Metrics
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.recorder")
UNSTORABLE = (TypeError, ValueError, InvalidDocument)  # a value no store can encode: retrying cannot help
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds between attempts while the store fails


@dataclass
class _Change:
    """Merged changes to one document: later `set` values win, increments add up."""

    set: dict = field(default_factory=dict)
    inc: dict = field(default_factory=dict)

    def merge(self, set_: dict | None, inc: dict | None) -> None:
        self.set.update(set_ or {})
        for name, amount in (inc or {}).items():
            self.inc[name] = self.inc.get(name, 0) + amount

    def under(self, newer: _Change) -> _Change:
        """This (older) change with `newer` applied on top."""
        merged = _Change(dict(self.set), dict(self.inc))
        merged.merge(newer.set, newer.inc)
        return merged


class Recorder:
    def __init__(self, datastore: Datastore, metrics: Metrics | None = None):
        self._ds = datastore
        self._metrics = metrics if metrics is not None else Metrics()
        self._inserts: list[dict] = []  # new execution records (pending retries), written first
        self._executions: dict[str, _Change] = {}
        self._jobs: dict[str, _Change] = {}
        self._cond = threading.Condition()
        self._writing = False
        self._stopping = False
        self.failing_since: datetime | None = None
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="texium-recorder", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------
    def insert(self, execution: dict) -> None:
        """A new execution record; a second insert of its occurrence key is dropped by the store."""
        with self._cond:
            self._inserts.append(execution)
            self._cond.notify_all()

    def execution(self, execution_id: str, fields: dict) -> None:
        self._queue("executions", execution_id, fields, None)

    def job(self, job_id: str, fields: dict | None = None, inc: dict | None = None) -> None:
        self._queue("jobs", job_id, fields, inc)

    def _queue(self, kind: str, doc_id: str, set_: dict | None, inc: dict | None) -> None:
        with self._cond:  # the queue is picked under the lock: the writer swaps it for a new one
            target = self._executions if kind == "executions" else self._jobs
            target.setdefault(doc_id, _Change()).merge(set_, inc)
            self._cond.notify_all()

    # -- state -------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._inserts) + len(self._executions) + len(self._jobs) + (1 if self._writing else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written; False if time ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inserts or self._executions or self._jobs or self._writing:
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
                while not (self._inserts or self._executions or self._jobs or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                inserts, executions, jobs = self._inserts, self._executions, self._jobs
                self._inserts, self._executions, self._jobs = [], {}, {}
                self._writing = True
            # Executions first and on their own: a failing counter never holds back a record.
            not_inserted, insert_error = self._insert(inserts)
            failed = [self._write(self._ds.executions, executions), self._write(self._ds.jobs, jobs)]
            errors = [error for error in (insert_error, *(e for _, e in failed)) if error is not None]
            with self._cond:
                self._inserts[:0] = not_inserted
                self._requeue(failed[0][0], self._executions)
                self._requeue(failed[1][0], self._jobs)
                self._writing = False
                if errors:
                    self._failed(errors[0])
                    self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = RETRY_FIRST
                if self.failing_since is not None:
                    log.warning("Execution records are being written again (after: %s)", self.last_error)
                    self.failing_since, self.last_error = None, ""
                self._cond.notify_all()

    def _insert(self, records: list[dict]) -> tuple[list[dict], Exception | None]:
        if not records:
            return [], None
        try:
            with self._metrics.store_call("recorder_write"):
                self._ds.executions.insert_many(records)
        except Exception as exc:
            return records, exc
        return [], None

    def _write(self, collection, changes: dict[str, _Change]) -> tuple[dict[str, _Change], Exception | None]:
        """Apply changes in one batch; returns (what is still unwritten, the error)."""
        if not changes:
            return {}, None
        try:
            with self._metrics.store_call("recorder_write"), self._ds.batch():
                for doc_id, change in changes.items():
                    self._apply(collection, doc_id, change)
        except UNSTORABLE:  # a change no store can take: write the others one by one
            return self._write_each(collection, changes)
        except Exception as exc:  # keep everything and try again: never drop a record
            return changes, exc
        return {}, None

    @staticmethod
    def _apply(collection, doc_id: str, change: _Change) -> None:
        if change.inc:
            collection.update(doc_id, fields=change.set, inc=change.inc)
        else:  # a plain set needs no read of the document (SQLite: json_set)
            collection.update_many({"_id": doc_id}, change.set)

    def _write_each(self, collection, changes: dict[str, _Change]) -> tuple[dict[str, _Change], Exception | None]:
        """A bug's change (a value the store cannot encode) is dropped with an error line, rather
        than retried for ever in front of every record after it."""
        left, error = {}, None
        for doc_id, change in changes.items():
            try:
                self._apply(collection, doc_id, change)
            except UNSTORABLE as exc:
                log.error("Dropped a change to %s that cannot be stored (%s): %s", doc_id, exc, sorted(change.set))
            except Exception as exc:
                left[doc_id], error = change, exc
        return left, error

    @staticmethod
    def _requeue(older: dict[str, _Change], target: dict[str, _Change]) -> None:
        for doc_id, change in older.items():
            newer = target.get(doc_id)
            target[doc_id] = change.under(newer) if newer else change

    def _failed(self, exc: Exception) -> None:
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:
            self.failing_since = utcnow()
            log.error(
                "Cannot write execution records (%s); keeping %d changes in memory and retrying",
                detail,
                len(self._executions) + len(self._jobs),
            )
        self.last_error = detail
