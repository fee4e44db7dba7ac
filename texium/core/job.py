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

Run inputs and results: a run started with typed `parameters` (run-now's body, a trigger URL, a
chained start's defaults) gives their values to `run` as the keyword argument `params`, and a run
started by another run's end (a chain) gives that run's published result as `parent_result` (a
fan-in: {upstream job id: its result}); each only when `run` names it or takes **kwargs, and the
class leaves `run_inputs_as_kwargs` true. Both are on the context as well (`params`,
`parent_result`, `parent_execution_id`, `trigger`). What `run` returns, when it is JSON, is the
run's published `result` too (a class that returns text for its output sets
`result_from_return = False`); `context.publish(value)` publishes one explicitly (at most
RESULT_LIMIT bytes of JSON; a larger or non-JSON one is left out with a line in the output).

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

RESULT_LIMIT = 64 * 1024  # bytes of JSON (UTF-8) a run may publish as its `result`


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
    # The run's parameter values (secret ones in clear: never print them), by name.
    params: dict = field(default_factory=dict)
    # Trigger `chain`: the published result of the run that started this one (a fan-in: by job id).
    parent_result: Any = None
    parent_execution_id: str | None = None
    trigger: str = ""  # the record's trigger: schedule, run_now, retry, backfill, chain, url
    # Publishes the run's `result` (JSON, at most RESULT_LIMIT bytes); the last call wins.
    publish: Callable[[Any], None] = lambda value: None

    def owner_is_admin(self) -> bool:
        """Whether the job's owner is an admin now (read from the store: roles change)."""
        owner = self.datastore.users.get(self.user_id) if is_valid_id(self.user_id) else None
        return owner is not None and owner.get("role") == "admin"

    def owner_may_use(self, record: Mapping[str, Any] | None) -> bool:
        """Whether the job's owner may use `record` (a server): it is theirs, or they are an admin."""
        return record is not None and (record.get("user_id") == self.user_id or self.owner_is_admin())


class JobBase:
    """Subclass and implement `run`; describe arguments in `meta_info`."""

    # run() receives `params` and `parent_result` as keyword arguments when it names them, or
    # takes **kwargs and this is true; a class whose **kwargs are its own arguments sets it false
    # and reads self.context.params / parent_result.
    run_inputs_as_kwargs = True
    # What run() returns, when JSON, is the run's published result; false for a class whose
    # return value is text for the output only.
    result_from_return = True

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
