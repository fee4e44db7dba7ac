"""ProcessRegistry with real process groups (no mocked signals), and CustomScriptJob tracking."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.server_process import live_members, wait_for
from texium.core.scheduling.processes import ProcessRegistry
from texium.jobs import custom
from texium.jobs.base import JobContext, JobError
from texium.jobs.custom import CustomScriptJob

NODE = "node-test"


# --------------------------------------------------------------------------- helpers


class Groups:
    """Start process groups like CustomScriptJob does; whatever survives a test is killed."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def spawn(self, script: str = "sleep 60 & echo $!; sleep 60", **kwargs) -> tuple[subprocess.Popen, int]:
        """A group leader (sh) with a child; returns (popen, child pid)."""
        proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True, **kwargs)
        self.started.append(proc)
        child = int(proc.stdout.readline())
        return proc, child

    def harmless(self) -> subprocess.Popen:
        """A long-running process leading its own group, which nothing may kill."""
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.started.append(proc)
        return proc

    def cleanup(self):
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(5)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def groups():
    started = Groups()
    yield started
    started.cleanup()


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "data" / "run" / "processes")


def dead_owner() -> tuple[int, float]:
    """A server stand-in that has exited: (pid, create_time) of a process that is gone."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    create_time = psutil.Process(proc.pid).create_time()
    proc.stdin.close()
    proc.wait(10)
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).create_time() != create_time
    return proc.pid, create_time


def record_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".json"))


def read_record(directory, name) -> dict:
    with open(os.path.join(directory, name)) as fh:
        return json.load(fh)


def write_record(directory, name, **record):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as fh:
        json.dump(record, fh)


# --------------------------------------------------------------------------- track / untrack


def test_track_writes_a_private_record_and_untrack_removes_it(groups, directory):
    registry = ProcessRegistry(directory, NODE)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    proc, _ = groups.spawn()
    registry.track("exec-1", proc)

    [name] = record_files(directory)
    assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600
    assert os.listdir(directory) == [name]  # no temp file left behind
    record = read_record(directory, name)
    assert record["execution_id"] == "exec-1"
    assert record["pgid"] == proc.pid == record["pid"]
    assert record["create_time"] == psutil.Process(proc.pid).create_time()
    assert record["owner_pid"] == os.getpid()
    assert record["owner_create_time"] == psutil.Process().create_time()
    assert record["node_id"] == NODE
    assert [r["execution_id"] for r in registry.tracked()] == ["exec-1"]

    registry.untrack("exec-1", proc.pid)
    assert record_files(directory) == [] and registry.tracked() == []
    registry.untrack("exec-1", proc.pid)  # twice is harmless
    assert live_members(proc.pid)  # untrack only forgets


def test_odd_execution_ids_make_safe_file_names(groups, directory):
    registry = ProcessRegistry(directory, NODE)
    proc, _ = groups.spawn()
    registry.track("../../etc/passwd x", proc)
    [name] = record_files(directory)
    assert "/" not in name and ".." not in name
    assert read_record(directory, name)["execution_id"] == "../../etc/passwd x"
    registry.untrack("../../etc/passwd x", proc.pid)
    assert record_files(directory) == []


def test_a_process_in_the_servers_own_group_is_never_tracked(directory):
    registry = ProcessRegistry(directory, NODE)
    proc = subprocess.Popen(["sleep", "60"])  # no new session: it shares our process group
    try:
        registry.track("exec-own-group", proc)
        assert record_files(directory) == [] and registry.tracked() == []
        assert registry.kill_all("test") == []
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- kill_all


def test_kill_all_kills_every_process_of_the_tracked_groups(groups, directory):
    registry = ProcessRegistry(directory, NODE)
    first, first_child = groups.spawn()
    second, second_child = groups.spawn()
    registry.track("exec-a", first)
    registry.track("exec-b", second)

    started = time.monotonic()
    killed = registry.kill_all("shutdown past the grace period")
    assert time.monotonic() - started < 3
    assert sorted((k["execution_id"], k["pgid"]) for k in killed) == sorted(
        [("exec-a", first.pid), ("exec-b", second.pid)]
    )
    for proc, child in ((first, first_child), (second, second_child)):
        assert proc.wait(5) == -signal.SIGTERM
        assert live_members(proc.pid) == []
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert record_files(directory) == [] and registry.tracked() == []
    # Reaped leaders and empty groups: killpg finds nothing at all.
    assert wait_for(lambda: all(_killpg_gone(p.pid) for p in (first, second)))


def _killpg_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return not live_members(pgid)  # only zombies of a reaper that has not run yet


def test_kill_all_sigkills_what_ignores_sigterm_within_one_grace_for_all(groups, directory):
    registry = ProcessRegistry(directory, NODE)
    # An ignored SIGTERM is inherited by the children too.
    stubborn = [groups.spawn("trap '' TERM; sleep 60 & echo $!; sleep 60") for _ in range(3)]
    for number, (proc, _) in enumerate(stubborn):
        registry.track(f"exec-{number}", proc)
    started = time.monotonic()
    killed = registry.kill_all("test", grace=0.5)
    assert time.monotonic() - started < 3  # one grace for all, not 0.5 s per group and more
    assert len(killed) == 3
    for proc, _ in stubborn:
        assert proc.wait(5) == -signal.SIGKILL
        assert live_members(proc.pid) == []


def test_kill_all_only_touches_its_own_live_groups(groups, directory):
    mine = ProcessRegistry(directory, NODE)
    other = ProcessRegistry(directory, NODE)  # e.g. another server sharing the directory
    ended, _ = groups.spawn("echo 0")
    ended.wait(5)
    theirs, _ = groups.spawn()
    other.track("exec-theirs", theirs)
    ours, _ = groups.spawn()
    mine.track("exec-ours", ours)
    mine.track("exec-ended", ended)  # tracked after it ended (a zombie until reaped): not alive

    killed = mine.kill_all("test")
    assert [k["execution_id"] for k in killed] == ["exec-ours"]
    assert live_members(theirs.pid)
    assert [read_record(directory, n)["execution_id"] for n in record_files(directory)] == ["exec-theirs"]
    assert mine.kill_all("again") == []


# --------------------------------------------------------------------------- reap_stale


def test_reap_stale_kills_the_group_of_a_dead_owner(groups, directory):
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    crashed = ProcessRegistry(directory, NODE, owner_pid=owner.pid)  # the server that will "crash"
    proc, child = groups.spawn()
    crashed.track("exec-crashed", proc)
    owner.stdin.close()
    owner.wait(10)

    fresh = ProcessRegistry(directory, NODE)
    reaped = fresh.reap_stale()
    assert reaped == [{"execution_id": "exec-crashed", "pgid": proc.pid, "pid": proc.pid, "killed": True}]
    assert proc.wait(5) == -signal.SIGTERM
    assert live_members(proc.pid) == []
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert record_files(directory) == []
    assert fresh.reap_stale() == []


def test_reap_stale_kills_children_left_by_a_leader_that_exited(groups, directory):
    owner_pid, owner_time = dead_owner()
    proc, child = groups.spawn("sleep 60 & echo $!")  # the leader exits, its child stays in the group
    proc.wait(5)
    create_time = psutil.Process(child).create_time() - 0.5  # the leader started a little earlier
    write_record(
        directory,
        f"exec-leaderless-{proc.pid}.json",
        execution_id="exec-leaderless",
        pgid=proc.pid,
        pid=proc.pid,
        create_time=create_time,
        owner_pid=owner_pid,
        owner_create_time=owner_time,
        node_id=NODE,
    )
    assert live_members(proc.pid) == [child]
    reaped = ProcessRegistry(directory, NODE).reap_stale()
    assert reaped == [{"execution_id": "exec-leaderless", "pgid": proc.pid, "pid": proc.pid, "killed": True}]
    assert wait_for(lambda: live_members(proc.pid) == [])


def test_reap_stale_reports_an_already_ended_group_and_removes_its_file(groups, directory):
    owner_pid, owner_time = dead_owner()
    crashed = ProcessRegistry(directory, NODE, owner_pid=owner_pid)
    assert crashed.owner_create_time is None  # gone already: the owner's pid alone is recorded
    proc, _ = groups.spawn()
    crashed.track("exec-ended", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert wait_for(lambda: live_members(proc.pid) == [])
    assert ProcessRegistry(directory, NODE).reap_stale() == [
        {"execution_id": "exec-ended", "pgid": proc.pid, "pid": proc.pid, "killed": False}
    ]
    assert record_files(directory) == []


def test_reap_stale_leaves_the_groups_of_a_live_owner_alone(groups, directory):
    other_server = groups.harmless()  # another server on this host, sharing the data dir
    theirs = ProcessRegistry(directory, NODE, owner_pid=other_server.pid)
    proc, child = groups.spawn()
    theirs.track("exec-live-owner", proc)
    own = ProcessRegistry(directory, NODE)
    own_proc, _ = groups.spawn()
    own.track("exec-own", own_proc)  # our own groups are never stale either

    assert ProcessRegistry(directory, NODE).reap_stale() == []
    assert own.reap_stale() == []
    assert {proc.pid, child} <= set(live_members(proc.pid))
    assert live_members(own_proc.pid)
    assert len(record_files(directory)) == 2


def test_reap_stale_treats_a_recycled_owner_pid_as_dead(groups, directory):
    # The owner's pid names a live process (ours) but with another start time: a recycled pid.
    proc, _ = groups.spawn()
    write_record(
        directory,
        f"exec-recycled-owner-{proc.pid}.json",
        execution_id="exec-recycled-owner",
        pgid=proc.pid,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        owner_pid=os.getpid(),
        owner_create_time=psutil.Process().create_time() - 3600,
        node_id=NODE,
    )
    reaped = ProcessRegistry(directory, NODE).reap_stale()
    assert [(r["execution_id"], r["killed"]) for r in reaped] == [("exec-recycled-owner", True)]
    proc.wait(5)
    assert live_members(proc.pid) == []


def test_reap_stale_never_kills_a_recycled_leader_pid(groups, directory):
    owner_pid, owner_time = dead_owner()
    innocent = groups.harmless()  # leads its own group, like a script would, but is not ours
    true_time = psutil.Process(innocent.pid).create_time()
    for offset in (-3600, -5, 5):
        write_record(
            directory,
            f"exec-recycled-{innocent.pid}.json",
            execution_id="exec-recycled",
            pgid=innocent.pid,
            pid=innocent.pid,
            create_time=true_time + offset,
            owner_pid=owner_pid,
            owner_create_time=owner_time,
            node_id=NODE,
        )
        reaped = ProcessRegistry(directory, NODE).reap_stale()
        assert reaped == [{"execution_id": "exec-recycled", "pgid": innocent.pid, "pid": innocent.pid, "killed": False}]
        assert record_files(directory) == []
        time.sleep(0.2)
        assert innocent.poll() is None and live_members(innocent.pid) == [innocent.pid]


def test_reap_stale_leaves_other_nodes_alone(groups, directory):
    owner_pid, owner_time = dead_owner()
    proc, _ = groups.spawn()
    write_record(
        directory,
        f"exec-remote-{proc.pid}.json",
        execution_id="exec-remote",
        pgid=proc.pid,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        owner_pid=owner_pid,
        owner_create_time=owner_time,
        node_id="another-host",
    )
    assert ProcessRegistry(directory, NODE).reap_stale() == []
    assert live_members(proc.pid) and len(record_files(directory)) == 1


def test_corrupt_records_are_removed_and_logged_once(directory, caplog):
    owner_pid, owner_time = dead_owner()
    os.makedirs(directory)
    bad = {
        "garbage.json": b"not json {",
        "empty.json": b"",
        "list.json": b"[1, 2]",
        "binary.json": b"\xff\xfe\x00",
        "huge.json": b"{" + b" " * (200 * 1024) + b"}",
        "missing-fields.json": json.dumps({"execution_id": "x"}).encode(),
        "wrong-types.json": json.dumps(
            {"execution_id": "x", "pgid": "12", "pid": 12, "create_time": 1.0, "owner_pid": owner_pid, "node_id": NODE}
        ).encode(),
        "bool-pid.json": json.dumps(
            {
                "execution_id": "x",
                "pgid": True,
                "pid": True,
                "create_time": 1.0,
                "owner_pid": owner_pid,
                "node_id": NODE,
            }
        ).encode(),
        "pid-one.json": json.dumps(
            {
                "execution_id": "x",
                "pgid": 1,
                "pid": 1,
                "create_time": 1.0,
                "owner_pid": owner_pid,
                "owner_create_time": owner_time,
                "node_id": NODE,
            }
        ).encode(),
        "bad-owner-time.json": json.dumps(
            {
                "execution_id": "x",
                "pgid": 999999,
                "pid": 999999,
                "create_time": 1.0,
                "owner_pid": owner_pid,
                "owner_create_time": "yesterday",
                "node_id": NODE,
            }
        ).encode(),
    }
    for name, data in bad.items():
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(data)
    old_tmp = os.path.join(directory, ".x.json.1.2.tmp")
    fresh_tmp = os.path.join(directory, ".y.json.1.2.tmp")
    for path in (old_tmp, fresh_tmp):
        with open(path, "w") as fh:
            fh.write("{")
    os.utime(old_tmp, (time.time() - 3600, time.time() - 3600))
    os.mkdir(os.path.join(directory, "not-a-file.json"))  # unreadable as a record: logged, no crash

    registry = ProcessRegistry(directory, NODE)
    with caplog.at_level(logging.WARNING, logger="texium.processes"):
        assert registry.reap_stale() == []
        assert registry.reap_stale() == []
    remaining = sorted(os.listdir(directory))
    assert remaining == [os.path.basename(fresh_tmp), "not-a-file.json"]
    for name in bad:
        assert sum(name in r.getMessage() for r in caplog.records) == 1, name
    # The directory that cannot be removed is reported once, not on every call.
    assert sum("not-a-file.json" in r.getMessage() for r in caplog.records) == 2  # unreadable + not removable


def test_an_unusable_directory_is_logged_never_raised(groups, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="texium.processes"):
        registry = ProcessRegistry(str(blocker / "processes"), NODE)
        proc, _ = groups.spawn()
        registry.track("exec-nowhere", proc)
        assert registry.reap_stale() == []
        # Not written down, but still known in memory: shutdown can still kill it.
        assert [k["execution_id"] for k in registry.kill_all("test")] == ["exec-nowhere"]
        registry.untrack("exec-nowhere", proc.pid)
    assert any("Cannot prepare" in r.getMessage() for r in caplog.records)
    assert any("Cannot record" in r.getMessage() for r in caplog.records)
    assert proc.wait(5) == -signal.SIGTERM


# --------------------------------------------------------------------------- CustomScriptJob


@pytest.fixture
def scripts(tmp_path):
    path = tmp_path / "scripts"
    path.mkdir()
    return path


def _script(directory, name, body):
    path = directory / name
    path.write_text(body)
    path.chmod(0o755)


def _context(tmp_path, processes=None) -> JobContext:
    context = JobContext(
        execution_id="exec-script",
        job_id="job-1",
        job_name="script",
        user_id=None,
        datastore=None,
        config={"DATA_DIR": str(tmp_path), "SCRIPTS_DIR": str(tmp_path / "scripts")},
    )
    if processes is not None:
        context.processes = processes
    return context


class Background:
    """Run a job on a thread, keeping its result or exception."""

    def __init__(self, job, *args, **kwargs):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(job, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, job, args, kwargs):
        try:
            self.result = job.run(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout=20):
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self


def _read_pid(path, timeout=10) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().endswith("\n"), timeout), f"{path} never written"
    return int(path.read_text())


def test_custom_script_is_tracked_while_it_runs(tmp_path, scripts, directory):
    _script(
        scripts,
        "wait.sh",
        "#!/bin/sh\necho $$ > leader.pid\nwhile [ ! -f release ]; do sleep 0.05; done\necho released\n",
    )
    registry = ProcessRegistry(directory, NODE)
    run = Background(CustomScriptJob(_context(tmp_path, registry)), "wait.sh", timeout=30)
    leader = _read_pid(scripts / "leader.pid")

    [name] = wait_for(lambda: record_files(directory))  # the script may write its pid before it is tracked
    record = read_record(directory, name)
    assert (record["execution_id"], record["pgid"], record["pid"]) == ("exec-script", leader, leader)
    assert [r["pgid"] for r in registry.tracked()] == [leader]

    (scripts / "release").write_text("")
    run.join()
    assert run.error is None and "exited with code 0" in run.result
    assert record_files(directory) == [] and registry.tracked() == []


def test_custom_script_is_untracked_after_a_timeout_and_a_failure(tmp_path, scripts, directory):
    _script(scripts, "hang.sh", "#!/bin/sh\nsleep 30 &\nsleep 30\n")
    _script(scripts, "fail.sh", "#!/bin/sh\nexit 4\n")
    registry = ProcessRegistry(directory, NODE)
    job = CustomScriptJob(_context(tmp_path, registry))
    with pytest.raises(JobError, match="timed out"):
        job.run("hang.sh", timeout=0.3)
    with pytest.raises(JobError, match="exited with code 4"):
        job.run("fail.sh")
    assert record_files(directory) == [] and registry.tracked() == []


def test_kill_all_stops_a_running_custom_script(tmp_path, scripts, directory):
    _script(scripts, "spawn.sh", "#!/bin/sh\nsleep 60 &\necho $! > child.pid\necho $$ > leader.pid\nsleep 60\n")
    registry = ProcessRegistry(directory, NODE)
    run = Background(CustomScriptJob(_context(tmp_path, registry)), "spawn.sh", timeout=120)
    leader = _read_pid(scripts / "leader.pid")
    child = _read_pid(scripts / "child.pid")
    try:
        killed = registry.kill_all("shutdown past the grace period")
        assert [(k["execution_id"], k["pgid"]) for k in killed] == [("exec-script", leader)]
        run.join()
        assert isinstance(run.error, JobError) and "killed by signal SIGTERM" in str(run.error)
        assert live_members(leader) == []
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        assert record_files(directory) == []
    finally:
        try:
            os.killpg(leader, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_custom_script_ignores_a_context_without_a_registry(tmp_path, scripts, directory):
    _script(scripts, "ok.sh", "#!/bin/sh\necho fine\n")
    context = _context(tmp_path)
    context.processes = object()  # not a ProcessRegistry: ignored
    assert "exited with code 0" in CustomScriptJob(context).run("ok.sh")
    assert "exited with code 0" in CustomScriptJob(_context(tmp_path)).run("ok.sh")
    assert not os.path.exists(directory)


# --------------------------------------------------------------------------- descendants that leave the group

# Three ways out of the script's process group, each ending in a `sleep 300` that writes its pid:
# setsid in a background child (its parent, the script, lives on), `setsid -f` (forks; the
# parent exits at once, so the daemon is an orphan from the start) and a classic double fork.
DAEMON = (
    "import os, sys\n"
    "if os.fork(): sys.exit(0)\n"
    "os.setsid()\n"
    "if os.fork(): os._exit(0)\n"
    "open('daemon.pid', 'w').write(f'{os.getpid()}\\n')\n"
    "os.execvp('sleep', ['sleep', '300'])\n"
)
DETACH = (
    "#!/bin/sh\n"
    "setsid sh -c 'echo $$ > setsid.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &\n"
    "setsid -f sh -c 'echo $$ > setsid-f.pid; exec sleep 300' </dev/null >/dev/null 2>&1\n"
    f'{sys.executable} -c "{DAEMON}" </dev/null >/dev/null 2>&1\n'
    "echo $$ > leader.pid\n"
    "sleep 300\n"
)
DETACHED = ("setsid.pid", "setsid-f.pid", "daemon.pid")

_libc = ctypes.CDLL(None, use_errno=True)


def _set_subreaper(on: bool) -> None:
    # Independent of texium.core.scheduling.processes: the server makes itself a subreaper at start-up.
    assert _libc.prctl(36, int(on), 0, 0, 0) == 0, os.strerror(ctypes.get_errno())  # PR_SET_CHILD_SUBREAPER


class Strays:
    """Processes a test started: those it saw (pid, create_time) and any carrying one of its
    execution ids in TEXIUM_EXECUTION_ID (so a test failing before it read a pid file leaves
    nothing either). Whatever is left at the end is killed and, if it became our child, reaped."""

    def __init__(self, *execution_ids: str):
        self.execution_ids = set(execution_ids)
        self.seen: dict[int, float] = {}

    def note(self, pid: int) -> int:
        try:
            self.seen.setdefault(pid, psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:
            pass
        return pid

    def read(self, path, timeout=10) -> int:
        return self.note(_read_pid(path, timeout))

    def alive(self) -> list[int]:
        return [pid for pid, started in self.seen.items() if _alive_as(pid, started)]

    def cleanup(self):
        for _ in range(3):  # a script still starting may spawn more for a moment
            for process in psutil.process_iter():
                try:
                    marker = process.environ().get("TEXIUM_EXECUTION_ID")
                    if marker in self.execution_ids and process.pid != os.getpid():
                        self.note(process.pid)
                except psutil.Error:
                    pass
            for pid, started in self.seen.items():
                if _alive_as(pid, started):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for pid in self.seen:
            try:
                if psutil.Process(pid).ppid() == os.getpid():
                    os.waitpid(pid, 0)
            except (psutil.Error, ChildProcessError):
                pass


def _alive_as(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) < 0.01
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def strays():
    seen = Strays("exec-script", "exec-crash")
    yield seen
    seen.cleanup()


@pytest.fixture
def subreaper(strays):
    """This process as the server is: a child subreaper (set back afterwards; strays cleaned
    up first, since orphans of the test became our children)."""
    _set_subreaper(True)
    yield
    strays.cleanup()
    _set_subreaper(False)


def _detached(scripts, strays, leader) -> list[int]:
    """The pids of DETACH's three detached sleeps, once each has written its pid file (after
    its setsid): in sessions of their own, out of reach of killpg(leader)."""
    pids = [strays.read(scripts / name) for name in DETACHED]
    assert all(os.getsid(pid) not in (leader, os.getsid(0)) for pid in pids)
    assert not set(pids) & set(live_members(leader))
    return pids


def _our_children(pids) -> list[int]:
    """Those of `pids` that are (zombie) children of this process: orphans it adopted, not reaped."""
    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).ppid() == os.getpid():
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_stopped_script_takes_its_detached_descendants_along(tmp_path, scripts, directory, subreaper, strays, how):
    _script(scripts, "detach.sh", DETACH)
    registry = ProcessRegistry(directory, NODE)
    context = _context(tmp_path, registry)
    run = Background(CustomScriptJob(context), "detach.sh", timeout=1.5 if how == "timeout" else 120)
    leader = strays.read(scripts / "leader.pid")
    detached = _detached(scripts, strays, leader)
    if how == "cancel":
        context.cancelled.set()
    run.join()
    assert isinstance(run.error, JobError) and ("timed out" if how == "timeout" else "stopped") in str(run.error)
    assert wait_for(lambda: strays.alive() == [], timeout=3), f"{strays.alive()} outlived the {how} of {detached}"
    # The orphans this process adopted were reaped too: none is left as a zombie child.
    assert wait_for(lambda: _our_children(detached) == []), _our_children(detached)
    assert record_files(directory) == [] and registry.tracked() == []


def test_kill_all_ends_the_detached_descendants(tmp_path, scripts, directory, subreaper, strays):
    _script(scripts, "detach.sh", DETACH)
    registry = ProcessRegistry(directory, NODE)
    run = Background(CustomScriptJob(_context(tmp_path, registry)), "detach.sh", timeout=120)
    leader = strays.read(scripts / "leader.pid")
    detached = _detached(scripts, strays, leader)
    killed = registry.kill_all("shutdown past the grace period")
    assert [(k["execution_id"], k["pgid"]) for k in killed] == [("exec-script", leader)]
    run.join()
    assert isinstance(run.error, JobError) and "killed by signal SIGTERM" in str(run.error)
    assert wait_for(lambda: strays.alive() == [], timeout=3), f"{strays.alive()} outlived kill_all ({detached})"


OWNER = """
import ctypes, sys
sys.path.insert(0, {repo!r})
from texium.core.scheduling.processes import ProcessRegistry
from texium.jobs.base import JobContext
from texium.jobs.custom import CustomScriptJob
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # a child subreaper, as the server is
registry = ProcessRegistry({directory!r}, {node!r})
context = JobContext(execution_id="exec-crash", job_id="job-1", job_name="script", user_id=None, datastore=None,
                     config={{"DATA_DIR": {data!r}, "SCRIPTS_DIR": {scripts!r}}})
