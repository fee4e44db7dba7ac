"""The record of child process groups that jobs started, so none outlives the server unnoticed.

A job that starts a process in its own session (CustomScriptJob) `track`s it here and
`untrack`s it once the group has ended. Each tracked group is one small JSON file in a
directory (DATA_DIR/run/processes/ in the server), so the record survives a crash:

* at shutdown past the grace period the server calls `kill_all` for the groups it is about
  to abandon (this instance's own, kept in memory too);
* at start-up it calls `reap_stale`, which kills the groups whose owner server is gone
  (a kill -9, a crash, a power cut) and removes their files.

Processes are identified by pid *and* psutil's create_time, for the leader and the owner
server alike, so a recycled pid is never taken for ours. Nothing here raises on a bad file,
a vanished process or a permission error: those are logged and the rest goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil

log = logging.getLogger("texium.processes")

FORMAT_VERSION = 1
SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
MAX_FILE_BYTES = 64 * 1024
# create_time is derived from the boot time, which moves when the wall clock is stepped
# (NTP); a pid recycled within a second of the original's start would need the whole pid
# space to wrap in that second.
CREATE_TIME_TOLERANCE = 1.0
KILL_WAIT = 1.0  # seconds to wait for SIGKILL to take effect before giving up
POLL = 0.05
STALE_TMP_SECONDS = 60.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = {"execution_id": str, "pgid": int, "pid": int, "create_time": (int, float), "owner_pid": int, "node_id": str}


class ProcessRegistry:
    """Tracked process groups of one server process (the owner), persisted in `directory`."""

    def __init__(self, directory: str, node_id: str, owner_pid: int | None = None):
        self.directory = directory
        self.node_id = str(node_id)
        self.owner_pid = os.getpid() if owner_pid is None else int(owner_pid)
        self.owner_create_time = _create_time(self.owner_pid)
        self._tracked: dict[tuple[str, int], dict] = {}
        self._lock = threading.Lock()
        self._reported: set[str] = set()  # bad files already logged, so each is logged once
        self._ensure_directory()

    # -- recording -------------------------------------------------------------------
    def track(self, execution_id: str, popen: Any) -> None:
        """Record the process group led by `popen` (started with start_new_session=True)."""
        pid = int(popen.pid)
        try:
            pgid = os.getpgid(pid)
        except OSError:
            log.debug("Process %d of execution %s ended before it could be tracked", pid, execution_id)
            return
        if pgid == os.getpgrp():
            # Killing this group later would kill the server itself.
            log.error(
                "Not tracking process %d of execution %s: it shares the server's process group", pid, execution_id
            )
            return
        create_time = _create_time(pid)
        if create_time is None:
            log.debug("Process %d of execution %s ended before it could be tracked", pid, execution_id)
            return
        record = {
            "version": FORMAT_VERSION,
            "execution_id": str(execution_id),
            "pgid": pgid,
            "pid": pid,
            "create_time": create_time,
            "owner_pid": self.owner_pid,
            "owner_create_time": self.owner_create_time,
            "node_id": self.node_id,
            "tracked_at": time.time(),
        }
        with self._lock:
            self._tracked[(record["execution_id"], pgid)] = record
            self._write(record)

    def untrack(self, execution_id: str, pgid: int) -> None:
        """Forget a group that has ended (or that the job itself has killed)."""
        key = (str(execution_id), int(pgid))
        with self._lock:
            self._tracked.pop(key, None)
            self._remove(os.path.join(self.directory, _file_name(*key)))

    def tracked(self) -> list[dict]:
        """This instance's tracked groups (copies of the records)."""
        with self._lock:
            return [dict(record) for record in self._tracked.values()]

    # -- killing ---------------------------------------------------------------------
    def kill_all(self, reason: str, grace: float = 2.0) -> list[dict]:
        """Kill this instance's groups that are still alive: SIGTERM, `grace` s in all, SIGKILL.

        For shutdown past the grace period: the runs are being abandoned, and their scripts
        must not go on without a server to record them. Returns [{execution_id, pgid, pid}].
        """
        with self._lock:
            records = list(self._tracked.values())
            self._tracked.clear()
        killed = self._terminate(records, grace, reason)
        for record in records:
            self._remove(os.path.join(self.directory, _file_name(record["execution_id"], record["pgid"])))
        return [
            {"execution_id": r["execution_id"], "pgid": r["pgid"], "pid": r["pid"]} for r in records if id(r) in killed
        ]

    def reap_stale(self, grace: float = 2.0) -> list[dict]:
        """At start-up: kill the groups left by a server process of this node that is gone.

        Files of a live owner (another server on this host sharing the data directory) and
        files of other nodes are left alone. Returns [{execution_id, pgid, pid, killed}] for
        every stale file, which is removed whether or not its group was still alive.
        """
        stale: list[tuple[str, dict]] = []
        for path in self._files():
            record = self._read(path)
            if record is None:
                continue
            if record["node_id"] != self.node_id:
                log.debug("Leaving %s alone: it belongs to node %s", path, record["node_id"])
                continue
            if _alive_as(record["owner_pid"], record.get("owner_create_time")):
                continue
            stale.append((path, record))
        records = [record for _, record in stale]
        killed = self._terminate(records, grace, "its server is gone") if records else set()
        result = []
        for path, record in stale:
            self._remove(path)
            result.append(
                {
                    "execution_id": record["execution_id"],
                    "pgid": record["pgid"],
                    "pid": record["pid"],
                    "killed": id(record) in killed,
                }
            )
            if id(record) not in killed:
                log.info(
                    "Process group %d of execution %s (server pid %d) had already ended",
                    record["pgid"],
                    record["execution_id"],
                    record["owner_pid"],
                )
        return result

    def _terminate(self, records: Iterable[dict], grace: float, reason: str) -> set[int]:
        """SIGTERM every live group, wait `grace` s for all, SIGKILL the rest; ids of the killed."""
        targets = [record for record in records if _group_is_ours(record)]
        for record in targets:
            log.warning("Killing process group %d of execution %s: %s", record["pgid"], record["execution_id"], reason)
        signalled = [record for record in targets if _signal_group(record, signal.SIGTERM)]
        remaining = _wait_gone(signalled, grace)
        if remaining:
            for record in remaining:
                log.warning(
                    "Process group %d of execution %s outlived SIGTERM; sending SIGKILL",
                    record["pgid"],
                    record["execution_id"],
                )
                _signal_group(record, signal.SIGKILL)
            for record in _wait_gone(remaining, KILL_WAIT):
                log.error(
                    "Process group %d of execution %s is still alive after SIGKILL",
                    record["pgid"],
                    record["execution_id"],
                )
        return {id(record) for record in signalled}

    # -- files -----------------------------------------------------------------------
    def _ensure_directory(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if os.stat(self.directory).st_mode & 0o077:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            log.error("Cannot prepare the process record directory %s: %s", self.directory, exc)

    def _write(self, record: dict) -> None:
        """Write atomically (temp file + os.replace), so a crash never leaves half a record."""
        name = _file_name(record["execution_id"], record["pgid"])
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".{name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, json.dumps(record, sort_keys=True).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            log.error(
                "Cannot record process group %d of execution %s in %s: %s",
                record["pgid"],
                record["execution_id"],
                self.directory,
                exc,
            )
            self._remove(tmp)

    def _files(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("Cannot list the process record directory %s: %s", self.directory, exc)
            return []
        paths = []
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(TMP_SUFFIX):
                self._remove_old_tmp(path)
            elif name.endswith(SUFFIX):
                paths.append(path)
        return paths

    def _read(self, path: str) -> dict | None:
        """The record in `path`, or None (a bad file is removed and logged once)."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                data = os.read(fd, MAX_FILE_BYTES + 1)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None  # removed meanwhile (its owner untracked it, or another server reaped it)
        except OSError as exc:
            self._report(path, f"cannot be read: {exc}")
            self._remove(path)
            return None
        problem = None
        try:
            record = json.loads(data.decode("utf-8")) if len(data) <= MAX_FILE_BYTES else None
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict):
            problem = "is not a JSON object of the expected size"
        else:
            for field, kind in _FIELDS.items():
                value = record.get(field)
                if not isinstance(value, kind) or isinstance(value, bool):
                    problem = f"has no valid {field}"
                    break
            else:
                owner_ct = record.get("owner_create_time")
                if owner_ct is not None and (not isinstance(owner_ct, (int, float)) or isinstance(owner_ct, bool)):
                    problem = "has no valid owner_create_time"
                elif record["pgid"] <= 1 or record["pid"] <= 1 or record["owner_pid"] <= 0:
                    problem = "names an impossible pid"
        if problem:
            self._report(path, problem)
            self._remove(path)
            return None
        return record

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._report(path, f"cannot be removed: {exc}")

    def _remove_old_tmp(self, path: str) -> None:
        """A temp file left by a crash in the middle of a write (a fresh one may be in use)."""
        try:
            if time.time() - os.lstat(path).st_mtime > STALE_TMP_SECONDS:
                self._remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._report(path, f"cannot be inspected: {exc}")

    def _report(self, path: str, problem: str) -> None:
        key = f"{path}: {problem}"
        if key not in self._reported:
            self._reported.add(key)
            log.warning("Process record %s %s; removing it", path, problem)


# -- processes ---------------------------------------------------------------------------
def _file_name(execution_id: str, pgid: int) -> str:
    execution_id = str(execution_id)
    if not _SAFE_NAME.match(execution_id):
        execution_id = hashlib.sha256(execution_id.encode("utf-8", "replace")).hexdigest()[:32]
    return f"{execution_id}-{int(pgid)}{SUFFIX}"


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _alive_as(pid: int, create_time: float | None) -> bool:
    """Is `pid` still the process that had `create_time` (None: unknown, trust the pid)?"""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        now = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # cannot tell (access denied): treat as alive rather than kill blindly
    return create_time is None or abs(now - create_time) <= CREATE_TIME_TOLERANCE


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes of group `pgid` that are not zombies."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    except OSError:
        return []
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def _group_is_ours(record: dict) -> bool:
    """Is the live group `pgid` the one in `record`, not a later one reusing the number?

    While any member of a group lives, its number cannot be given to a new process. So if
    the leader's pid now names another process, our group has ended; if the leader is gone
    but the group lives, its members must all have started after our leader.
    """
    members = group_members(record["pgid"])
    if not members:
        return False
    try:
        leader_time = psutil.Process(record["pid"]).create_time()
    except psutil.NoSuchProcess:
        leader_time = None
    except (psutil.Error, OSError):
        return False
    if leader_time is not None:
        return abs(leader_time - record["create_time"]) <= CREATE_TIME_TOLERANCE
    try:
        return all(m.create_time() >= record["create_time"] - CREATE_TIME_TOLERANCE for m in members)
    except (psutil.Error, OSError):
        return False


def _signal_group(record: dict, sig: int) -> bool:
    try:
        os.killpg(record["pgid"], sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.error(
            "Not allowed to signal process group %d of execution %s: %s", record["pgid"], record["execution_id"], exc
        )
        return False
    except OSError as exc:
        log.error("Cannot signal process group %d of execution %s: %s", record["pgid"], record["execution_id"], exc)
        return False


def _wait_gone(records: list[dict], seconds: float) -> list[dict]:
    """Wait up to `seconds` in all for the groups to end; returns those still alive."""
    deadline = time.monotonic() + max(0.0, seconds)
    remaining = list(records)
    while remaining:
        remaining = [record for record in remaining if group_members(record["pgid"])]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    return remaining
