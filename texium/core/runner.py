"""Runs executions: mark `running`, run the job class, record `completed` or `failed`.

Every run happens on the runner's bounded thread pool, never on a request thread or the
scheduler's own thread. State changes go through the Recorder, so a job thread never waits
on the store and a failed write is retried, not lost.

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
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from texium.core import secret_args
from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import ServiceUnavailable
from texium.core.job import JobContext, JobError
from texium.core.metrics import Metrics
from texium.core.nodes import NodeIdentity
from texium.core.recorder import Recorder
from texium.core.registry import JobRegistry
from texium.core.secrets import SecretBox
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.runner")
OUTPUT_LIMIT = 1024 * 1024  # characters of output kept per execution
HIDDEN = ("occurrence_key",)


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
    ):
        self._ds = datastore
        self.metrics = metrics if metrics is not None else Metrics()
        self.secrets = secrets  # decrypts the jobs' secret arguments for their runs
        self._registry = registry
        self._recorder = recorder
        self.identity = identity
        self._max_instances = max_instances
        self._config = dict(job_config or {})
        self._hooks = dict(hooks or {})
        self._processes = processes
        self._peers_alive = peers_alive
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="texium-job")
        self._lock = threading.Lock()
        self._inflight: dict[Future, dict] = {}  # queued or running -> its execution
        self._running: dict[str, int] = {}  # job id -> runs started here and not yet ended
        self._abandoned: set[str] = set()  # given up at shutdown: a late result must not undo that
        self._waiting: dict[str, list[tuple[dict, dict]]] = {}  # job id -> run-nows waiting their turn
        self.accepting = True
        self._stdout = _capture_print()

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
        try:
            future = self._pool.submit(self._execute, execution, job)
        except RuntimeError:  # the pool is shut down: the run is over before it began
            self._abandon(execution, "The server was shutting down when this run was due; it did not start.")
            return
        with self._lock:
            self._inflight[future] = execution
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._inflight.pop(future, None)

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

    def _end(self, execution: dict, status: str, error: str, reason: str) -> None:
        """A run that never started: recorded with the reason, and not counted as a run."""
        self.metrics.run_skipped(execution.get("job_class_string"), reason)
        self._recorder.execution(execution["_id"], {"status": status, "error": error, "completed_at": utcnow()})
        self._recorder.job(execution["job_id"], inc={"total_executions": -1})

    def _abandon(self, execution: dict, reason: str) -> None:
        with self._lock:
            self._abandoned.add(execution["_id"])
        self.metrics.run_abandoned(execution.get("job_class_string"))
        self._recorder.execution(execution["_id"], {"status": "abandoned", "error": reason, "completed_at": utcnow()})

    # -- running ---------------------------------------------------------------------
    def _execute(self, execution: dict, job: dict) -> None:
        started = utcnow()
        job_id = job["_id"]
        manual = execution["occurrence_key"].startswith("manual:")
        if not manual and (started - execution["scheduled_at"]).total_seconds() > 1:
            # It waited for a thread: the job may have been paused or deleted meanwhile.
            try:
                job = self._ds.jobs.get(job_id)
            except Exception as exc:  # the store is down: run as the scheduler read it
                log.warning("Could not re-read job %s before its run: %s", job_id, exc)
            if job is None or job.get("is_paused") or not job.get("is_enabled", True):
                what = "deleted" if job is None else "paused" if job.get("is_paused") else "disabled"
                self._end(execution, "skipped", f"Skipped: the job was {what} before this run started", what)
                return
        with self._lock:  # decide and take the slot at once: two runs of a job cannot both pass
            local = self._running.get(job_id, 0)
            free = local < self._max_instances
            if free:
                self._running[job_id] = local + 1
            elif manual:
                self._waiting.setdefault(job_id, []).append((execution, job))
        if free and local + self._others_running(job_id) >= self._max_instances:
            self._release(job_id)
            free = False
            if manual:  # only other nodes hold the slots: look again shortly
                threading.Timer(0.5, self.dispatch, (execution, job)).start()
        if not free:
            if not manual:
                self._end(
                    execution,
                    "skipped",
                    f"Skipped: the previous run of this job was still in progress "
                    f"(at most {self._max_instances} running at once)",
                    "max_instances",
                )
            return
        try:
            self._run(execution, job, started)
        finally:
            self._release(job_id)

    def _release(self, job_id: str) -> None:
        """End a run's hold on its job's slot and start the next run-now waiting for it."""
        with self._lock:
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
            self.dispatch(*following)

    def _run(self, execution: dict, job: dict, started: datetime) -> None:
        execution_id = execution["_id"]
        self._recorder.execution(
            execution_id, {"status": "running", "started_at": started, "node_id": self.identity.node_id}
        )
        self._recorder.job(job["_id"], fields={"last_run_time": started})
        class_string = execution.get("job_class_string")
        scheduled = not execution["occurrence_key"].startswith("manual:")
        self.metrics.run_started(class_string, started - execution["scheduled_at"] if scheduled else None)
        output = _Output()
        status, error = "completed", ""
        hidden: list[tuple[str, str]] = []  # the secret values, masked in the output, the error and the log lines
        clock = time.monotonic()
        try:
            secrets = secret_args.decrypt(job.get(secret_args.FIELD), self.secrets)
            hidden = secret_args.searched_values(secrets)
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
            )
            if hidden:
                context.logger = _MaskedLogger(context.logger, hidden)
            self._stdout.capture(output.write)
            try:
                result = job_class(context).run(*pub_args, **pub_kwargs)
            finally:
                self._stdout.capture(None)
            output.write(_render(result))
        except (JobError, secret_args.SecretsUnavailable) as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            status = "failed"
            error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
        duration_ms = int((time.monotonic() - clock) * 1000)
        log.info("Execution %s of job %s %s in %d ms", execution_id, job.get("name"), status, duration_ms)
        with self._lock:
            abandoned = execution_id in self._abandoned
        self.metrics.run_ended(class_string, None if abandoned else status, time.monotonic() - clock)
        if abandoned:  # recorded (and counted) abandoned at shutdown: a late result must not undo that
            return
        self._recorder.execution(
            execution_id,
            {
                "status": status,
                "output": output.text(hidden),
                "error": secret_args.redact(error[:OUTPUT_LIMIT], hidden, len(error) > OUTPUT_LIMIT),
                "completed_at": utcnow(),
                "duration_ms": duration_ms,
            },
        )

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
            pending = list(self._inflight)
        _, not_done = wait(pending, timeout=grace_seconds) if pending else (set(), set())
        with self._lock:
            inflight = dict(self._inflight)
            waiting = [execution for queue in self._waiting.values() for execution, _ in queue]
            self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for execution in waiting:
            self._abandon(
                execution,
                "The server shut down before this run started (it was waiting for the previous run of its job to end).",
            )
        unfinished = len(waiting)
        for future in not_done:
            execution = inflight.get(future)
            if execution is None or (future.done() and not future.cancelled()):
                continue  # it finished in the meantime
            unfinished += 1
            if future.cancelled():
                self._abandon(execution, "The server shut down before this run started.")
            else:
                self._abandon(
                    execution, f"The server shut down before this execution finished (waited {grace_seconds:g} s)."
                )
        if unfinished:
            killed = self._processes.kill_all("shutdown") if self._processes is not None else []
            log.warning(
                "Shut down with %d executions unfinished, marked abandoned%s",
                unfinished,
                f"; killed {len(killed)} script process groups" if killed else "",
            )
        return unfinished