context.processes = registry
CustomScriptJob(context).run("detach.sh", timeout=120)
"""


def test_reap_stale_after_a_kill_9_ends_the_detached_descendants(tmp_path, scripts, directory, strays):
    """The server dies with kill -9: its orphans go to init, and only the record names them."""
    _script(scripts, "detach.sh", DETACH)
    code = OWNER.format(
        repo=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        directory=directory,
        node=NODE,
        data=str(tmp_path),
        scripts=str(scripts),
    )
    owner = subprocess.Popen([sys.executable, "-c", code])
    try:
        leader = strays.read(scripts / "leader.pid")
        detached = _detached(scripts, strays, leader)

        def recorded():
            files = record_files(directory)
            listed = {pid for name in files for pid, _ in read_record(directory, name).get("descendants", [])}
            return set(detached) <= listed

        wait_for(recorded, timeout=3)  # the owner polls every 0.5 s; not asserted: the outcome is
        owner.kill()
        owner.wait(10)
        assert all(_alive_as(p, strays.seen[p]) for p in detached)  # a dead server cannot stop them

        reaped = ProcessRegistry(directory, NODE).reap_stale(grace=1.0)
        assert [(r["execution_id"], r["pgid"], r["killed"]) for r in reaped] == [("exec-crash", leader, True)]
        assert wait_for(lambda: strays.alive() == [], timeout=3), (
            f"{strays.alive()} of {detached} outlived reap_stale (recorded: {recorded()})"
        )
        assert record_files(directory) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def test_a_detached_child_holding_the_output_is_killed_when_the_script_exits(
    tmp_path, scripts, directory, subreaper, strays, monkeypatch
):
    monkeypatch.setattr(custom, "LINGER", 0.3)  # how long leftovers may hold the pipes
    _script(scripts, "holder.sh", "#!/bin/sh\nsetsid -f sh -c 'echo $$ > holder.pid; exec sleep 300'\necho bye\n")
    registry = ProcessRegistry(directory, NODE)
    started = time.monotonic()
    run = Background(CustomScriptJob(_context(tmp_path, registry)), "holder.sh", timeout=120)
    holder = strays.read(scripts / "holder.pid")
    run.join(timeout=10)  # before the fix: until the holder exits (300 s)
    assert time.monotonic() - started < 5
    assert run.error is None and "were killed" in run.result, run.result
    assert wait_for(lambda: strays.alive() == [], timeout=3), f"the holder {holder} outlived its script"
    assert wait_for(lambda: _our_children([holder]) == [])


def test_an_adopted_daemon_outlives_a_script_that_succeeded_and_is_reaped_when_it_exits(
    tmp_path, scripts, directory, subreaper, strays
):
    body = "#!/bin/sh\nsetsid -f sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1\n"
    _script(scripts, "daemon.sh", body)
    registry = ProcessRegistry(directory, NODE)
    assert "exited with code 0" in CustomScriptJob(_context(tmp_path, registry)).run("daemon.sh")
    daemon = strays.read(scripts / "daemon.pid")
    assert wait_for(lambda: _our_children([daemon]) == [daemon])  # adopted by this "server"
    registry.poll(force=True)
    assert strays.alive() == [daemon]  # a script that exited 0 may leave a daemon; it is not killed
    os.kill(daemon, signal.SIGKILL)
    assert wait_for(lambda: psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE)
    registry.poll(force=True)
    assert not psutil.pid_exists(daemon), "the adopted daemon was left a zombie"


def test_reap_stale_never_kills_a_recycled_descendant_pid(groups, directory):
    owner_pid, owner_time = dead_owner()
    gone_pid, gone_time = dead_owner()  # the leader, long gone with its group
    innocent = groups.harmless()
    true_time = psutil.Process(innocent.pid).create_time()
    for offset in (-3600, -5, 5):
        write_record(
            directory,
            f"exec-recycled-descendant-{gone_pid}.json",
            execution_id="exec-recycled-descendant",
            pgid=gone_pid,
            pid=gone_pid,
            create_time=gone_time,
            descendants=[[innocent.pid, true_time + offset]],
            owner_pid=owner_pid,
            owner_create_time=owner_time,
            node_id=NODE,
        )
        [reaped] = ProcessRegistry(directory, NODE).reap_stale()
        assert reaped["killed"] is False
        time.sleep(0.1)
        assert innocent.poll() is None


def test_set_subreaper_makes_the_orphans_of_descendants_our_children():
    from texium.core.scheduling.processes import is_subreaper, set_subreaper

    assert not is_subreaper()
    daemon = None
    try:
        assert set_subreaper(True) and is_subreaper()
        proc = subprocess.Popen(["sh", "-c", "setsid -f sh -c 'echo $$; exec sleep 60'"], stdout=subprocess.PIPE)
        daemon = int(proc.stdout.readline())
        proc.wait(5)
        proc.stdout.close()
        assert wait_for(lambda: psutil.Process(daemon).ppid() == os.getpid())
    finally:
        if daemon is not None:
            os.kill(daemon, signal.SIGKILL)
            os.waitpid(daemon, 0)
        assert set_subreaper(False)
    assert not is_subreaper()
