"""The record of the processes that jobs started, so none outlives the server unnoticed.

A job that starts a process in its own session (CustomScriptJob) `track`s it here and
`untrack`s it once it has ended. Each tracked run is one small JSON file in a directory
(DATA_DIR/run/processes/ in the server), so the record survives a crash. On a timeout or
cancel the job calls `stop`; at shutdown past the grace period the server calls `kill_all` for
the runs it abandons; at start-up `reap_stale` kills the runs whose owner server is gone (a
kill -9, a crash, a power cut) and removes their files.

A run is more than its process group: a child that calls setsid() (`setsid cmd`, `setsid -f`,
a daemon's double fork) leaves the group and, once its parent exits, the script's tree. So a
run is its *family*: the group, the leader's descendant tree, and the descendants recorded so
far with their own trees.

* `poll` (from the job while it waits, and from the runner's watchdog) walks the trees every
  REFRESH_SECONDS and writes the descendants' (pid, create_time) into the record: after a
  kill -9 they are children of init, and the record is what finds them.
* The server is a child subreaper (`set_subreaper`, called at start-up in
  texium.server.__main__): orphans below it are re-parented to it, not to init. A child of the
  server that is not a script leader and carries a run's TEXIUM_EXECUTION_ID (CustomScriptJob
  sets it; it is inherited) is that run's adopted orphan, so a daemon that detached between two
  polls is still found. Scripts start and get tracked under `starting`, and that look happens
  under it too, so a leader not yet tracked is never taken for an orphan.
* Only those adopted orphans are reaped, each by its pid (waitpid WNOHANG, once a zombie). No
  waitpid(-1) reaper: it would steal subprocess.Popen's exit statuses. So an orphan nobody can
  attribute (from another job's subprocess, or one that cleared its environment before any
  poll saw it) stays a zombie once it exits, until the server exits.

Killing: SIGTERM the group and every family member, wait up to the grace for all (walking the
trees again), then SIGSTOP what is left, walking again until no new process appears (a stopped
process cannot fork), and SIGKILL it all.

Why not cgroups: one cgroup v2 per script and `cgroup.kill` would also catch, after a crash, a
daemon that detached between two polls. But the server usually runs as a service user or in a
container, where the cgroup tree is read-only unless delegated, so this process-tree way must be
complete on its own anyway; a script must be moved into its cgroup before it can fork, which
needs preexec_fn (unsafe in this multi-threaded server) or a wrapper waiting for the move; and
the hierarchy moves around (the test machine, as root, has cgroup v1 at /sys/fs/cgroup and v2 at
/sys/fs/cgroup/unified, writable, but the server sits in the host's root cgroup). A second
mechanism with its own crash leftovers was not worth that margin.

Processes are identified by pid *and* psutil's create_time, for the leader, the descendants
and the owner server alike, so a recycled pid is never taken for ours; a process is signalled
through a pidfd opened before its create_time is checked, so it cannot be recycled in between.
Nothing here raises on a bad file, a vanished process or a permission error: those are logged
and the rest goes on.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

log = logging.getLogger("texium.processes")

FORMAT_VERSION = 2  # 2 added "descendants"; files of version 1 have none and still read
SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
MAX_FILE_BYTES = 64 * 1024
MAX_DESCENDANTS = 512  # recorded per run (the oldest first); keeps a record far below MAX_FILE_BYTES
# create_time is derived from the boot time, which moves when the wall clock is stepped
# (NTP); a pid recycled within a second of the original's start would need the whole pid
# space to wrap in that second.
CREATE_TIME_TOLERANCE = 1.0
KILL_WAIT = 1.0  # seconds to wait for SIGKILL to take effect before giving up
POLL = 0.05
REFRESH_SECONDS = 0.5  # how often `poll` walks the runs' trees and records their descendants
FREEZE_ROUNDS = 20  # SIGSTOP passes before SIGKILL, each finding what the last one missed
STALE_TMP_SECONDS = 60.0
MARKER_ENV = "TEXIUM_EXECUTION_ID"  # CustomScriptJob puts the execution id in the script's environment
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = {"execution_id": str, "pgid": int, "pid": int, "create_time": (int, float), "owner_pid": int, "node_id": str}


class ProcessRegistry:
    """Tracked runs (process groups and their descendants) of one server process (the owner),
    persisted in `directory`."""

    def __init__(self, directory: str, node_id: str, owner_pid: int | None = None):
        self.directory = directory
        self.node_id = str(node_id)
        self.owner_pid = os.getpid() if owner_pid is None else int(owner_pid)
        self.owner_create_time = _create_time(self.owner_pid)
        self._tracked: dict[tuple[str, int], dict] = {}
        # Untracked runs whose adopted orphans (daemons a script left) must still be reaped.
        self._leftover: dict[tuple[str, int], dict] = {}
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # see `starting`; taken before _lock, never after
        self._poll_lock = threading.Lock()
        self._next_poll = 0.0
        self._reported: set[str] = set()  # bad files already logged, so each is logged once
        self._ensure_directory()

    # -- recording -------------------------------------------------------------------
    def starting(self) -> threading.Lock:
        """Hold this around starting a script and `track`ing it (`with registry.starting():`).

        A child of the server carrying a tracked execution's TEXIUM_EXECUTION_ID is taken for
        an orphan it adopted, and may be killed with that run and reaped; the script leader
        itself carries it too, so it must be tracked (known as a leader) before any such look,
        which happens under the same lock.
        """
        return self._start_lock

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
            "descendants": [],
            "owner_pid": self.owner_pid,
            "owner_create_time": self.owner_create_time,
            "node_id": self.node_id,
            "tracked_at": time.time(),
        }
        with self._lock:
            self._tracked[(record["execution_id"], pgid)] = record
            self._write(record)

    def untrack(self, execution_id: str, pgid: int) -> None:
        """Forget a run that has ended (or that the job itself has killed).

        Only forgets: descendants it left running go on, and those the server adopted are
        still reaped by `poll` when they exit (the next poll drops a run with none left).
        """
        key = (str(execution_id), int(pgid))
        with self._lock:
            record = self._tracked.pop(key, None)
            if record is not None:
                self._leftover[key] = record  # until a poll finds nothing of it left to reap
            self._remove(os.path.join(self.directory, _file_name(*key)))

    def tracked(self) -> list[dict]:
        """This instance's tracked runs (copies of the records)."""
        with self._lock:
            return [dict(record) for record in self._tracked.values()]

    def poll(self, force: bool = False) -> None:
        """Walk the tracked runs' trees: record new descendants (rewriting a record that
        changed), and reap the orphans the server adopted that have exited.

        Cheap to call often: it does the work at most every REFRESH_SECONDS (unless `force`),
        and returns at once while another thread is at it.
        """
        now = time.monotonic()
        if not force and now < self._next_poll:
            return
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._next_poll = now + REFRESH_SECONDS
            with self._lock:
                tracked = list(self._tracked.items())
                leftover = list(self._leftover.items())
            if not tracked and not leftover:
                return
            records = [record for _, record in tracked + leftover]
            scan, families = self._look(records, adopt=self.owner_pid == os.getpid())
            self._reap(scan, records, families)
            with self._lock:
                for key, record in tracked:
                    found = _descendants(record, families[id(record)][1])
                    if found != record.get("descendants") and self._tracked.get(key) is record:
                        record["descendants"] = found
                        self._write(record)
                for key, record in leftover:
                    record["descendants"] = _descendants(record, families[id(record)][1])
                    if not record["descendants"] and self._leftover.get(key) is record:
                        del self._leftover[key]
        except Exception:  # a bad moment must not stop the polling callers
            log.exception("Could not look at the scripts' processes")
        finally:
            self._poll_lock.release()

    # -- killing ---------------------------------------------------------------------
    def stop(self, execution_id: str, pid: int, create_time: float, grace: float | None = 2.0) -> bool:
        """End one run (its `timeout`, a cancel): SIGTERM its family, `grace` s, then freeze and
        SIGKILL whatever is left, always (something may have just started). `grace` None: no
        SIGTERM, SIGKILL at once. Returns whether SIGKILL found something still alive.

        `pid` and `create_time` name the leader (its group's id is its pid), as the caller took
        them when it started it. The leader is left for its Popen to reap; adopted orphans are
        reaped here.
        """
        with self._lock:
            record = self._tracked.get((str(execution_id), int(pid)))
        if record is None:  # never tracked (it ended first): its group and tree only
            return terminate(pid, create_time, grace)
        _, needed = self._stop([record], grace, None, adopt=self.owner_pid == os.getpid(), always_kill=True)
        return bool(needed)

    def kill_all(self, reason: str, grace: float = 2.0) -> list[dict]:
        """Kill this instance's runs that are still alive: SIGTERM, `grace` s in all, SIGKILL.

        For shutdown past the grace period: the runs are being abandoned, and their scripts
        must not go on without a server to record them. Their groups and every descendant that
        left the group are killed. Returns [{execution_id, pgid, pid}] of those signalled.
        """
        with self._lock:
            records = list(self._tracked.values())
            self._tracked.clear()
        killed, _ = self._stop(records, grace, reason, adopt=self.owner_pid == os.getpid())
        for record in records:
            self._remove(os.path.join(self.directory, _file_name(record["execution_id"], record["pgid"])))
        killed_ids = {id(record) for record in killed}
        return [
            {"execution_id": r["execution_id"], "pgid": r["pgid"], "pid": r["pid"]}
            for r in records
            if id(r) in killed_ids
        ]

    def reap_stale(self, grace: float = 2.0) -> list[dict]:
        """At start-up: kill the runs left by a server process of this node that is gone.

        Its group, the leader's tree and the recorded descendants (by pid and create_time, with
        their own trees): after a kill -9 the orphans are children of init, so the record is
        what finds them. Files of a live owner (another server on this host sharing the data
        directory) and files of other nodes are left alone. Returns [{execution_id, pgid, pid,
        killed}] for every stale file, which is removed whether or not anything was alive.
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
        killed = {id(r) for r in self._stop(records, grace, "its server is gone", adopt=False)[0]} if records else set()
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

    def _stop(
        self, records: list[dict], grace: float | None, reason: str | None, adopt: bool, always_kill: bool = False
    ) -> tuple[list[dict], list[dict]]:
        """`_terminate` with this registry's look (with `adopt`, for runs of this process: the
        orphans it adopted too), then reap what was adopted and killed."""
        seen: dict[int, dict[int, float]] = {id(record): {} for record in records}

        def look() -> tuple[_Scan, Families]:
            scan, families = self._look(records, adopt)
            for record in records:
                seen[id(record)].update(families[id(record)][1])
            return scan, families

        signalled, needed = _terminate(records, grace, look, reason, always_kill)
        for record in records:  # everything met on the way: the killed that are now our zombies
            record["descendants"] = _descendants(record, seen[id(record)])
        scan, families = self._look(records, adopt)
        self._reap(scan, records, families)
        with self._lock:
            for record in records:
                record["descendants"] = _descendants(record, families[id(record)][1])
                key = (record["execution_id"], record["pgid"])
                if record["descendants"] and key not in self._tracked and adopt:
                    self._leftover[key] = record  # unkillable, or exiting: reaped by a later poll
        return signalled, needed

    def _look(self, records: list[dict], adopt: bool) -> tuple[_Scan, dict[int, tuple[bool, dict[int, float]]]]:
        """One scan, and each record's family in it. With `adopt`, the server's children that
        carry a run's marker count as that run's (under `starting`, see there)."""
        if not adopt:
            scan = _Scan()
            return scan, _families(records, scan)
        with self._start_lock:
            scan = _Scan()
            with self._lock:
                known = list(self._tracked.values()) + list(self._leftover.values())
            return scan, _families(records, scan, self._adopted(scan, records, known))

    @staticmethod
    def _adopted(scan: _Scan, records: list[dict], known: list[dict]) -> dict[int, list[int]]:
        """The live children of this process that are orphans of `records`' runs: not a
        leader, carrying the run's execution id, started after its leader (the latest such)."""
        leaders = [(r["pid"], r["create_time"]) for r in [*records, *known]]
        found: dict[int, list[int]] = {}
        for pid in scan.children.get(os.getpid(), ()):
            started = scan.started[pid]
            if pid in scan.zombies or any(pid == lp and _same_time(started, lt) for lp, lt in leaders):
                continue
            try:
                marker = psutil.Process(pid).environ().get(MARKER_ENV)
            except (psutil.Error, OSError):
                continue
            if not marker:
                continue
            owners = [
                r
                for r in records
                if r["execution_id"] == marker and started >= r["create_time"] - CREATE_TIME_TOLERANCE
            ]
            if owners:
                owner = max(owners, key=lambda r: r["create_time"])
                found.setdefault(id(owner), []).append(pid)
        return found

    @staticmethod
    def _reap(scan: _Scan, records: list[dict], families: dict[int, tuple[bool, dict[int, float]]]) -> None:
        """waitpid(WNOHANG) the zombies among the runs' descendants that are our children:
        orphans we adopted (never a leader, which its Popen reaps). A zombie keeps its pid
        until reaped, and nothing else here reaps it, so the pid is still that process."""
        me = os.getpid()
        leaders = {(r["pid"], r["create_time"]) for r in records}
        for record in records:
            for pid, started in families[id(record)][1].items():
                if scan.ppid.get(pid) != me or pid not in scan.zombies:
                    continue
                if any(pid == lp and _same_time(started, lt) for lp, lt in leaders):
                    continue
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                except OSError as exc:
                    log.debug("Could not reap adopted process %d: %s", pid, exc)

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
                elif not _valid_descendants(record.setdefault("descendants", [])):
                    problem = "has no valid descendants"
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
def _valid_descendants(value: Any) -> bool:
    """A list of at most MAX_DESCENDANTS [pid > 1, create_time] pairs."""
    if not isinstance(value, list) or len(value) > MAX_DESCENDANTS:
        return False
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 2):
            return False
        pid, started = entry
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            return False
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            return False
    return True


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


