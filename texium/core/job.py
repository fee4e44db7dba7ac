"""The job contract: the class every job derives from, and what a running job may reach.

It lives in the core (the runner and the registry depend on it; the jobs depend on the core,
never the reverse); `texium.jobs.base` re-exports it for existing job packages.

A job is a class with `meta_info()` (what the dashboard and `available-jobs` show) and
`run(*pub_args, **pub_kwargs)`. Whatever `run` returns (a string as-is, anything else as JSON)
and whatever it writes through `self.write()` or `print()` becomes the execution's `output`.
Raise `JobError("...")` for a clear failure without a traceback; any other exception fails the
execution with its traceback in `error`. `run` is called on a worker thread and may block.

Stopping: when a run passes its `timeout_seconds` or is cancelled, the runner sets
`self.context.cancelled` (a threading.Event). A job that blocks for long should check it (or wait
on it instead of sleeping) and return or raise soon after. Python cannot kill a thread from
outside, so a job that ignores the flag is recorded `timeout` / `cancelled` anyway after a grace
period and its thread is left to finish in the background, its result discarded (counted in
health as a lingering thread). Raise `JobTimeout` when the job's own time limit runs out.

Owners: a job runs on behalf of its owner (`context.user_id`), who may be a `user`. A class whose
arguments name other records (a server) or reach other people (mail) says what its owner may
use in `check_owner`; the scheduler calls it when a job is created or changed (a refusal is a
400) and the runner before every run (the owner's role or records may have changed since).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from texium.core.datastore.base import Datastore, is_valid_id


class JobError(Exception):
    """A failure the job explains itself; its message is the execution's `error`."""


class JobTimeout(JobError):
    """The job ran out of a time limit of its own (e.g. a script's `timeout`): the run is `timeout`."""


@dataclass
class JobContext:
    """Everything a job may use. Built by the runner for each execution."""

    execution_id: str
    job_id: str | None
    job_name: str
    user_id: str | None
    datastore: Datastore
    # Plain settings values the jobs need: DATA_DIR, BACKUP_DIR, REPORT_DIR, SCRIPTS_DIR,
    # SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_STARTTLS, SMTP_FROM, SECRET_KEY ...
    config: Mapping[str, Any] = field(default_factory=dict)
    # Named callbacks into the running server, e.g. "clear_cache" for the maintenance job.
    hooks: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    write: Callable[[str], None] = lambda text: None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("texium.jobs"))
    # Child process groups a job starts (CustomScriptJob), so none outlives the server.
    processes: Any = None
    # Set when the run must stop: its timeout_seconds passed, or someone cancelled it.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # The run's time limit in seconds (the job's timeout_seconds or DEFAULT_JOB_TIMEOUT); None: none.
    timeout_seconds: float | None = None

    def owner_is_admin(self) -> bool:
        """Whether the job's owner is an admin now (read from the store: roles change)."""
        owner = self.datastore.users.get(self.user_id) if is_valid_id(self.user_id) else None
        return owner is not None and owner.get("role") == "admin"

    def owner_may_use(self, record: Mapping[str, Any] | None) -> bool:
        """Whether the job's owner may use `record` (a server): it is theirs, or they are an admin."""
        return record is not None and (record.get("user_id") == self.user_id or self.owner_is_admin())


class JobBase:
    """Subclass and implement `run`; describe arguments in `meta_info`."""

    def __init__(self, context: JobContext):
        self.context = context

    @classmethod
    def meta_info(cls) -> dict:
        """Shown by `available-jobs`: override to describe the arguments.

        Keys: `description` (one line), `arguments` (list of {name, type, description,
        required}), `example_arguments` ({"pub_args": [...], "pub_kwargs": {...}}), `notes`.
        """
        doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        return {
            "description": doc,
            "arguments": [],
            "example_arguments": {"pub_args": [], "pub_kwargs": {}},
            "notes": "",
        }

    def write(self, text: str) -> None:
        """Append a line to the execution's output."""
        self.context.write(text if text.endswith("\n") else text + "\n")

    def check_owner(self, *args: Any, **kwargs: Any) -> None:
        """Raise JobError when the job's owner may not use these arguments (another user's
        server, mail to a domain they may not send to). Arguments of the wrong shape are left
        to `run` to refuse. By default an owner may use any arguments."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError
