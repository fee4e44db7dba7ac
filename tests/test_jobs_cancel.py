"""Built-in jobs stop when `context.cancelled` is set, and a script's output is live.

The jobs are called directly with a JobContext, as the runner builds it; scripts are real
subprocesses in a tmp SCRIPTS_DIR and the webhook posts to a real loopback receiver.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import psutil
import pytest

from tests.jobs_fixtures import admin_owner, http_server, listening_port, server_doc
from tests.server_process import wait_for
from texium.core.datastore import new_id, open_datastore
from texium.jobs import custom as custom_module
from texium.jobs.backup import DataBackupJob
from texium.jobs.base import JobContext, JobError, JobTimeout
from texium.jobs.cleanup import DataCleanupJob
from texium.jobs.custom import KILL_GRACE, CustomScriptJob
from texium.jobs.report import ReportGenerationJob
from texium.jobs.server import ServerHealthCheckJob
from texium.jobs.webhook import WebhookJob

STOPPED = "the run was cancelled or passed its time limit"


@pytest.fixture
def store():
    ds = open_datastore("mongomock://", f"texium_cancel_{uuid.uuid4().hex[:8]}", "")
    yield ds
    ds.close()


@pytest.fixture
def config(tmp_path):
    (tmp_path / "scripts").mkdir()
    return {
        "DATA_DIR": str(tmp_path),
        "SCRIPTS_DIR": str(tmp_path / "scripts"),
        "BACKUP_DIR": str(tmp_path / "backups"),
        "REPORT_DIR": str(tmp_path / "reports"),
        "OUTBOUND_ALLOW": ["127.0.0.0/8"],  # the receivers listen on loopback
    }


class Sink:
    """A context's write: keeps each piece with the time it arrived."""

    def __init__(self):
        self.pieces: list[tuple[float, str]] = []

    def __call__(self, text: str) -> None:
        self.pieces.append((time.monotonic(), text))

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.pieces)


def context(store, config, sink=None, **fields) -> JobContext:
    return JobContext(
        execution_id=new_id(),
        job_id=new_id(),
        job_name="cancel test",
        user_id=admin_owner(store),
        datastore=store,
        config=config,
        write=sink or Sink(),
        **fields,
    )


def script(config, name: str, body: str) -> str:
    path = os.path.join(config["SCRIPTS_DIR"], name)
    with open(path, "w") as fh:
        fh.write(body)
    os.chmod(path, 0o755)
    return path


def read_pid(config, name: str) -> int:
    path = os.path.join(config["SCRIPTS_DIR"], name)
    assert wait_for(lambda: os.path.exists(path) and open(path).read().endswith("\n"), 5), f"{name} never written"
    with open(path) as fh:
        return int(fh.read())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(pids):
    for pid in pids:
        try:
            os.kill(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------- live output


def test_script_stdout_reaches_the_output_while_the_script_runs(store, config):
    script(config, "slow.sh", "#!/bin/sh\necho first\nsleep 1\necho second\n")
    sink = Sink()
    started = time.monotonic()
    result = CustomScriptJob(context(store, config, sink)).run("slow.sh")
    ended = time.monotonic()
    first_at = next(at for at, text in sink.pieces if "first" in text)
    assert first_at - started < 0.8 and ended - first_at > 0.5  # written a second before the end
    assert sink.text == "first\nsecond\n"  # once, not again at the end
    assert "exited with code 0" in result


def test_script_stdout_characters_split_across_reads_come_out_whole(store, config):
    body = (
        f"#!{sys.executable}\nimport sys, time\nout = sys.stdout.buffer\n"
        "out.write('é'.encode()[:1]); out.flush(); time.sleep(0.3)\n"
        "out.write('é'.encode()[1:] + b' done'); out.flush()\n"
    )
    script(config, "split.py", body)
    sink = Sink()
    CustomScriptJob(context(store, config, sink)).run("split.py")
    assert sink.text == "é done\n"  # the missing final line break is added, as before


# --------------------------------------------------------------------------- cancel and timeouts


STUBBORN = (
    "#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho $! > child.pid\necho $$ > leader.pid\n"
    "echo ready\nwhile :; do sleep 0.1; done\n"
)


def test_cancel_kills_a_script_that_ignores_sigterm_and_its_child(store, config):
    script(config, "stubborn.sh", STUBBORN)
    ctx = context(store, config)
    set_at = []

    def cancel():
        read_pid(config, "leader.pid")
        set_at.append(time.monotonic())
        ctx.cancelled.set()

    threading.Thread(target=cancel, daemon=True).start()
    try:
        with pytest.raises(JobError, match="was stopped .*got SIGTERM, then SIGKILL") as info:
            CustomScriptJob(ctx).run("stubborn.sh", timeout=60)
        assert time.monotonic() - set_at[0] < KILL_GRACE + 2
        assert not isinstance(info.value, JobTimeout)
        pids = [read_pid(config, "leader.pid"), read_pid(config, "child.pid")]
        assert wait_for(lambda: all(gone(pid) for pid in pids), 2), f"still running: {pids}"
    finally:
        kill_leftovers([read_pid(config, "leader.pid"), read_pid(config, "child.pid")])


def test_cancel_needs_only_sigterm_for_a_script_that_honours_it(store, config):
    script(config, "polite.sh", "#!/bin/sh\necho $$ > leader.pid\nsleep 300\n")
    ctx = context(store, config)
    threading.Thread(target=lambda: (read_pid(config, "leader.pid"), ctx.cancelled.set()), daemon=True).start()
    started = time.monotonic()
    with pytest.raises(JobError, match="its process group got SIGTERM$"):
        CustomScriptJob(ctx).run("polite.sh")
    assert time.monotonic() - started < KILL_GRACE
    assert wait_for(lambda: gone(read_pid(config, "leader.pid")), 2)


def test_timeout_argument_raises_job_timeout_and_kills_children(store, config):
    script(config, "hang.sh", "#!/bin/sh\nsleep 30 &\necho $! > child.pid\necho started\nsleep 30\n")
    sink = Sink()
    with pytest.raises(JobTimeout, match="timed out after 0.5 s; its process group was killed"):
        CustomScriptJob(context(store, config, sink, timeout_seconds=60)).run("hang.sh", timeout=0.5)
    assert sink.text == "started\n"
    child = read_pid(config, "child.pid")
    assert wait_for(lambda: gone(child), 3), f"child {child} still running"


def test_default_timeout_applies_only_without_a_job_time_limit(store, config, monkeypatch):
    monkeypatch.setattr(custom_module, "DEFAULT_TIMEOUT", 0.5)
    script(config, "long.sh", "#!/bin/sh\nsleep 1\necho done\n")
    sink = Sink()
    result = CustomScriptJob(context(store, config, sink, timeout_seconds=60)).run("long.sh")
    assert sink.text == "done\n" and "exited with code 0" in result  # ran past the default
    with pytest.raises(JobTimeout, match="timed out after 0.5 s"):
        CustomScriptJob(context(store, config)).run("long.sh")  # no job limit: the default holds


# --------------------------------------------------------------------------- webhook


def test_webhook_cancel_during_backoff_ends_the_run_at_once(store, config):
    with http_server(statuses=(500,)) as server:
        ctx = context(store, config)
        set_at = []

        def cancel():
            assert wait_for(lambda: server.requests, 5)
            set_at.append(time.monotonic())
            ctx.cancelled.set()

        threading.Thread(target=cancel, daemon=True).start()
        with pytest.raises(JobError, match="cancelled before attempt 2: attempt 1: HTTP 500"):
            WebhookJob(ctx).run(server.url + "/hook", backoff=5, retries=3)
        assert time.monotonic() - set_at[0] < 1
        assert len(server.requests) == 1


def test_webhook_cancelled_before_the_first_attempt_sends_nothing(store, config):
    with http_server(statuses=(200,)) as server:
        ctx = context(store, config)
        ctx.cancelled.set()
        with pytest.raises(JobError, match="cancelled before attempt 1$"):
            WebhookJob(ctx).run(server.url + "/hook")
        assert server.requests == []


# --------------------------------------------------------------------------- datastore jobs


def test_report_cleanup_and_backup_stop_when_cancelled(datastore, config):
    datastore.collection("reports").insert({"title": "old", "created_at": None})
    for cls, expected in (
        (ReportGenerationJob, "report stopped: "),
        (DataCleanupJob, "cleanup stopped: "),
        (DataBackupJob, "backup stopped while dumping "),
    ):
        ctx = context(datastore, config)
        ctx.cancelled.set()
        with pytest.raises(JobError, match=expected) as info:
            cls(ctx).run()
        assert STOPPED in str(info.value)
    assert datastore.collection("reports").count() == 1  # no report stored, nothing deleted
    assert not os.path.exists(config["REPORT_DIR"]) or os.listdir(config["REPORT_DIR"]) == []
    assert os.listdir(config["BACKUP_DIR"]) == []  # the partial backup was removed


def test_health_check_stops_before_the_http_check(datastore, config):
    with listening_port() as (port, _close):
        server_id = server_doc(datastore, port=port, instance_url=f"http://127.0.0.1:{port}/")
        ctx = context(datastore, config)
        ctx.cancelled.set()
        with pytest.raises(JobError, match="stopped before HTTP GET .*the server is left unchanged"):
            ServerHealthCheckJob(ctx).run(server_id)
    assert datastore.servers.get(server_id)["status"] == "unknown"