def _same_time(a: float, b: float) -> bool:
    return abs(a - b) <= CREATE_TIME_TOLERANCE


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
    return create_time is None or _same_time(now, create_time)


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


# -- subreaper ---------------------------------------------------------------------------
_prctl_function: Any = None


def _prctl() -> Any:
    global _prctl_function
    if _prctl_function is None and sys.platform.startswith("linux"):
        try:
            function = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None
        function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        function.restype = ctypes.c_int
        _prctl_function = function
    return _prctl_function


def set_subreaper(enabled: bool = True) -> bool:
    """Make this process a child subreaper (Linux 3.4+), or stop being one.

    A subreaper's orphaned descendants (their parent exited: a double fork, `setsid -f`) are
    re-parented to it rather than to init, so the server can still find, kill and reap what its
    scripts detach. Called once, at server start (texium.server.__main__), not in build_context:
    tests build contexts inside the pytest process, which must not start adopting orphans.
    Returns whether the setting is now `enabled` (False where prctl is missing: not Linux).
    """
    prctl = _prctl()
    if prctl is None:
        log.info(
            "Cannot become a child subreaper on %s: detached script processes are found by polling only", sys.platform
        )
        return False
    if prctl(PR_SET_CHILD_SUBREAPER, 1 if enabled else 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def is_subreaper() -> bool:
    prctl = _prctl()
    if prctl is None:
        return False
    value = ctypes.c_int(0)
    if prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value), 0, 0, 0) != 0:
        return False
    return bool(value.value)


