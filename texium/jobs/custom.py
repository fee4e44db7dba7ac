"""CustomScriptJob: run an executable from SCRIPTS_DIR, safely.

* Only regular, executable files whose real path lies inside SCRIPTS_DIR run: `../x`,
  absolute paths and symlinks leading out are refused.
* No shell: the parameters become `--key value` arguments and a JSON document on stdin.
* The script runs in its own session; on its `timeout`, or when the run is cancelled or passes
  the job's time limit (`context.cancelled`), the whole process group is terminated (SIGTERM,
  then SIGKILL), children included, and so are descendants that left the group (setsid, a
  daemon's double fork): see texium.core.scheduling.processes.
* stdout goes to the execution's output as it arrives (so it can be followed while the script
  runs); stdout and stderr are each kept up to OUTPUT_LIMIT bytes; the rest is drained and counted.
* The environment is minimal (no settings, no credentials of the server) plus TEXIUM_* ids and
  the run's inputs: TEXIUM_PARAM_<NAME> for its parameters (never on the command line),
  TEXIUM_TRIGGER, TEXIUM_PARENT_EXECUTION_ID and, for a chained run, TEXIUM_PARENT_RESULT.
* A stdout line `::texium-result {json}` publishes the run's result (the last one wins).
* When the runner provides a ProcessRegistry as `context.processes`, the group is tracked
  while the script runs, so the server can kill it if it stops (or restarts) before the end.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

from texium.core.scheduling.processes import ProcessRegistry, create_time_of, terminate
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError, JobTimeout

OUTPUT_LIMIT = 1 << 20  # bytes per stream
DEFAULT_TIMEOUT = 300.0  # only when the job has no time limit of its own (context.timeout_seconds)
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
LINGER = 2.0  # seconds to wait for children still holding the pipes after the script exited
POLL = 0.1  # seconds between looks at context.cancelled while the script runs
CONTROL_KEYS = ("timeout",)
_PARAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESULT_PREFIX = "::texium-result "
_ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


class _Capture:
    """Read a pipe to the end, keeping the first `limit` bytes.

    With a `sink`, the kept bytes are not stored but sent to it as text as they arrive (an
    incremental decoder, so a character split across two reads comes out whole).
    """

    def __init__(self, pipe, limit: int, sink=None):
        self.pipe = pipe
        self.limit = limit
        self.sink = sink
        self.streaming = sink is not None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.last = ""  # the last text sent to the sink
        self.chunks: list[bytes] = []
        self.kept = 0
        self.total = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
                if not chunk:
                    break
                self.total += len(chunk)
                room = self.limit - self.kept
                if room > 0:
                    piece = chunk[:room]
                    self.kept += len(piece)
                    if not self.streaming:
                        self.chunks.append(piece)
                    else:
                        self._send(self.decoder.decode(piece))
        except (OSError, ValueError):
            pass
        finally:
            if self.streaming:
                self._send(self.decoder.decode(b"", final=True))

    def _send(self, text: str) -> None:
        if not text or self.sink is None:
            return
        try:
            self.sink(text)
            self.last = text
        except Exception:  # a broken sink must not stop the draining (the script would block)
            self.sink = None

    def note(self, stream: str, before: str) -> str:
        """The truncation note (on a line of its own after `before`), or '' when all was kept."""
        if self.total <= self.kept:
            return ""
        return ("\n" if before and not before.endswith("\n") else "") + (
            f"[{stream} truncated: showing the first {self.kept} of {self.total} bytes; "
            f"the limit is {self.limit} bytes]\n"
        )

    def text(self, stream: str) -> str:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        return text + self.note(stream, text)


class _ResultLine:
    """Follows stdout as it arrives and keeps the last `::texium-result {json}` line's JSON text."""

    def __init__(self, sink):
        self._sink = sink
        self._line: str | None = ""  # the current line while it may be a result line, else None
        self.text: str | None = None

    def __call__(self, text: str) -> None:
        self._sink(text)
        *ended, rest = text.split("\n")
        for piece in ended:
            self._add(piece)
            if self._line is not None and self._line.startswith(RESULT_PREFIX):
                self.text = self._line[len(RESULT_PREFIX) :].strip()
            self._line = ""
        self._add(rest)

    def _add(self, piece: str) -> None:
        if self._line is None:
            return
        self._line += piece
        if not RESULT_PREFIX.startswith(self._line[: len(RESULT_PREFIX)]):
            self._line = None  # not a result line: skipped to its end

    def publish(self, context) -> None:
        """Hand the kept line to the runner (end of output counts as the end of a last line)."""
        if self._line is not None and self._line.startswith(RESULT_PREFIX):
            self.text = self._line[len(RESULT_PREFIX) :].strip()
        if self.text is None:
            return
        try:
            value = json.loads(self.text)
        except ValueError as exc:
            context.write(f"[no result published: the last ::texium-result line is not JSON ({exc})]\n")
            return
        context.publish(value)


