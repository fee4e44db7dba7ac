"""The datastore interface every provider implements.

Services speak to named collections of JSON-like documents through `Collection`, a deliberately
small subset of pymongo's model so that SQLite and MongoDB behave the same to a client:

* Documents are flat-ish dicts. `_id` is a 24-hex ObjectId string on every provider.
* Top-level fields whose names end in `_at` or `_time` (and TIME_FIELD_NAMES) hold aware UTC datetimes (or None);
  providers store them natively (BSON date, fixed-width ISO text in SQLite) and hand back
  aware UTC datetimes with millisecond precision. Nested values must be JSON-serialisable.
* A query is a dict of top-level field -> value (equality; None matches null or missing) or
  field -> {op: value} with ops `$in`, `$nin`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`.
* A sort is a list of (field, 1 | -1); `_id` in the same direction breaks ties.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from texium.core.errors import DuplicateKeyError
from texium.core.jsontext import Raw, document

Filter = dict[str, Any]
Sort = list[tuple[str, int]]

_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
FILTER_OPERATORS = frozenset({"$in", "$nin", "$ne", "$gt", "$gte", "$lt", "$lte"})


COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_collection_name(name: Any) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise ValueError(f"invalid collection name: {name!r}")
    return name


def conditions(query: Filter | None) -> list[tuple[str, str, Any]]:
    """A query as (field, operator, value) triples, checked against the interface above;
    plain equality comes out as `$eq`. Both providers translate from this one reading."""
    found = []
    for field, cond in (query or {}).items():
        if not isinstance(field, str) or not FIELD_NAME.match(field):
            raise ValueError(f"invalid field name: {field!r}")
        if isinstance(cond, dict):
            if not cond or not set(cond) <= FILTER_OPERATORS:
                raise ValueError(f"unsupported query operator in {field}: {sorted(cond)}")
            items = list(cond.items())
        else:
            items = [("$eq", cond)]
        for op, value in items:
            many = isinstance(value, (list, tuple, set))
            if op in ("$in", "$nin") and not many:
                raise ValueError(f"$in / $nin on {field} needs a list")
            if op not in ("$in", "$nin") and (many or isinstance(value, dict)):
                raise ValueError(f"unsupported query value for {field}: {value!r}")
            found.append((field, op, value))
    return found


def new_id() -> str:
    return str(ObjectId())


def is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_OBJECT_ID.match(value))


# Times whose names do not end in _at/_time.
TIME_FIELD_NAMES = frozenset({"last_seen", "missed_until", "paused_until", "mute_until", "deadline_checked_until"})


def is_time_field(name: str) -> bool:
    return name.endswith("_at") or name.endswith("_time") or name in TIME_FIELD_NAMES


@dataclass(frozen=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False
    # The fields hold true/false and are queried by equality: SQLite indexes their JSON type
    # ('true'/'false'), which is what its equality test on a boolean reads.
    boolean: bool = False

    @property
    def name(self) -> str:
        return "_".join(self.fields) + ("_unique" if self.unique else "") + ("_bool" if self.boolean else "")


# Collection name -> the indexes its queries need. Providers create them idempotently at open.
INDEXES: dict[str, tuple[Index, ...]] = {
    "users": (Index(("email",), unique=True), Index(("created_at",))),
    "servers": (Index(("user_id", "created_at")), Index(("created_at",))),
    "scheduler_jobs": (
        Index(("user_id", "created_at")),
        Index(("created_at",)),
        Index(("next_run_time",)),
        Index(("is_enabled",), boolean=True),  # stats: enabled and paused jobs without a scan
        Index(("is_paused",), boolean=True),
        Index(("claimed_by",)),  # the last claims of a node that died, to complete them
        Index(("paused_until",)),  # pauses that end by themselves, the earliest first
        Index(("excluded_runs",)),  # stats: the jobs that had occurrences excluded by a calendar
        Index(("alert_due_at",)),  # re-alerts and ends of flapping due with no new run, the earliest first
        Index(("deadline_due_at",)),  # the deadlines that passed, for the deadline check
        Index(("adherence_due_at",)),  # jobs with an adherence_target whose figures are due
    ),
    "scheduler_calendars": (Index(("user_id", "created_at")), Index(("created_at",))),
    "scheduler_channels": (Index(("user_id", "created_at")), Index(("created_at",)), Index(("name",))),
    # Every delivery to a channel, newest read first per channel.
    "scheduler_channel_deliveries": (
        Index(("channel_id", "created_at")),
        Index(("created_at",)),
        Index(("digest_id", "status")),  # the messages a digest holds
    ),
    # Grouping (events/digests.py): each channel's current window, and the digests due when one ends.
    "scheduler_channel_windows": (Index(("channel_id",), unique=True),),
    "scheduler_channel_digests": (
        Index(("window_id",), unique=True),
        Index(("status", "due_at")),  # pending digests whose window ended, on any node's sweep
        Index(("status", "claim_expires_at")),  # claims of a node that died while sending
        Index(("channel_id", "status", "due_at")),
    ),
    # Heartbeat monitors: a ping finds its monitor by the token's hash; the check reads the due ones.
    "scheduler_monitors": (
        Index(("token_hash",), unique=True),
        Index(("next_check_at",)),
        Index(("user_id", "created_at")),
        Index(("created_at",)),
    ),
    # Trigger URLs: a use finds its trigger by the token's hash; a job's are listed newest first.
    "scheduler_triggers": (Index(("token_hash",), unique=True), Index(("job_id", "created_at"))),
    "scheduler_backfills": (Index(("status",)),),  # the running ones, every pass
    # Chains (records/chains.py): the edges by either end; fan-in state per waiting job.
    "scheduler_links": (Index(("key",), unique=True), Index(("upstream", "kind")), Index(("downstream", "kind"))),
    "scheduler_fanins": (Index(("outbox_pending",), boolean=True),),
    "scheduler_executions": (
        Index(("occurrence_key",), unique=True),
        Index(("created_at",)),
        Index(("job_id", "created_at")),
        Index(("user_id", "created_at")),
        Index(("status", "created_at")),
        Index(("user_id", "status")),  # per-user stats: counts by status without a scan
        Index(("job_id", "status")),  # running runs of one job (max instances)
        Index(("job_id", "scheduled_at")),  # one job's occurrences in a window (schedule adherence)
        Index(("node_id", "status")),  # active runs of a node that stopped answering
        Index(("status", "scheduled_at")),  # records no node holds, due first (released, retries)
        Index(("backfill_id", "status")),  # a backfill's records that have not ended
        Index(("monitor_id", "created_at")),  # a heartbeat monitor's pings, newest first
        Index(("parent_execution_id", "created_at")),  # the runs a run's end started
        Index(("chain_pending",), boolean=True),  # ended runs whose chained starts are not all made
        Index(("trigger", "status")),  # stats: runs by what started them
        Index(("user_id", "trigger")),
        Index(("job_id", "trigger")),
    ),
    # Per-job concurrency slots: one document per run holding one (key "<job id>#<n>").
    "scheduler_slots": (Index(("key",), unique=True), Index(("execution_id",))),
    "scheduler_nodes": (Index(("last_seen",)),),
    # Switches every node reads on its pass, one document each (key "maintenance").
    "scheduler_state": (Index(("key",), unique=True),),
    "scheduler_audit_logs": (
        Index(("created_at",)),
        Index(("job_id", "created_at")),
        Index(("user_id", "created_at")),
    ),
    "system_metrics": (Index(("created_at",)),),
    "api_keys": (Index(("key_hash",), unique=True), Index(("user_id", "created_at"))),
    # The dashboard's sessions: found by token, ended by key, by user, or when they expire.
    "sessions": (Index(("token_hash",), unique=True), Index(("key_id",)), Index(("user_id",)), Index(("expires_at",))),
    "reports": (Index(("created_at",)),),
}


class Collection(ABC):
    """One named set of documents. Every method is blocking; call it off the IOLoop."""

    name: str

    @abstractmethod
    def insert(self, doc: dict) -> str:
        """Store a copy of `doc` (assigning `_id` when absent) and return its id.
        Raises DuplicateKeyError when a unique index would be broken."""

    @abstractmethod
    def get(self, doc_id: str) -> dict | None:
        """The document with this id, or None (also for ids that are not valid ObjectIds)."""

    @abstractmethod
    def find(
        self, query: Filter | None = None, sort: Sort | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]: ...

    def find_one(self, query: Filter | None = None, sort: Sort | None = None) -> dict | None:
        found = self.find(query, sort=sort, limit=1)
        return found[0] if found else None

    def find_json(
        self,
        query: Filter | None = None,
        sort: Sort | None = None,
        limit: int | None = None,
        offset: int = 0,
        hidden: tuple[str, ...] = (),
    ) -> list[Raw]:
        """find(), as the JSON text clients receive, without the `hidden` fields. A provider that
        keeps documents as JSON text (SQLite) hands it over without decoding it."""
        docs = self.find(query, sort=sort, limit=limit, offset=offset)
        return [document({k: v for k, v in doc.items() if k not in hidden}) for doc in docs]

    def get_json(self, doc_id: str, hidden: tuple[str, ...] = ()) -> Raw | None:
        """get(), as find_json() gives it."""
        doc = self.get(doc_id)
        return None if doc is None else document({k: v for k, v in doc.items() if k not in hidden})

    @abstractmethod
    def count(self, query: Filter | None = None) -> int: ...

    def distinct(self, field: str, query: Filter | None = None) -> list:
        """The different values of a top-level `field` among the matching documents."""
        values = []
        for doc in self.find(query):
            if doc.get(field) not in values:
                values.append(doc.get(field))
        return values

    @abstractmethod
    def update(
        self, doc_id: str, fields: dict | None = None, inc: dict | None = None, unset: Iterable[str] = ()
    ) -> dict | None:
        """Atomically set / increment / remove top-level fields of one document.
        Returns the updated document, or None when there is no such document.
        Raises DuplicateKeyError when a unique index would be broken."""

    def insert_many(self, docs: list[dict]) -> list[str]:
        """Insert each document that breaks no unique index; returns the ids inserted, in order.
        Several nodes claim the same occurrence this way: whoever inserts it, runs it."""
        inserted = []
        for doc in docs:
            try:
                inserted.append(self.insert(doc))
            except DuplicateKeyError:
                pass
        return inserted

    @abstractmethod
    def update_many(self, query: Filter, fields: dict, inc: dict | None = None) -> int:
        """Set `fields` and add `inc` on every matching document, each document atomically;
        returns how many matched. With `_id` in the query this is the compare-and-set every
        state change of the firing core is made of: it happened exactly when it returns 1."""

    @abstractmethod
    def delete(self, doc_id: str) -> bool: ...

    @abstractmethod
    def delete_many(self, query: Filter) -> int: ...


class WritePriority:
    """In one process, the writes a due run waits for go first: a background writer (the
    recorder) begins its transaction only when no urgent writer (a start) is waiting, so a
    start waits at most for one short batch, never behind a queue of them."""

    def __init__(self):
        self._cond = threading.Condition()
        self._urgent = 0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        with self._cond:
            self._urgent += 1
        try:
            yield
        finally:
            with self._cond:
                self._urgent -= 1
                self._cond.notify_all()

    def wait_turn(self, timeout: float = 0.05) -> None:
        """Wait (up to `timeout`) until no urgent writer is waiting."""
        with self._cond:
            self._cond.wait_for(lambda: self._urgent == 0, timeout)


def slot_of(record: dict) -> dict:
    """Which run a concurrency slot belongs to: the execution as held by one holder in one
    generation (a record, or a slot document)."""
    return {
        "execution_id": record.get("execution_id", record.get("_id")),
        "node_id": record.get("node_id"),
        "generation": record.get("generation"),
    }


class Datastore(ABC):
    """A set of collections in one database, plus the housekeeping the maintenance job needs."""

    provider: str  # "sqlite" or "mongodb"
    inline_reads = False  # bounded reads cost microseconds (a local file): no need for a thread
    slot_documents = True  # start_run keeps the concurrency limit in scheduler_slots

    @property
    def priority(self) -> WritePriority:
        found = self.__dict__.get("_priority")
        if found is None:
            found = self.__dict__.setdefault("_priority", WritePriority())
        return found

    def start_run(self, record: dict, condition: Filter, fields: dict, limit: int) -> str:
        """Set `fields` on the execution `condition` matches if fewer than `limit` runs of its
        job are running: "started", "busy" (the limit is reached) or "lost" (the condition no
        longer holds). Without transactions, a slot document under a unique key per job and
        slot number is taken first and given back if the condition fails; the slot is a lease
        like the record's (see texium.core.scheduling.claims)."""
        slot = {"job_id": record["job_id"], **slot_of(record)}
        for n in range(max(1, limit)):
            try:
                self.slots.insert({**slot, "key": f"{record['job_id']}#{n}"})
                break
            except DuplicateKeyError:
                continue
        else:
            return "started" if self._started_before(record) else "busy"
        if self.executions.update_many(condition, fields):
            return "started"
        self.slots.delete_many({**slot, "key": f"{record['job_id']}#{n}"})  # only the slot just taken
        return "started" if self._started_before(record) else "lost"

    def _started_before(self, record: dict) -> bool:
        """An earlier start of this very record whose answer was lost (the store failed after
        applying it): it is running, held as it was, and must run rather than stay stuck."""
        current = self.executions.get(record["_id"])
        return current is not None and current.get("status") == "running" and slot_of(current) == slot_of(record)

    def start_runs(self, starts: list[tuple[dict, Filter, dict, int]]) -> list[str]:
        """start_run for each (record, condition, fields, limit), in one batch; the outcomes in
        order. At most one start per job is decided at a time, in the order given."""
        with self.batch():
            return [self.start_run(*start) for start in starts]

    def release_run(self, record: dict) -> None:
        """Give back the slot start_run took for this run (only that one)."""
        self.slots.delete_many(slot_of(record))

    @abstractmethod
    def collection(self, name: str) -> Collection: ...

    @property
    def users(self) -> Collection:
        return self.collection("users")

    @property
    def servers(self) -> Collection:
        return self.collection("servers")

    @property
    def jobs(self) -> Collection:
        return self.collection("scheduler_jobs")

    @property
    def calendars(self) -> Collection:
        return self.collection("scheduler_calendars")

    @property
    def channels(self) -> Collection:
        return self.collection("scheduler_channels")

    @property
    def channel_deliveries(self) -> Collection:
        return self.collection("scheduler_channel_deliveries")

    @property
    def channel_windows(self) -> Collection:
        return self.collection("scheduler_channel_windows")

    @property
    def channel_digests(self) -> Collection:
        return self.collection("scheduler_channel_digests")

    @property
    def monitors(self) -> Collection:
        return self.collection("scheduler_monitors")

    @property
    def links(self) -> Collection:
        return self.collection("scheduler_links")

    @property
    def fanins(self) -> Collection:
        return self.collection("scheduler_fanins")

    @property
    def triggers(self) -> Collection:
        return self.collection("scheduler_triggers")

    @property
    def executions(self) -> Collection:
        return self.collection("scheduler_executions")

    @property
    def audit_logs(self) -> Collection:
        return self.collection("scheduler_audit_logs")

    @property
    def nodes(self) -> Collection:
        return self.collection("scheduler_nodes")

    @property
    def slots(self) -> Collection:
        return self.collection("scheduler_slots")

    @property
    def state(self) -> Collection:
        return self.collection("scheduler_state")

    # A batch() that fails leaves nothing written (one transaction), so it can be retried whole.
    atomic_batches = False

    def batch(self) -> AbstractContextManager:
        """Group the writes made inside on this thread: one transaction where the provider has
        them (SQLite), so a scheduler pass or a batch of run records costs one commit and lands
        whole or not at all. Without transactions (MongoDB) each write stands alone, which is
        why callers order their writes so that a partial batch is still safe."""
        return nullcontext()

    @abstractmethod
    def collection_names(self) -> list[str]:
        """Every collection that exists in the database (for backups)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise DatastoreUnavailable unless the database answers."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the start-up banner; never contains a password."""

    @abstractmethod
    def ensure_indexes(self) -> None:
        """Create every index in INDEXES; idempotent."""

    @abstractmethod
    def rebuild_indexes(self) -> list[str]:
        """Drop and recreate the indexes; returns what was rebuilt."""

    @abstractmethod
    def optimize(self) -> str:
        """Refresh the query planner's statistics; returns a short summary."""

    @abstractmethod
    def vacuum(self) -> str:
        """Give unused space back; returns a short summary."""

    @abstractmethod
    def size_bytes(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...