# -- families ----------------------------------------------------------------------------
class _Scan:
    """One pass over the process table: parents, start times, zombies (and groups, lazily)."""

    def __init__(self):
        self.ppid: dict[int, int] = {}
        self.started: dict[int, float] = {}
        self.zombies: set[int] = set()
        self.children: dict[int, list[int]] = {}
        self._groups: dict[int, list[int]] | None = None
        for process in psutil.process_iter(["ppid", "create_time", "status"]):
            info = process.info
            ppid, started = info.get("ppid"), info.get("create_time")
            if ppid is None or started is None:
                continue
            pid = process.pid
            self.ppid[pid] = ppid
            self.started[pid] = started
            self.children.setdefault(ppid, []).append(pid)
            if info.get("status") == psutil.STATUS_ZOMBIE:
                self.zombies.add(pid)

    def same(self, pid: int, create_time: float) -> bool:
        """Is `pid` (alive or a zombie) the process that started at `create_time`?"""
        started = self.started.get(pid)
        return started is not None and _same_time(started, create_time)

    def alive(self, pid: int) -> bool:
        return pid in self.started and pid not in self.zombies

    def subtree(self, roots: Iterable[int]) -> set[int]:
        found: set[int] = set()
        todo = [pid for pid in roots if pid in self.started]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(self.children.get(pid, ()))
        return found

    def group(self, pgid: int, zombies: bool = False) -> list[int]:
        """The members of group `pgid`: the live ones, or with `zombies` all of them."""
        if self._groups is None:
            self._groups = {}
            for pid in self.started:
                try:
                    self._groups.setdefault(os.getpgid(pid), []).append(pid)
                except OSError:
                    continue
        members = self._groups.get(pgid, [])
        return members if zombies else [pid for pid in members if pid not in self.zombies]

    def group_is_ours(self, record: dict) -> bool:
        """Is the live group `pgid` the one in `record`, not a later one reusing the number?

        While any member of a group lives, its number cannot be given to a new process. So if
        the leader's pid now names another process, our group has ended; if the leader is gone
        but the group lives, its members must all have started after our leader.
        """
        members = self.group(record["pgid"])
        if not members:
            return False
        if record["pid"] in self.started:
            return self.same(record["pid"], record["create_time"])
        return all(self.started[m] >= record["create_time"] - CREATE_TIME_TOLERANCE for m in members)


