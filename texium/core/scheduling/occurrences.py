"""Execution records as the firing core makes them, and the keys that make an occurrence unique.

The unique index on `occurrence_key` is what lets several nodes plan the same occurrence and
only one hold it. Each kind of record has its own key space, so a `missed` record and a run of
the same instant never collide.
"""

from __future__ import annotations

from datetime import datetime

from texium.core.datastore.base import new_id
from texium.core.parameters import SEALED
from texium.core.timeutil import to_iso, utcnow

# Never served: the key (the record's last member, see the SQLite provider), and the run's secret
# parameter values (sealed; just before the key when a run has them).
HIDDEN = ("occurrence_key", SEALED)
SCHEDULE, RUN_NOW, RETRY, BACKFILL = "schedule", "run_now", "retry", "backfill"  # the `trigger` of a record
CHAIN, URL = "chain", "url"  # started by another run's end, by a trigger URL
TRIGGERS = (SCHEDULE, RUN_NOW, RETRY, BACKFILL, CHAIN, URL)  # every source of a job's run (stats, metrics)
REQUESTED = (RUN_NOW, URL)  # asked for by someone: waits for a slot instead of following the overlap policy


CHAIN_FIELDS = ("on_success", "on_failure", "on_finish")  # the jobs a run starts when it ends


def starts_others(job: dict, record: dict) -> bool:
    """Whether the end of `record` may start other jobs: it is then marked `chain_pending` as it
    starts, and stays so until its chained starts are made (events/chains.py)."""
    if record.get("no_chain"):
        return False
    return any(job.get(field) for field in CHAIN_FIELDS) or bool(job.get("feeds_fan_in"))


def trigger_of(record: dict) -> str:
    """A record's trigger; records written before triggers were recorded tell it by their key."""
    trigger = record.get("trigger")
    if trigger:
        return trigger
    key = str(record.get("occurrence_key") or "")
    return RUN_NOW if key.startswith("manual:") else RETRY if key.startswith("retry:") else SCHEDULE


def run_key(job_id: str, at: datetime) -> str:
    return f"{job_id}@{to_iso(at)}"


def missed_key(job_id: str, first: datetime) -> str:
    return f"missed:{job_id}@{to_iso(first)}"


def retry_key(first_attempt_id: str, attempt: int) -> str:
    return f"retry:{first_attempt_id}:{attempt}"


def holder_fields(identity) -> dict:
    """Who holds a record: the node's id, host and process (None for nobody)."""
    if identity is None:
        return {"node_id": None, "hostname": None, "pid": None}
    return {"node_id": identity.node_id, "hostname": identity.hostname, "pid": identity.pid}


def new_record(
    job: dict,
    status: str,
    scheduled_at: datetime | None,
    trigger: str,
    holder,
    occurrence_key: str | None = None,
    **extra,
) -> dict:
    """A new execution record of `job`, held by `holder` (a NodeIdentity) or by nobody."""
    execution_id = new_id()
    return {
        "_id": execution_id,
        "job_id": job["_id"],
        "user_id": job.get("user_id"),
        "job_name": job.get("name"),
        "job_class_string": job.get("job_class_string"),
        "status": status,
        "trigger": trigger,
        "output": "",
        "error": "",
        "scheduled_at": scheduled_at,
        "started_at": None,
        "completed_at": None,
        "created_at": utcnow(),
        "duration_ms": None,
        **holder_fields(holder),
        "generation": 1 if holder is not None else 0,
        "attempt": 1,
        "retry_of": None,
        "next_attempt_id": None,
        "cancel_requested_at": None,
        "cancelled_by": None,
        "waiting": None,  # why a queued occurrence waits (the job's overlap policy)
        "catchup": False,  # an occurrence older than the latest due one, run by catchup_policy all
        **extra,
        # Last, so the embedded store can hand out the document without it by slicing text.
        "occurrence_key": occurrence_key or f"manual:{execution_id}",
    }
