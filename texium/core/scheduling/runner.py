"""Runs one started execution: its job body, its output, and the record of how it ended.

The dispatcher (dispatch.py) decides when a run starts and moves its record to `running`; this
module runs the job class on that worker thread, with print() and the job's logger captured
into the run's output (secret values masked), and turns the outcome into the final fields of
the record and, when it failed with retries left, the record of its next attempt.

Stopping a run (timeout or cancel, see watchdog.py) sets its `context.cancelled`; a job that
has not returned `stop_grace` seconds later is recorded ended anyway and its thread left to
finish in the background (Python cannot kill a thread), counted as lingering in health.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from texium.core import parameters
from texium.core.datastore.base import Datastore
from texium.core.job import RESULT_LIMIT, JobContext, JobError, JobTimeout
from texium.core.registry import JobRegistry
from texium.core.scheduling.occurrences import CHAIN, RETRY, new_record, retry_key, trigger_of
from texium.core.security import secret_args
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.runner")
OUTPUT_LIMIT = 1024 * 1024  # characters of output kept per execution
MAX_RETRY_DELAY = 86400.0
# Where a run came from, kept by its retries (a chained run's retry still receives its parent's result).
LINEAGE = ("triggered_by", "parent_execution_id", "chain_depth")


class _ThreadOutput(io.TextIOBase):
    """sys.stdout that sends a job thread's print() to that execution's output."""

    def __init__(self, fallback):
        self._fallback = fallback
        self._local = threading.local()

    def capture(self, sink: Callable[[str], None] | None) -> None:
        self._local.sink = sink

    def write(self, text: str) -> int:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            return self._fallback.write(text)
        sink(text)
        return len(text)

    def flush(self) -> None:
        self._fallback.flush()


def _capture_print() -> _ThreadOutput:
    if not isinstance(sys.stdout, _ThreadOutput):
        sys.stdout = _ThreadOutput(sys.stdout)
    return sys.stdout


class _Output:
    def __init__(self):
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> None:
        if self.size >= OUTPUT_LIMIT:
            self.truncated = True
            return
        self.parts.append(text[: OUTPUT_LIMIT - self.size])
        self.size += len(self.parts[-1])
        self.truncated = self.truncated or len(text) > len(self.parts[-1])

    def text(self, secrets: list[tuple[str, str]] | None = None) -> str:
        """The output, with every text in `secrets` shown as ***."""
        note = f"\n[output truncated at {OUTPUT_LIMIT} characters]\n" if self.truncated else ""
        return secret_args.redact("".join(self.parts), secrets or [], self.truncated) + note


class _MaskedLogger(logging.LoggerAdapter):
    """A run's logger: its lines (and tracebacks) with the run's secret values shown as ***."""

    def __init__(self, logger: logging.Logger, secrets: list[tuple[str, str]]):
        super().__init__(logger, {})
        self._secrets = secrets

    def log(self, level, msg, *args, exc_info=None, stack_info=False, stacklevel=1, **kwargs):
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        text = secret_args.redact(text, self._secrets)
        self.logger.log(level, text, stack_info=stack_info, stacklevel=stacklevel + 1, **kwargs)


def _render(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    return json.dumps(result, indent=2, default=str) + "\n"


def _no_result(run: Run, why: str) -> None:
    if run.output is not None:
        run.output.write(f"\n[no result published: {why}; the run's status is not affected]\n")


def _chained(record: dict) -> bool:
    return trigger_of(record) == CHAIN or bool(record.get("parent_execution_id"))


def _run_inputs(instance: Any, params: dict | None, parent_result: Any, chained: bool) -> dict:
    """The keyword arguments `params` and `parent_result` that instance.run takes: those it
    names, or all when it takes **kwargs and its class says so (JobBase.run_inputs_as_kwargs).
    `params` only for a job with parameters and `parent_result` only for a chained run, so
    the jobs of before keep their arguments."""
    offered = {}
    if params is not None:
        offered["params"] = params
    if chained:
        offered["parent_result"] = parent_result
    if not offered:
        return {}
    try:
        signature = inspect.signature(instance.run).parameters
    except (TypeError, ValueError):
        return {}
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    any_keyword = getattr(instance, "run_inputs_as_kwargs", True) and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()
    )
    return {k: v for k, v in offered.items() if any_keyword or (k in signature and signature[k].kind in by_name)}


@dataclass(eq=False)
class Run:
    """One execution held by this node, from its claim to its end."""

    record: dict
    job: dict
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # "timeout" or "cancelled" once it was told to stop
    by: str = ""  # who cancelled it
    stop_asked: float = 0.0  # monotonic
    begun: bool = False  # its record is `running`
    clock: float = 0.0  # monotonic start
    deadline: float | None = None
    timeout: float | None = None
    output: _Output | None = None
    hidden: list = field(default_factory=list)  # secret values masked in output and error
    result: str | None = None  # the published result as JSON text (secret values masked)
    defaults: dict | None = None  # the declared defaults it ran with, when its record had no parameters
    published: int = 0  # output size last written
    published_at: float = 0.0
    ended: bool = False  # its final state is decided (by its thread, the watchdog or shutdown)
    lingering: bool = False  # recorded ended while its thread still runs
    duration_told: bool = False  # the watchdog announced it long-running (events/durations.py)

    @property
    def id(self) -> str:
        return self.record["_id"]


def retry_delay(job: dict, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: fixed, or doubling per attempt with +-25 % jitter."""
    base = float(job.get("retry_delay_seconds", 60) or 0)
    if job.get("retry_backoff", "exponential") != "exponential":
        return min(base, MAX_RETRY_DELAY)
    return min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY) * random.uniform(0.75, 1.25)