Families = dict[int, tuple[bool, dict[int, float]]]  # id(record) -> (group is ours, {pid: create_time})


def _families(records: list[dict], scan: _Scan, adopted: dict[int, list[int]] | None = None) -> Families:
    """Each record's family in `scan`: the members of its group (when the group is provably
    its own), its leader and recorded descendants (when pid and create_time match), `adopted`
    roots, and every descendant of all those. A child of a process of ours is ours."""
    result: Families = {}
    for record in records:
        ours = scan.group_is_ours(record)
        roots = scan.group(record["pgid"], zombies=True) if ours else []
        if scan.same(record["pid"], record["create_time"]):
            roots.append(record["pid"])
        for pid, started in record.get("descendants") or ():
            if scan.same(pid, started):
                roots.append(pid)
        roots.extend((adopted or {}).get(id(record), ()))
        result[id(record)] = (ours, {pid: scan.started[pid] for pid in scan.subtree(roots)})
    return result


def _descendants(record: dict, family: dict[int, float]) -> list[list]:
    """What to record of a family: every member but the leader, oldest first, capped."""
    members = sorted(
        (
            [pid, started]
            for pid, started in family.items()
            if not (pid == record["pid"] and _same_time(started, record["create_time"]))
        ),
        key=lambda entry: (entry[1], entry[0]),
    )
    if len(members) > MAX_DESCENDANTS:
        log.warning(
            "Execution %s has %d descendant processes; recording the %d oldest",
            record["execution_id"],
            len(members),
            MAX_DESCENDANTS,
        )
    return members[:MAX_DESCENDANTS]


