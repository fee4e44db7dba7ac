"""Runs executions: mark `running`, run the job class, record how it ended.

Every run happens on the runner's bounded thread pool, never on a request thread or the
scheduler's own thread. State changes go through the Recorder, so a job thread never waits
on the store and a failed write is retried, not lost.

A watchdog thread looks after the runs of this node: it publishes their output so far (the
API shows it while the run goes), stops a run past its time limit and applies cancel requests
that other nodes wrote to the store. Stopping sets the run's `context.cancelled`; a job that
has not returned STOP_GRACE later is recorded ended anyway and its thread left to finish in the
background (Python cannot kill a thread), counted as lingering in health.

A run that fails or times out with retries left becomes `retried`, and its next attempt is a
new `scheduled` record in the store, due after the retry delay and claimed by whichever node's
scheduler pass gets it first (see TexiumScheduler), so a pending retry survives a restart.

One concurrency rule for scheduled firings and run-now alike: at most `max_instances` runs of
one job at once (on all nodes), counting only runs that have started (a run waiting for a pool
thread does not count). A firing over the limit is recorded `skipped` (the next firing comes
anyway); a run-now over it waits, `scheduled`, and starts when a run of that job ends (a
person asked for it: it is queued, never dropped).
"""

from __future__ import annotations

import io
import json
import logging
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from texium.core import secret_args
from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import ServiceUnavailable
from texium.core.figures import ACTIVE
from texium.core.job import JobContext, JobError, JobTimeout
from texium.core.metrics import Metrics
from texium.core.nodes import NodeIdentity
from texium.core.recorder import Recorder
from texium.core.registry import JobRegistry
from texium.core.secrets import SecretBox
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.runner")
OUTPUT_LIMIT = 1024 * 1024  # characters of output kept per execution
HIDDEN = ("occurrence_key",)
WATCH_TICK = 0.1  # seconds between the watchdog's looks at the runs
PUBLISH_SECONDS = 0.5  # output so far is written at most this often per run
CANCEL_POLL_SECONDS = 1.0  # how often the store is asked for cancel requests (from any node)
MAX_RETRY_DELAY = 86400.0


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


@dataclass(eq=False)
class _Run:
    """One execution dispatched on this node: its stop switch, its output so far, how it ended."""

    execution: dict
    job: dict
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # "timeout" or "cancelled" once it was told to stop
    by: str = ""  # who cancelled it
    stop_asked: float = 0.0  # monotonic
    begun: bool = False  # its job started (after this, only a stop can end it early)
    clock: float = 0.0  # monotonic start
    deadline: float | None = None
    timeout: float | None = None
    output: _Output | None = None
    hidden: list = field(default_factory=list)  # secret values masked in output and error
    published: int = 0  # output size last written
    published_at: float = 0.0
    future: Future | None = None  # its latest hand-over to the pool
    holds_slot: bool = False  # counts against the job's max_instances on this node
    ended: bool = False  # its final state is recorded (by its thread, the watchdog or shutdown)
    lingering: bool = False  # recorded ended while its thread still runs

    @property
    def id(self) -> str:
        return self.execution["_id"]