def resolve_script(scripts_dir: str, name) -> str:
    """The real path of `name` inside `scripts_dir`, or JobError saying why not."""
    name = _util.require_str("script_name", name, max_len=4096)
    if "\x00" in name:
        raise JobError("script_name must not contain NUL characters")
    if os.path.isabs(name) or name.startswith("~"):
        raise JobError(f"script_name must be relative to SCRIPTS_DIR, not an absolute path: {name!r}")
    if not os.path.isdir(scripts_dir):
        raise JobError(f"SCRIPTS_DIR {scripts_dir} does not exist")
    base = os.path.realpath(scripts_dir)
    real = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, real]) != base or real == base:
        raise JobError(f"script_name {name!r} leaves SCRIPTS_DIR; only scripts inside it may run")
    if not os.path.exists(real):
        raise JobError(f"script {name!r} not found in SCRIPTS_DIR")
    if not os.path.isfile(real):
        raise JobError(f"script {name!r} is not a regular file")
    if not os.access(real, os.X_OK):
        raise JobError(f"script {name!r} is not executable (chmod +x it)")
    return real


def script_arguments(params: dict) -> list[str]:
    argv = []
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_NAME.match(key):
            raise JobError(f"parameter name {key!r} is not allowed (letters, digits, _ . - ; not starting with -)")
        argv.append(f"--{key}")
        argv.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return argv