def _live(record: dict, scan: _Scan, families: Families) -> list[int]:
    ours, family = families[id(record)]
    live = [pid for pid in family if scan.alive(pid)]
    if ours:
        live.extend(pid for pid in scan.group(record["pgid"]) if pid not in family)
    return live


def _terminate(
    records: list[dict],
    grace: float | None,
    look: Callable[[], tuple[_Scan, Families]],
    reason: str | None = None,
    always_kill: bool = False,
) -> tuple[list[dict], list[dict]]:
    """SIGTERM every live family, wait `grace` s for all, then freeze and SIGKILL what is left
    (with `always_kill`, look for leftovers even when all seemed gone). `grace` None: skip
    SIGTERM. Returns (the records signalled, the records SIGKILL found alive).

    Processes that appear during the grace (a child forked on SIGTERM) do not get SIGTERM,
    as with killpg; they are frozen and SIGKILLed with the rest.
    """
    scan, families = look()
    signalled = []
    for record in records:
        ours, family = families[id(record)]
        live = [pid for pid in family if scan.alive(pid)]
        if not ours and not live:
            continue
        signalled.append(record)
        group = set(scan.group(record["pgid"])) if ours else set()
        others = [pid for pid in live if pid not in group]
        if reason:
            log.warning(
                "Killing process group %d of execution %s%s: %s",
                record["pgid"],
                record["execution_id"],
                f" and {len(others)} processes that left it" if others else "",
                reason,
            )
        if grace is not None:
            if ours:
                _signal_group(record, signal.SIGTERM)
            for pid in live:
                _send(pid, family[pid], signal.SIGTERM, record)
    remaining = signalled
    if grace is not None:
        deadline = time.monotonic() + max(0.0, grace)
        while True:
            scan, families = look()
            remaining = [record for record in signalled if _live(record, scan, families)]
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(POLL)
    to_kill = list(records) if always_kill else remaining
    if not to_kill:
        return signalled, []
    if reason:
        for record in remaining:
            log.warning(
                "Process group %d of execution %s outlived SIGTERM; sending SIGKILL",
                record["pgid"],
                record["execution_id"],
            )
    needed = _freeze_and_kill(to_kill, look)
    deadline = time.monotonic() + KILL_WAIT
    while True:
        scan, families = look()
        still = [record for record in to_kill if _live(record, scan, families)]
        if not still or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    for record in still:
        log.error(
            "Processes %s of execution %s are still alive after SIGKILL",
            sorted(_live(record, scan, families)),
            record["execution_id"],
        )
    return signalled, [record for record in to_kill if id(record) in needed]