class JobRunner:
    """Runs job bodies; knows nothing of queues, slots or the store's records."""

    def __init__(
        self,
        datastore: Datastore,
        registry: JobRegistry,
        job_config: Mapping[str, Any] | None = None,
        hooks: Mapping[str, Callable[[], Any]] | None = None,
        processes: Any = None,
        secrets: SecretBox | None = None,
        default_timeout: float | None = None,
    ):
        self._ds = datastore
        self._registry = registry
        self._config = dict(job_config or {})
        self._hooks = dict(hooks or {})
        self._processes = processes
        self.secrets = secrets  # decrypts the jobs' secret arguments for their runs
        self._default_timeout = default_timeout or None
        self._stdout = _capture_print()

    def timeout_of(self, job: dict) -> float | None:
        return job.get("timeout_seconds") or self._default_timeout

    def execute(self, run: Run) -> tuple[str, str]:
        """Run the job body on this thread: (status, error)."""
        record, job = run.record, run.job
        output = run.output = _Output()
        run.clock = run.published_at = time.monotonic()
        run.timeout = self.timeout_of(job)
        run.deadline = run.clock + run.timeout if run.timeout else None
        try:
            secrets = secret_args.decrypt(job.get(secret_args.FIELD), self.secrets)
            params = self._params(run)
            run.hidden = secret_args.searched_values({**secrets, **parameters.secret_values(record, params)})
            parent_result = self._parent_result(record)
            instance, pub_args, pub_kwargs = self._instance(
                job,
                secrets,
                execution_id=record["_id"],
                write=output.write,
                processes=self._processes,
                cancelled=run.cancelled,
                timeout_seconds=run.timeout,
                params=params,
                parent_result=parent_result,
                parent_execution_id=record.get("parent_execution_id"),
                trigger=trigger_of(record),
                publish=lambda value: self._publish(run, value),
            )
            if run.hidden:
                instance.context.logger = _MaskedLogger(instance.context.logger, run.hidden)
            instance.check_owner(*pub_args, **pub_kwargs)
            inputs = _run_inputs(instance, params, parent_result, _chained(record))
            self._stdout.capture(output.write)
            try:
                result = instance.run(*pub_args, **{**pub_kwargs, **inputs})
            finally:
                self._stdout.capture(None)
            output.write(_render(result))
            if result is not None and getattr(instance, "result_from_return", True) and run.result is None:
                self._publish(run, result)
        except JobTimeout as exc:
            return "timeout", str(exc)
        except (JobError, secret_args.SecretsUnavailable) as exc:
            return "failed", str(exc)
        except Exception as exc:
            return "failed", f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
        return "completed", ""

    def _params(self, run: Run) -> dict | None:
        """The run's parameter values (secret ones opened); a run recorded without them (a
        scheduled one) gets the job's declared defaults. None when the job declares none."""
        if run.record.get("parameters") is not None:
            return parameters.values_of(run.record, self.secrets)
        if not run.job.get("parameters"):
            return None
        run.defaults = parameters.defaults(run.job["parameters"])
        return dict(run.defaults)

    def _parent_result(self, record: dict) -> Any:
        """What the run(s) that started this one published: one read by id (a fan-in: one read
        of the listed runs, as {upstream job id: its result})."""
        fan_in = (record.get("triggered_by") or {}).get("fan_in") if record.get("trigger") == CHAIN else None
        if fan_in:
            ids = [entry["execution_id"] for entry in fan_in]
            found = {doc["_id"]: doc for doc in self._ds.executions.find({"_id": {"$in": ids}}, limit=len(ids))}
            return {entry["job_id"]: (found.get(entry["execution_id"]) or {}).get("result") for entry in fan_in}
        parent_id = record.get("parent_execution_id")
        if not parent_id:
            return None
        return (self._ds.executions.get(parent_id) or {}).get("result")

    @staticmethod
    def _publish(run: Run, value: Any) -> None:
        """Keep `value` as the run's result: JSON of at most RESULT_LIMIT bytes, its secret
        values masked; anything else is left out with a line in the output saying why."""
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            _no_result(run, f"it is not JSON ({exc})")
            return
        size = len(text.encode("utf-8"))
        if size > RESULT_LIMIT:
            _no_result(run, f"{size} bytes of JSON, over the limit of {RESULT_LIMIT} bytes")
            return
        masked = secret_args.redact(text, run.hidden)
        if masked != text:
            try:
                json.loads(masked)
            except ValueError:
                _no_result(run, "it holds a secret value that cannot be masked in it")
                return
        run.result = masked

    def check_owner(self, job: dict) -> None:
        """Raise JobError when the owner of `job` (a document as it would be stored, secret
        arguments sealed) may not use its arguments: JobBase.check_owner, as before a run."""
        secrets = secret_args.decrypt(job.get(secret_args.FIELD), self.secrets)
        instance, pub_args, pub_kwargs = self._instance(job, secrets, execution_id="")
        instance.check_owner(*pub_args, **pub_kwargs)

    def _instance(self, job: dict, secrets: dict, execution_id: str, **context: Any) -> tuple[Any, list, dict]:
        """The job class of `job` made for one execution, and the arguments it receives."""
        pub_args, pub_kwargs = secret_args.reveal(job.get("pub_args", []), job.get("pub_kwargs", {}), secrets)
        job_class = self._registry.resolve(job.get("job_class_string", ""))
        instance = job_class(
            JobContext(
                execution_id=execution_id,
                job_id=job.get("_id"),
                job_name=job.get("name", ""),
                user_id=job.get("user_id"),
                datastore=self._ds,
                config=self._config,
                hooks=self._hooks,
                **context,
            )
        )
        return instance, pub_args, pub_kwargs

    def final_fields(self, run: Run, status: str, error: str, stop_grace: float, gave_up: bool) -> dict:
        """The record's fields for how the run ended (a stop request decides the status)."""
        if run.reason == "timeout":
            status = "timeout"
            error = f"Timed out after {run.timeout:g} s (timeout_seconds); the job was told to stop" + (
                f"\n{error}" if error else ""
            )
        elif run.reason == "cancelled":
            status = "cancelled"
            error = f"Cancelled by {run.by}" + (f"\n{error}" if error else "")
        if gave_up:
            error += (
                f"\nThe job did not stop within {stop_grace:g} s of being told to; its thread was left to "
                "finish in the background and its result is discarded."
            )
        seconds = time.monotonic() - run.clock
        fields = {
            "status": status,
            "output": run.output.text(run.hidden) if run.output else "",
            "error": secret_args.redact(error[:OUTPUT_LIMIT], run.hidden, len(error) > OUTPUT_LIMIT),
            "completed_at": utcnow(),
            "duration_ms": int(seconds * 1000),
        }
        if run.result is not None and not gave_up:
            fields["result"] = json.loads(run.result)
        if run.defaults is not None:
            fields["parameters"] = run.defaults
        return fields

    @staticmethod
    def next_attempt(run: Run, fields: dict) -> dict | None:
        """The record of the occurrence's next attempt, if this one failed and retries are left
        (`fields` become `retried`); held by no node: the first pass to claim it runs it."""
        attempt = int(run.record.get("attempt") or 1)
        if fields["status"] not in ("failed", "timeout") or attempt > int(run.job.get("retries") or 0):
            return None
        first = run.record.get("retry_of") or run.id
        due = utcnow() + timedelta(seconds=retry_delay(run.job, attempt))
        retry = new_record(
            run.job,
            "scheduled",
            due,
            RETRY,
            None,
            retry_key(first, attempt + 1),
            attempt=attempt + 1,
            retry_of=first,
            **parameters.carried(run.record),
            **{field: run.record[field] for field in LINEAGE if run.record.get(field) is not None},
        )
        fields["status"] = "retried"
        fields["next_attempt_id"] = retry["_id"]
        fields["error"] += (
            f"\nRetrying: attempt {retry['attempt']} of {int(run.job.get('retries') or 0) + 1} "
            f"at {to_iso(retry['scheduled_at'])} (execution {retry['_id']})."
        )
        return retry