class CustomScriptJob(JobBase):
    """Job to run custom scripts"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    admin_only = True  # runs programs on the server

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to run custom scripts",
            "arguments": [
                {
                    "name": "script_name",
                    "type": "string",
                    "required": True,
                    "description": "pub_args[0]: path of an executable inside "
                    "SCRIPTS_DIR, e.g. 'cleanup.sh' or 'reports/daily.py'",
                },
                {
                    "name": "<any other key>",
                    "type": "any",
                    "required": False,
                    "description": "pub_kwargs: script parameters, passed as '--key value' "
                    "(non-strings as JSON) and as one JSON object on stdin",
                },
                {
                    "name": "timeout",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: seconds before the script's process group is "
                    f"killed (default {DEFAULT_TIMEOUT:g} when the job has no timeout_seconds; none "
                    "when it has one, which then governs); not passed to the script",
                },
            ],
            "example_arguments": {
                "pub_args": ["cleanup.sh"],
                "pub_kwargs": {"target": "/tmp/cache", "max_age": 7, "timeout": 60},
            },
            "notes": (
                "Runs without a shell in its own process session, working directory = the script's directory, "
                "with a minimal environment (PATH, HOME, LANG, TZ ...) plus TEXIUM_JOB_ID, TEXIUM_JOB_NAME and "
                "TEXIUM_EXECUTION_ID. stdout becomes the output as it arrives (stderr is appended at the end); "
                "each is capped at 1 MiB with a truncation note. A non-zero exit fails with the exit code and "
                "stderr. When the run is cancelled or passes the job's timeout_seconds, the script's process "
                "group and its descendants that left it (setsid, daemons) get SIGTERM, then SIGKILL "
                f"{KILL_GRACE:g} s later if still there. The `timeout` "
                "argument ends the run as timed out the same way. Names leaving SCRIPTS_DIR (../, absolute "
                "paths, symlinks pointing out) are refused."
            ),
        }

    def run(self, *args, **kwargs):
        if not args:
            raise JobError("script_name is required as pub_args[0]")
        _util.no_extra_args(args, 1, "[script_name]")
        timeout = None  # the job's own limit (timeout_seconds), enforced through context.cancelled, governs
        if "timeout" in kwargs or self.context.timeout_seconds is None:
            timeout = _util.number(
                "timeout", kwargs.get("timeout", DEFAULT_TIMEOUT), minimum=0, exclusive_minimum=True, maximum=7 * 86400
            )
        params = {k: v for k, v in kwargs.items() if k not in CONTROL_KEYS}
        argv_params = script_arguments(params)
        scripts_dir = _util.dir_setting(self.context.config, "SCRIPTS_DIR", "scripts")
        path = resolve_script(scripts_dir, args[0])
        name = args[0]
        try:
            stdin_doc = json.dumps(params, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise JobError(f"parameters cannot be sent as JSON: {exc}") from None

        env = {k: os.environ[k] for k in _ENV_PASSTHROUGH if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "TEXIUM_JOB_ID": str(self.context.job_id or ""),
                "TEXIUM_JOB_NAME": str(self.context.job_name or ""),
                "TEXIUM_EXECUTION_ID": str(self.context.execution_id or ""),
                "TEXIUM_SCRIPTS_DIR": os.path.realpath(scripts_dir),
                **_util.run_environment(self.context),
            }
        )

        # Recorded so that a server stopping past its grace period, or restarting after a
        # crash, can kill this run instead of leaving it running unaccounted for; started and
        # tracked under `starting`, so the registry never takes it for an adopted orphan.
        processes = getattr(self.context, "processes", None)
        if not isinstance(processes, ProcessRegistry):
            processes = None
        started = time.monotonic()
        with processes.starting() if processes is not None else contextlib.nullcontext():
            try:
                proc = subprocess.Popen(
                    [path, *argv_params],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=os.path.dirname(path),
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise JobError(f"cannot start script {name!r}: {exc.strerror or exc}") from None
            # Its identity, taken before anything can reap it (only proc.wait can).
            leader = (proc.pid, create_time_of(proc.pid) or 0.0)
            if processes is not None:
                processes.track(self.context.execution_id, proc)
        try:
            result_line = _ResultLine(self.context.write)
            out = _Capture(proc.stdout, OUTPUT_LIMIT, sink=result_line)
            err = _Capture(proc.stderr, OUTPUT_LIMIT)
            feeder = threading.Thread(target=self._feed, args=(proc.stdin, stdin_doc), daemon=True)
            feeder.start()

            stopped = None  # "timeout" (the script's own), "cancelled" (the run's flag), or None: it exited
            needed_kill = False
            leftovers_killed = False
            try:
                stopped = self._wait(proc, started, timeout, processes)
                if stopped is not None:
                    needed_kill = self._kill(proc, leader, processes, KILL_GRACE)
            except BaseException:
                self._kill(proc, leader, processes, KILL_GRACE)
                raise
            # The script has exited; children it left behind may still hold the pipes open.
            linger_until = time.monotonic() + LINGER
            for capture in (out, err):
                capture.thread.join(max(0.0, linger_until - time.monotonic()))
            if out.thread.is_alive() or err.thread.is_alive():
                leftovers_killed = True
                self._kill(proc, leader, processes, None)  # SIGKILL, also those that left the group
                out.thread.join(LINGER)
                err.thread.join(LINGER)
            feeder.join(1.0)
            for pipe in (proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        finally:
            if processes is not None:
                processes.untrack(self.context.execution_id, proc.pid)
        elapsed = time.monotonic() - started

        # stdout was written as it came: only the truncation note, or a last line break, is missing.
        ending = out.note("stdout", out.last) or ("\n" if out.last and not out.last.endswith("\n") else "")
        if ending:
            self.context.write(ending)
        result_line.publish(self.context)
        stderr = err.text("stderr")
        if stopped == "timeout":
            raise JobTimeout(
                f"script {name!r} timed out after {timeout:g} s; its process group was killed"
                + (f"\nstderr:\n{stderr}" if stderr else "")
            )
        if stopped == "cancelled":
            signals = f"SIGTERM, then SIGKILL {KILL_GRACE:g} s later" if needed_kill else "SIGTERM"
            raise JobError(
                f"script {name!r} was stopped (the run was cancelled or passed its time limit): "
                f"its process group got {signals}" + (f"\nstderr:\n{stderr}" if stderr else "")
            )
        code = proc.returncode
        if code != 0:
            how = f"was killed by signal {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
            raise JobError(f"script {name!r} {how}" + (f"\nstderr:\n{stderr}" if stderr else " (no stderr)"))
        tail = []
        if stderr:
            tail.append("--- stderr ---\n" + stderr.rstrip("\n"))
        if leftovers_killed:
            tail.append("(processes the script left running with its output open were killed)")
        tail.append(f"Script {name!r} exited with code 0 in {elapsed:.2f} s")
        return "\n".join(tail)

    @staticmethod
    def _feed(pipe, data: bytes) -> None:
        try:
            pipe.write(data)
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            try:
                pipe.close()
            except (BrokenPipeError, OSError):
                pass

    def _wait(
        self, proc: subprocess.Popen, started: float, timeout: float | None, processes: ProcessRegistry | None = None
    ) -> str | None:
        """Wait for the script in short steps, so a set `context.cancelled` is seen at once,
        and let the registry look at its descendants now and then (`poll`).

        Returns None when it exited, "timeout" when its own `timeout` ran out, "cancelled" when
        the run must stop.
        """
        cancelled = self.context.cancelled
        deadline = None if timeout is None else started + timeout
        while True:
            if cancelled.is_set():
                return "cancelled"
            if processes is not None:
                processes.poll()
            step = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if step <= 0:
                return "timeout"
            try:
                proc.wait(timeout=step)
                return None
            except subprocess.TimeoutExpired:
                pass

    def _kill(
        self,
        proc: subprocess.Popen,
        leader: tuple[int, float],
        processes: ProcessRegistry | None,
        grace: float | None,
    ) -> bool:
        """SIGTERM the script's process group and its descendants that left it, SIGKILL what is
        left after `grace` s (None: SIGKILL at once), then reap the script.

        Returns whether SIGKILL was needed: a process of the run outlived SIGTERM by the grace.
        """
        if processes is not None:
            needed = processes.stop(self.context.execution_id, *leader, grace)
        else:
            needed = terminate(*leader, grace)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass
        return needed


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