def retry_delay(job: dict, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: fixed, or doubling per attempt with +-25 % jitter."""
    base = float(job.get("retry_delay_seconds", 60) or 0)
    if job.get("retry_backoff", "exponential") != "exponential":
        return min(base, MAX_RETRY_DELAY)
    return min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY) * random.uniform(0.75, 1.25)


class ExecutionRunner:
    def __init__(
        self,
        datastore: Datastore,
        registry: JobRegistry,
        recorder: Recorder,
        identity: NodeIdentity,
        pool_size: int,
        max_instances: int = 1,
        job_config: Mapping[str, Any] | None = None,
        hooks: Mapping[str, Callable[[], Any]] | None = None,
        processes: Any = None,
        peers_alive: Callable[[], int] = lambda: 0,
        secrets: SecretBox | None = None,
        metrics: Metrics | None = None,
        default_timeout: float | None = None,
        stop_grace: float = 5.0,
        alerts: Any = None,
    ):
        self._ds = datastore
        self.metrics = metrics if metrics is not None else Metrics()
        self.secrets = secrets  # decrypts the jobs' secret arguments for their runs
        self._registry = registry
        self._recorder = recorder
        self.identity = identity
        self.pool_size = pool_size
        self._max_instances = max_instances
        self._config = dict(job_config or {})
        self._hooks = dict(hooks or {})
        self._processes = processes
        self._peers_alive = peers_alive
        self._default_timeout = default_timeout or None
        self._stop_grace = stop_grace
        self.alerts = alerts  # observes every final outcome (texium.core.alerts.Alerts), or None
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="texium-job")
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # execution id -> dispatched here, not yet over
        self._started: dict[str, _Run] = {}  # the ones whose job has begun: what the watchdog watches
        self._running: dict[str, int] = {}  # job id -> runs started here and holding a slot
        self._waiting: dict[str, list[_Run]] = {}  # job id -> run-nows and retries waiting their turn
        self.accepting = True
        self._stdout = _capture_print()
        self._watching = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="texium-watchdog", daemon=True)
        self._watchdog.start()

    # -- creating executions ---------------------------------------------------------
    def new_execution(
        self, job: dict, status: str, scheduled_at: datetime | None, occurrence_key: str | None = None, **extra
    ) -> dict:
        execution_id = new_id()
        me = self.identity
        return {
            "_id": execution_id,
            "job_id": job["_id"],
            "user_id": job.get("user_id"),
            "job_name": job.get("name"),
            "job_class_string": job.get("job_class_string"),
            "status": status,
            "output": "",
            "error": "",
            "scheduled_at": scheduled_at,
            "started_at": None,
            "completed_at": None,
            "created_at": utcnow(),
            "duration_ms": None,
            "node_id": me.node_id,
            "hostname": me.hostname,
            "pid": me.pid,
            "attempt": 1,
            "retry_of": None,
            "next_attempt_id": None,
            "cancel_requested_at": None,
            "cancelled_by": None,
            **extra,
            # Last, so the embedded store can hand out the document without it by slicing text.
            "occurrence_key": occurrence_key or f"manual:{execution_id}",
        }

    def run_now(self, job: dict) -> str:
        """Record a `scheduled` execution and queue it; returns its id at once."""
        if not self.accepting:
            raise ServiceUnavailable("The server is shutting down and accepts no new runs; try another node")
        execution = self.new_execution(job, "scheduled", utcnow())
        self._ds.executions.insert(execution)
        self.count_run(job["_id"])
        self.dispatch(execution, job)
        return execution["_id"]

    def count_run(self, job_id: str) -> None:
        """The job's `total_executions` counts every execution record that is a run."""
        self._recorder.job(job_id, inc={"total_executions": 1})

    def dispatch(self, execution: dict, job: dict) -> None:
        """Queue a recorded `scheduled` execution on the pool (never blocks)."""
        with self._lock:
            run = self._runs.setdefault(execution["_id"], _Run(execution, job))
        try:
            run.future = self._pool.submit(self._execute, run)
        except RuntimeError:  # the pool is shut down: the run is over before it began
            self._abandon(run, "The server was shutting down when this run was due; it did not start.")

    def _drop(self, run: _Run) -> None:
        """The run is over here and no thread of ours is in it any more."""
        with self._lock:
            self._forget(run)

    def _forget(self, run: _Run) -> None:  # with the lock held
        if self._runs.get(run.id) is run:
            del self._runs[run.id]
        self._started.pop(run.id, None)

    def outcome(self, execution: dict, job: dict) -> None:
        """Tell the alerts about a final outcome (a run's, or a `missed` record's) of `job`."""
        if self.alerts is not None:
            self.alerts.observe(execution["job_id"], execution, job.get("alert_state"))

    # -- the concurrency rule ----------------------------------------------------------
    def _others_running(self, job_id: str) -> int:
        """Runs of a job started by other nodes (asked of the store only when there are any)."""
        if not self._peers_alive():
            return 0
        try:
            return self._ds.executions.count(
                {"job_id": job_id, "status": "running", "node_id": {"$ne": self.identity.node_id}}
            )
        except Exception as exc:
            log.warning("Could not count other nodes' runs of job %s: %s", job_id, exc)
            return 0

    def _claim_end(self, run: _Run) -> bool:
        """Whoever gets True records the run's end; everyone else leaves it alone."""
        with self._lock:
            if run.ended:
                return False
            run.ended = True
            return True

    def end_unstarted(self, execution: dict, status: str, error: str, reason: str) -> None:
        """A run that never started and is not a run after all (`skipped`): recorded with the
        reason, and taken off the job's total_executions."""
        self.metrics.run_skipped(execution.get("job_class_string"), reason)
        self._recorder.execution(execution["_id"], {"status": status, "error": error, "completed_at": utcnow()})
        self._recorder.job(execution["job_id"], inc={"total_executions": -1})

    def _abandon(self, run: _Run, reason: str) -> None:
        if not self._claim_end(run):
            return
        self.metrics.run_abandoned(run.execution.get("job_class_string"))
        self._recorder.execution(run.id, {"status": "abandoned", "error": reason, "completed_at": utcnow()})

    # -- running ---------------------------------------------------------------------
    def _execute(self, run: _Run) -> None:
        execution, job = run.execution, run.job
        if run.ended:  # cancelled while it waited
            self._drop(run)
            return
        started = utcnow()
        job_id = job["_id"]
        kind = execution["occurrence_key"].split(":", 1)[0]
        manual = kind == "manual"
        queues = manual or kind == "retry"  # asked for by a person or a retry: wait a turn, never skip
        if not manual and (started - execution["scheduled_at"]).total_seconds() > 1:
            # It waited for a thread: the job may have been paused or deleted meanwhile.
            try:
                job = run.job = self._ds.jobs.get(job_id)
            except Exception as exc:  # the store is down: run as the scheduler read it
                log.warning("Could not re-read job %s before its run: %s", job_id, exc)
            if job is None or job.get("is_paused") or not job.get("is_enabled", True):
                what = "deleted" if job is None else "paused" if job.get("is_paused") else "disabled"
                if self._claim_end(run):
                    self.end_unstarted(
                        execution, "skipped", f"Skipped: the job was {what} before this run started", what
                    )
                self._drop(run)
                return
        with self._lock:  # decide and take the slot at once: two runs of a job cannot both pass
            if run.ended:  # cancelled while it waited
                self._forget(run)
                return
            local = self._running.get(job_id, 0)
            free = local < self._max_instances
            if free:
                self._running[job_id] = local + 1
                run.holds_slot = run.begun = True
                self._started[run.id] = run
            elif queues:
                self._waiting.setdefault(job_id, []).append(run)
        if free and local + self._others_running(job_id) >= self._max_instances:
            with self._lock:
                run.begun = False
                self._started.pop(run.id, None)
            self._release(run)
            free = False
            if queues:  # only other nodes hold the slots: look again shortly
                threading.Timer(0.5, self.dispatch, (execution, job)).start()
        if not free:
            if not queues and self._claim_end(run):
                self.end_unstarted(
                    execution,
                    "skipped",
                    f"Skipped: the previous run of this job was still in progress "
                    f"(at most {self._max_instances} running at once)",
                    "max_instances",
                )
                self._drop(run)
            return
        try:
            self._run(run, started)
        finally:
            self._release(run, done=True)

    def _release(self, run: _Run, done: bool = False) -> None:
        """End a run's hold on its job's slot and start the next run waiting for it; `done`:
        its thread is out of it, so it is forgotten too."""
        job_id = run.job["_id"]
        with self._lock:
            if done:
                self._forget(run)
            if not run.holds_slot:
                return
            run.holds_slot = False
            left = self._running[job_id] - 1
            if left:
                self._running[job_id] = left
            else:
                del self._running[job_id]
            waiting = self._waiting.get(job_id)
            following = waiting.pop(0) if waiting else None
            if waiting == []:
                del self._waiting[job_id]
        if following is not None:
            self.dispatch(following.execution, following.job)

    def _run(self, run: _Run, started: datetime) -> None:
        execution, job = run.execution, run.job
        execution_id = execution["_id"]
        timeout = job.get("timeout_seconds") or self._default_timeout
        self._recorder.execution(
            execution_id, {"status": "running", "started_at": started, "node_id": self.identity.node_id}
        )
        self._recorder.job(job["_id"], fields={"last_run_time": started})
        class_string = execution.get("job_class_string")
        scheduled = execution["occurrence_key"].split(":", 1)[0] not in ("manual", "retry")
        self.metrics.run_started(class_string, started - execution["scheduled_at"] if scheduled else None)
        output = run.output = _Output()
        status, error = "completed", ""
        run.clock = run.published_at = time.monotonic()
        run.timeout = timeout
        run.deadline = run.clock + timeout if timeout else None
        try:
            secrets = secret_args.decrypt(job.get(secret_args.FIELD), self.secrets)
            run.hidden = secret_args.searched_values(secrets)
            pub_args, pub_kwargs = secret_args.reveal(job.get("pub_args", []), job.get("pub_kwargs", {}), secrets)
            job_class = self._registry.resolve(job.get("job_class_string", ""))
            context = JobContext(
                execution_id=execution_id,
                job_id=job["_id"],
                job_name=job.get("name", ""),
                user_id=job.get("user_id"),
                datastore=self._ds,
                config=self._config,
                hooks=self._hooks,
                write=output.write,
                processes=self._processes,
                cancelled=run.cancelled,
                timeout_seconds=timeout,
            )
            if run.hidden:
                context.logger = _MaskedLogger(context.logger, run.hidden)
            self._stdout.capture(output.write)
            try:
                result = job_class(context).run(*pub_args, **pub_kwargs)
            finally:
                self._stdout.capture(None)
            output.write(_render(result))
        except JobTimeout as exc:
            status, error = "timeout", str(exc)
        except (JobError, secret_args.SecretsUnavailable) as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            status = "failed"
            error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
        self._finish(run, status, error)

    def _finish(self, run: _Run, status: str, error: str, gave_up: bool = False) -> None:
        """Record how a started run ended, once: from its own thread, or from the watchdog when
        the job did not stop in time (`gave_up`: its thread lingers and its result is dropped)."""
        seconds = time.monotonic() - run.clock
        with self._lock:
            if run.ended:
                if run.lingering:  # the thread the watchdog gave up on has returned at last
                    run.lingering = False
                    log.warning("Execution %s's job returned %.1f s after its run was recorded ended", run.id, seconds)
                return
            run.ended = True
            run.lingering = gave_up
        execution, job = run.execution, run.job
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
                f"\nThe job did not stop within {self._stop_grace:g} s of being told to; its thread was left to "
                "finish in the background and its result is discarded."
            )
            self._release(run)  # its thread still runs, but the run is over: the next one may start
        duration_ms = int(seconds * 1000)
        log.info("Execution %s of job %s %s in %d ms", run.id, job.get("name"), status, duration_ms)
        fields = {
            "status": status,
            "output": run.output.text(run.hidden) if run.output else "",
            "error": secret_args.redact(error[:OUTPUT_LIMIT], run.hidden, len(error) > OUTPUT_LIMIT),
            "completed_at": utcnow(),
            "duration_ms": duration_ms,
        }
        retry = self._next_attempt(run, status)
        if retry is not None:
            fields["status"] = "retried"
            fields["next_attempt_id"] = retry["_id"]
            fields["error"] += (
                f"\nRetrying: attempt {retry['attempt']} of {int(job.get('retries') or 0) + 1} "
                f"at {to_iso(retry['scheduled_at'])} (execution {retry['_id']})."
            )
        self.metrics.run_ended(execution.get("job_class_string"), fields["status"], seconds)
        self._recorder.execution(run.id, fields)
        if retry is not None:
            self._recorder.insert(retry)
            self.count_run(job["_id"])
        else:
            self.outcome({**execution, **fields}, job)

    def _next_attempt(self, run: _Run, status: str) -> dict | None:
        """The record of the occurrence's next attempt, if this one failed and retries are left."""
        attempt = int(run.execution.get("attempt") or 1)
        if status not in ("failed", "timeout") or attempt > int(run.job.get("retries") or 0):
            return None
        first = run.execution.get("retry_of") or run.id
        due = utcnow() + timedelta(seconds=retry_delay(run.job, attempt))
        return self.new_execution(
            run.job,
            "scheduled",
            due,
            f"retry:{first}:{attempt + 1}",
            attempt=attempt + 1,
            retry_of=first,
            node_id=None,  # no node's yet: the first scheduler pass to claim it runs it
        )

    # -- stopping runs -----------------------------------------------------------------
    def cancel(self, execution_id: str, by: str) -> str | None:
        """Stop a run of this node: "ended" (it had not started: recorded cancelled now),
        "stopping" (told to stop; it ends within STOP_GRACE), or None if it is not ours."""
        with self._lock:
            run = self._runs.get(execution_id)
            if run is None or run.ended:
                return None if run is None else "ended"
            if not run.begun:
                run.ended = True
        if not run.begun:
            run.by = by
            self._recorder.execution(
                execution_id,
                {"status": "cancelled", "error": f"Cancelled by {by} before it started", "completed_at": utcnow()},
            )
            return "ended"
        self._stop(run, "cancelled", by)
        return "stopping"

    def _stop(self, run: _Run, reason: str, by: str = "") -> None:
        with self._lock:
            if run.reason or run.ended:
                return
            run.reason, run.by, run.stop_asked = reason, by, time.monotonic()
        run.cancelled.set()
        log.info("Execution %s: told to stop (%s%s)", run.id, reason, f" by {by}" if by else "")

    @property
    def lingering(self) -> int:
        """Job threads still running after their runs were recorded ended."""
        with self._lock:
            return sum(1 for run in self._started.values() if run.lingering)

    # -- the watchdog ------------------------------------------------------------------
    def _watch(self) -> None:
        next_poll = 0.0
        while not self._watching.wait(WATCH_TICK):
            try:
                now = time.monotonic()
                with self._lock:
                    started = [run for run in self._started.values() if not run.ended]
                    waiting = bool(self._runs)
                for run in started:
                    self._look_at(run, now)
                if waiting and now >= next_poll:
                    next_poll = now + CANCEL_POLL_SECONDS
                    self._apply_cancel_requests()
            except Exception:  # a bad moment must not stop the watching for good
                log.exception("The run watchdog hit an error; it goes on")

    def _look_at(self, run: _Run, now: float) -> None:
        if not run.begun or run.output is None:
            return
        if not run.reason and run.deadline is not None and now >= run.deadline:
            self._stop(run, "timeout")
        elif run.reason and now - run.stop_asked >= self._stop_grace:
            self._finish(run, "failed", "", gave_up=True)
        elif run.output.size != run.published and now - run.published_at >= PUBLISH_SECONDS:
            size, text = run.output.size, run.output.text(run.hidden)
            with self._lock:  # never after the final record: that one has the whole output
                if not run.ended:
                    run.published, run.published_at = size, now
                    self._recorder.execution(run.id, {"output": text})

    def _apply_cancel_requests(self) -> None:
        """Cancel requests written to the store (by any node's API) for runs of this node."""
        mine = {"node_id": self.identity.node_id, "status": {"$in": list(ACTIVE)}}
        try:
            asked = self._ds.executions.find({**mine, "cancel_requested_at": {"$ne": None}})
        except Exception as exc:
            log.warning("Could not read cancel requests: %s", getattr(exc, "detail", exc))
            return
        for doc in asked:
            self.cancel(doc["_id"], doc.get("cancelled_by") or "unknown")  # None if it is not here (yet)

    # -- start and stop --------------------------------------------------------------
    def reap_stale_scripts(self) -> int:
        """Scripts an earlier server process on this host left running: kill their process
        groups and record their executions `abandoned` saying so. Returns how many."""
        if self._processes is None:
            return 0
        reaped = self._processes.reap_stale()
        for entry in reaped:
            what = "was killed" if entry.get("killed") else "had already ended"
            self._ds.executions.update_many(
                {"_id": entry["execution_id"], "status": {"$in": ["scheduled", "running"]}},
                {
                    "status": "abandoned",
                    "completed_at": utcnow(),
                    "error": f"The server running this execution stopped before it finished; its script's "
                    f"process group {entry.get('pgid')} {what} when the server started again.",
                },
            )
        if reaped:
            log.warning("Found %d scripts left by an earlier server process on this host; stopped them", len(reaped))
        return len(reaped)

    def shutdown(self, grace_seconds: float) -> int:
        """Refuse new runs, wait up to `grace_seconds` for the ones in flight, then mark every run
        that did not finish `abandoned` (killing the process groups of scripts still running).
        Returns how many runs did not finish."""
        self.accepting = False
        with self._lock:
            inflight = {run.future: run for run in self._runs.values() if run.future is not None}
        _, not_done = wait(inflight, timeout=grace_seconds) if inflight else (set(), set())
        with self._lock:
            waiting = [run for queue in self._waiting.values() for run in queue if not run.ended]
            self._waiting.clear()
        self._watching.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for run in waiting:
            self._abandon(
                run,
                "The server shut down before this run started (it was waiting for the previous run of its job to end).",
            )
        unfinished = len(waiting)
        for future in not_done:
            run = inflight.get(future)
            if run is None or run.ended or (future.done() and not future.cancelled()):
                continue  # it finished in the meantime
            unfinished += 1
            if future.cancelled():
                self._abandon(run, "The server shut down before this run started.")
            else:
                self._abandon(run, f"The server shut down before this execution finished (waited {grace_seconds:g} s).")
        lingering = self.lingering
        if lingering:
            log.warning("%d job threads that ignored a stop request are still running; not waiting for them", lingering)
        if unfinished:
            killed = self._processes.kill_all("shutdown") if self._processes is not None else []
            log.warning(
                "Shut down with %d executions unfinished, marked abandoned%s",
                unfinished,
                f"; killed {len(killed)} script process groups" if killed else "",
            )
        return unfinished + lingering  # threads still running: the process must not wait for them
