"""Runs executions: record `running`, run the job class, record `completed` or `failed`.

Every run happens on the runner's bounded thread pool, never on a request thread or the
scheduler's own thread. Recording is retried, so a datastore hiccup never stops the
scheduler; a run that cannot be recorded at all is logged and dropped.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import DuplicateKeyError
from texium.core.registry import JobRegistry
from texium.core.timeutil import to_iso, utcnow
from texium.jobs.base import JobContext, JobError

log = logging.getLogger("texium.runner")
OUTPUT_LIMIT = 1024 * 1024  # characters of output kept per execution
HIDDEN = ("occurrence_key",)
ACTIVE = ("scheduled", "running")


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

    def text(self) -> str:
        note = f"\n[output truncated at {OUTPUT_LIMIT} characters]\n" if self.truncated else ""
        return "".join(self.parts) + note


def _render(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    return json.dumps(result, indent=2, default=str) + "\n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExecutionRunner:
    def __init__(self, datastore: Datastore, registry: JobRegistry, pool_size: int,
                 job_config: Mapping[str, Any] | None = None,
                 hooks: Mapping[str, Callable[[], Any]] | None = None,
                 misfire_grace_time: int | None = 3600, record_retries: int = 5):
        self._ds = datastore
        self._registry = registry
        self._config = dict(job_config or {})
        self._hooks = dict(hooks or {})
        self._grace = misfire_grace_time
        self._retries = record_retries
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="texium-job")
        self._inflight: set[Future] = set()
        self._inflight_lock = threading.Lock()
        self._stdout = _capture_print()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()

    # -- creating executions ---------------------------------------------------------
    def _new_execution(self, job: dict, status: str, scheduled_at: datetime | None, occurrence_key: str | None, **extra) -> dict:
        execution_id = new_id()
        now = utcnow()
        return {
            "_id": execution_id, "job_id": job["_id"], "user_id": job.get("user_id"),
            "job_name": job.get("name"), "job_class_string": job.get("job_class_string"),
            "status": status, "output": "", "error": "", "scheduled_at": scheduled_at,
            "started_at": None, "completed_at": None, "created_at": now, "duration_ms": None,
            "hostname": self.hostname, "pid": self.pid,
            "occurrence_key": occurrence_key or f"manual:{execution_id}", **extra,
        }

    def run_now(self, job: dict) -> str:
        """Record a `scheduled` execution and queue it; returns its id at once."""
        execution = self._new_execution(job, "scheduled", utcnow(), None)
        self._ds.executions.insert(execution)
        self._submit(self._run_recorded, execution, job)
        return execution["_id"]

    def fire(self, job_id: str, run_times: list[datetime]) -> None:
        """Called on a pool thread by the scheduler for each due firing of a job."""
        job = self._retrying("read job", self._ds.jobs.get, job_id)
        if job is None or job.get("is_paused") or not job.get("is_enabled", True):
            return  # deleted, paused or disabled between being due and reaching a worker
        for run_time in run_times:
            late = utcnow() - run_time
            if self._grace is not None and late > timedelta(seconds=self._grace):
                log.warning("Job %s (%s) missed its %s run by %s", job_id, job.get("name"), to_iso(run_time), late)
                continue
            execution = self._new_execution(job, "scheduled", run_time, f"{job_id}@{to_iso(run_time)}")
            try:
                self._retrying("record execution", self._ds.executions.insert, execution)
            except DuplicateKeyError:
                log.info("Job %s run at %s already taken by another scheduler", job_id, to_iso(run_time))
                continue
            except Exception:
                continue  # already logged; the scheduler goes on
            self._run_recorded(execution, job)

    def record_skipped(self, job_id: str, run_times: list[datetime], reason: str) -> None:
        job = self._ds.jobs.get(job_id)
        if job is None:
            return
        for run_time in run_times:
            execution = self._new_execution(job, "skipped", run_time, None, error=reason, completed_at=utcnow())
            self._retrying("record skipped run", self._ds.executions.insert, execution)

    # -- running ---------------------------------------------------------------------
    def _submit(self, fn: Callable, *args: Any) -> None:
        future = self._pool.submit(fn, *args)
        with self._inflight_lock:
            self._inflight.add(future)
        future.add_done_callback(self._forget)

    def submit_fire(self, job_id: str, run_times: list[datetime], done: Callable[[Future], None]) -> None:
        future = self._pool.submit(self.fire, job_id, run_times)
        with self._inflight_lock:
            self._inflight.add(future)
        future.add_done_callback(self._forget)
        future.add_done_callback(done)

    def _forget(self, future: Future) -> None:
        with self._inflight_lock:
            self._inflight.discard(future)

    def _run_recorded(self, execution: dict, job: dict) -> None:
        execution_id = execution["_id"]
        started = utcnow()
        self._retrying("mark running", self._ds.executions.update, execution_id,
                       {"status": "running", "started_at": started})
        self._retrying("count run", self._ds.jobs.update, job["_id"],
                       {"last_run_time": started}, {"total_executions": 1})
        output = _Output()
        status, error = "completed", ""
        clock = time.monotonic()
        try:
            job_class = self._registry.resolve(job.get("job_class_string", ""))
            context = JobContext(
                execution_id=execution_id, job_id=job["_id"], job_name=job.get("name", ""),
                user_id=job.get("user_id"), datastore=self._ds, config=self._config,
                hooks=self._hooks, write=output.write,
            )
            self._stdout.capture(output.write)
            try:
                result = job_class(context).run(*job.get("pub_args", []), **job.get("pub_kwargs", {}))
            finally:
                self._stdout.capture(None)
            output.write(_render(result))
        except JobError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            status = "failed"
            error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
        duration_ms = int((time.monotonic() - clock) * 1000)
        log.info("Execution %s of job %s %s in %d ms", execution_id, job.get("name"), status, duration_ms)
        self._retrying("record result", self._ds.executions.update, execution_id, {
            "status": status, "output": output.text(), "error": error[:OUTPUT_LIMIT],
            "completed_at": utcnow(), "duration_ms": duration_ms,
        })

    def _retrying(self, what: str, fn: Callable, *args: Any) -> Any:
        delay = 0.2
        for attempt in range(1, self._retries + 1):
            try:
                return fn(*args)
            except DuplicateKeyError:
                raise
            except Exception as exc:
                if attempt == self._retries:
                    log.error("Could not %s after %d attempts: %s", what, attempt, exc)
                    raise
                log.warning("Could not %s (attempt %d): %s; retrying", what, attempt, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- start and stop --------------------------------------------------------------
    def abandon_orphans(self) -> int:
        """Executions this host left active when its process died become `abandoned`."""
        count = 0
        for execution in self._ds.executions.find({"status": {"$in": list(ACTIVE)}, "hostname": self.hostname}):
            pid = execution.get("pid")
            if isinstance(pid, int) and pid != self.pid and _pid_alive(pid):
                continue  # another live server on this host owns it
            self._ds.executions.update(execution["_id"], {
                "status": "abandoned", "completed_at": utcnow(),
                "error": f"The server running this execution (pid {pid}) stopped before it finished "
                         f"(found {execution['status']} at start-up).",
            })
            count += 1
        return count

    def shutdown(self, grace_seconds: float) -> int:
        """Wait up to `grace_seconds` for running executions; returns how many did not finish."""
        with self._inflight_lock:
            pending = set(self._inflight)
        _, not_done = wait(pending, timeout=grace_seconds) if pending else (set(), set())
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not_done:
            abandoned = self._ds.executions.update_many(
                {"status": {"$in": list(ACTIVE)}, "hostname": self.hostname, "pid": self.pid},
                {"status": "abandoned", "completed_at": utcnow(),
                 "error": f"The server shut down before this execution finished (waited {grace_seconds} s)."})
            log.warning("Shut down with %d executions unfinished (%d marked abandoned)", len(not_done), abandoned)
        return len(not_done)