def _freeze_and_kill(records: list[dict], look: Callable[[], tuple[_Scan, Families]]) -> set[int]:
    """SIGSTOP every live member, look again until no new one appears (a stopped process
    cannot fork, so this ends), then SIGKILL them all. Returns ids of the records that had any."""
    frozen: dict[int, tuple[float, dict]] = {}
    had: set[int] = set()
    groups: dict[int, dict] = {}
    for _ in range(FREEZE_ROUNDS):
        scan, families = look()
        new = False
        for record in records:
            ours, family = families[id(record)]
            if ours:
                groups[id(record)] = record
                had.add(id(record))
                _signal_group(record, signal.SIGSTOP)
            for pid, started in family.items():
                if pid not in frozen and scan.alive(pid) and _send(pid, started, signal.SIGSTOP, record):
                    frozen[pid] = (started, record)
                    had.add(id(record))
                    new = True
        if not new:
            break
    for record in groups.values():
        _signal_group(record, signal.SIGKILL)
    for pid, (started, record) in frozen.items():
        _send(pid, started, signal.SIGKILL, record)
    return had


def create_time_of(pid: int) -> float | None:
    """psutil's create_time of `pid` (None if it is gone): with the pid, a process's identity."""
    return _create_time(pid)


def terminate(pid: int, create_time: float, grace: float | None = 2.0) -> bool:
    """`ProcessRegistry.stop` without a registry, for the leader `pid` that started at
    `create_time` (taken before anything could reap it) and leads its own group: the group and
    the leader's tree; nothing recorded, no adopted orphans. Returns whether SIGKILL found
    something alive."""
    record = {"execution_id": "", "pgid": int(pid), "pid": int(pid), "create_time": float(create_time)}

    def look() -> tuple[_Scan, Families]:
        scan = _Scan()
        return scan, _families([record], scan)

    return bool(_terminate([record], grace, look, always_kill=True)[1])


def _send(pid: int, started: float, sig: int, record: dict) -> bool:
    """Signal `pid` if it is still the process that started at `started`.

    Through a pidfd opened *before* the check, so the pid cannot be recycled in between
    (os.kill after the check where pidfds are missing)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        fd = None
    try:
        now = _create_time(pid)
        if now is None or not _same_time(now, started):
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    except OSError as exc:
        log.error("Cannot signal process %d of execution %s: %s", pid, record["execution_id"], exc)
        return False
    finally:
        if fd is not None:
            os.close(fd)


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
