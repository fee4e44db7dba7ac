"""Scripts must not outlive the server: real servers, real scripts, SIGTERM past the grace and kill -9.

The server records the process group of every CustomScriptJob run in DATA_DIR/run/processes
(texium.core.scheduling.processes.ProcessRegistry); at shutdown past SHUTDOWN_GRACE_SECONDS it kills the
groups it abandons, and at start-up it kills those an earlier, dead instance left running. The
script here also starts a daemon (`setsid -f`), out of its group: it must go the same way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.server_process import live_members, wait_for

SPAWN = (
    "#!/bin/sh\n"
    "setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 60' </dev/null >/dev/null 2>&1\n"
    "sleep 60 &\necho $! > child.pid\necho $$ > leader.pid\nsleep 60\n"
)


def read_pid(path: Path, timeout=15.0) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().endswith("\n"), timeout), f"{path} never written"
    return int(path.read_text())


@pytest.fixture
def script_groups():
    """Pgids of the scripts a test started, and (pid, create_time) of their daemons: whatever
    survives (the bug) is killed afterwards."""
    pgids: list = []
    yield pgids
    for entry in pgids:
        try:
            if isinstance(entry, tuple):
                if daemon_alive(*entry):
                    os.kill(entry[0], signal.SIGKILL)
            else:
                os.killpg(entry, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def daemon_alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def scripts(tmp_path):
    path = tmp_path / "scripts"
    path.mkdir()
    script = path / "spawn.sh"
    script.write_text(SPAWN)
    script.chmod(0o755)
    return path


def start_script(server, scripts: Path, script_groups: list) -> tuple[str, int, int, tuple[int, float]]:
    """Run spawn.sh now through the API; returns (execution id, pgid, child pid, (daemon pid,
    create_time)) once it runs."""
    api = server.api
    user_id = api.create_user(name="Scripts", role="admin")
    job_id = api.create_job(
        user_id,
        job_class_string="jobs.custom.CustomScriptJob",
        name="spawner",
        pub_args=["spawn.sh"],
        pub_kwargs={"timeout": 300},
        is_enabled=False,
    )
    response = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert response.status_code == 200, response.text
    execution_id = response.json()["execution_id"]
    leader = read_pid(scripts / "leader.pid")
    script_groups.append(leader)  # start_new_session: the leader's pid is the group's id
    child = read_pid(scripts / "child.pid")
    assert os.getpgid(child) == leader
    pid = read_pid(scripts / "daemon.pid")
    daemon = (pid, psutil.Process(pid).create_time())
    script_groups.append(daemon)
    assert os.getsid(pid) == pid != leader
    assert wait_for(lambda: api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"] == "running")
    return execution_id, leader, child, daemon


def record_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "run" / "processes").glob("*.json"))


def test_shutdown_past_the_grace_period_kills_the_script_group(start_server, tmp_path, scripts, script_groups):
    env = {"TEXIUM_SHUTDOWN_GRACE_SECONDS": "1", "TEXIUM_SCRIPTS_DIR": str(scripts)}
    data_dir = tmp_path / "data"
    server = start_server("sqlite", data_dir, env=env)
    execution_id, pgid, child, daemon = start_script(server, scripts, script_groups)
    assert set(live_members(pgid)) >= {pgid, child}
    assert psutil.Process(daemon[0]).ppid() == server.process.pid  # the server is a subreaper

    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 15
    # The server waited 1 s, then killed the group it abandoned before exiting.
    assert wait_for(lambda: live_members(pgid) == [], timeout=2), (
        f"script processes {live_members(pgid)} outlived the server\n{server.log()}"
    )
    assert wait_for(lambda: not daemon_alive(*daemon), timeout=2), f"the daemon outlived the server\n{server.log()}"
    assert record_files(data_dir) == []

    again = start_server("sqlite", data_dir, env=env)
    execution = again.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    assert execution["status"] == "abandoned", execution
    assert execution["completed_at"]


def test_kill_9_then_restart_kills_the_orphaned_script_group(start_server, tmp_path, scripts, script_groups):
    env = {"TEXIUM_SCRIPTS_DIR": str(scripts)}
    data_dir = tmp_path / "data"
    first = start_server("sqlite", data_dir, env=env)
    execution_id, pgid, child, daemon = start_script(first, scripts, script_groups)

    # The script can write its pid files a moment before the server has recorded it, and its
    # descendants are recorded every half second.
    def recorded():
        records = [json.loads(path.read_text()) for path in record_files(data_dir) if execution_id in path.name]
        return [r for r in records if daemon[0] in {pid for pid, _ in r["descendants"]}]

    assert wait_for(recorded), f"no record of the running script and its daemon in {data_dir / 'run' / 'processes'}"
    first.kill()
    time.sleep(0.5)
    assert set(live_members(pgid)) >= {pgid, child}  # a dead server cannot stop its scripts
    assert daemon_alive(*daemon)

    second = start_server("sqlite", data_dir, env=env)
    assert wait_for(lambda: live_members(pgid) == [], timeout=5), (
        f"script processes {live_members(pgid)} are still running after the restart\n{second.log()}"
    )
    assert wait_for(lambda: not daemon_alive(*daemon), timeout=5), f"the daemon outlived the restart\n{second.log()}"
    assert wait_for(lambda: record_files(data_dir) == [], timeout=5)
    execution = second.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    assert execution["status"] == "abandoned", execution
    assert execution["completed_at"]
    error = execution["error"]
    assert re.search(r"script|process group", error, re.I) and re.search(r"killed|stopped", error, re.I), error
    assert str(pgid) in second.log() or "script" in second.log().lower()
