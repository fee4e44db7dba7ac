"""The ten built-in jobs end to end THROUGH THE API: one run of each on a real server.

Each test creates a job with POST /api/scheduler/jobs, runs it with POST .../run and waits for
the execution; then it checks the real peer (a loopback SMTP server, a recording HTTP server, a
listening port, files in BACKUP_DIR / REPORT_DIR / SCRIPTS_DIR) and what the API serves
afterwards. What each job does with its arguments, its failures, retries and limits is tested
once, by calling the job directly, in tests/test_jobs_builtin.py.

The jobs that read or write the datastore (backup, cleanup, maintenance, metrics, report) run
on SQLite and mongomock; the others (echo, health check, email, webhook, custom script) on
SQLite only. One server per provider is started for the module, on demand, with SMTP_*,
BACKUP_DIR, REPORT_DIR and SCRIPTS_DIR pointing at module-scoped peers and temp dirs.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.jobs_fixtures import http_server, smtp_server
from tests.server_process import PROVIDERS, Api, ServerProcess
from texium.core.datastore.base import INDEXES
from texium.core.registry import JobRegistry

ALL_JOBS = (
    "jobs.echo.EchoJob",
    "jobs.server.ServerHealthCheckJob",
    "jobs.backup.DataBackupJob",
    "jobs.email.EmailNotificationJob",
    "jobs.cleanup.DataCleanupJob",
    "jobs.metrics.SystemMetricsJob",
    "jobs.report.ReportGenerationJob",
    "jobs.webhook.WebhookJob",
    "jobs.maintenance.MaintenanceJob",
    "jobs.custom.CustomScriptJob",
)
PY = f"#!{sys.executable}\n"
ACTIVE = ("scheduled", "running")
STORE_NAMES = {"sqlite": "sqlite", "mongomock": "mongodb"}  # what the datastore calls itself


# --------------------------------------------------------------------------- fixtures


@dataclass
class Env:
    provider: str
    process: ServerProcess
    api: Api
    user_id: str
    base: Path
    backup_dir: Path
    report_dir: Path
    scripts_dir: Path
    smtp_handler: object


def _write_script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(mode)
    return path


def _start_env(provider: str, base: Path, smtp_handler, smtp_port: int) -> Env:
    backup_dir, report_dir, scripts_dir = base / "backups", base / "reports", base / "scripts"
    scripts_dir.mkdir()
    _write_script(
        scripts_dir / "hello.py",
        PY
        + (
            "import json, os, sys\n"
            "print('hello from the script')\n"
            "print('argv=' + json.dumps(sys.argv[1:]))\n"
            "print('stdin=' + json.dumps(json.load(sys.stdin), sort_keys=True))\n"
            "print('execution=' + os.environ.get('TEXIUM_EXECUTION_ID', ''))\n"
            "print('a warning', file=sys.stderr)\n"
        ),
    )
    _write_script(scripts_dir / "hang.sh", "#!/bin/sh\necho started\nsleep 30\n")
    process = ServerProcess(
        provider,
        base / "data",
        env={
            "TEXIUM_SMTP_HOST": "127.0.0.1",
            "TEXIUM_SMTP_PORT": str(smtp_port),
            "TEXIUM_SMTP_FROM": "texium@example.com",
            "TEXIUM_SMTP_TIMEOUT": "10",
            "TEXIUM_BACKUP_DIR": str(backup_dir),
            "TEXIUM_REPORT_DIR": str(report_dir),
            "TEXIUM_SCRIPTS_DIR": str(scripts_dir),
            "TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8",  # the peers are on loopback, refused by default
        },
    ).start()
    try:
        user_id = process.api.create_user(name="Jobs API", role="admin")
    except BaseException:
        process.stop()
        raise
    return Env(provider, process, process.api, user_id, base, backup_dir, report_dir, scripts_dir, smtp_handler)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """provider -> Env, each server started the first time a test asks for it, all stopped at the end."""
    started: dict[str, Env] = {}
    with smtp_server() as (handler, smtp_port):

        def get(provider: str) -> Env:
            if provider not in started:
                base = tmp_path_factory.mktemp(f"jobs-api-{provider}")
                started[provider] = _start_env(provider, base, handler, smtp_port)
            return started[provider]

        try:
            yield get
        finally:
            for env in started.values():
                env.process.stop()


@pytest.fixture(params=PROVIDERS)
def env(request, servers) -> Env:
    """For the jobs that use the datastore: once per provider."""
    return servers(request.param)


@pytest.fixture
def sqlite_env(servers) -> Env:
    """For the jobs that never touch the datastore: the provider makes no difference to them."""
    return servers("sqlite")


def create(env: Env, class_string: str, pub_args=None, pub_kwargs=None, name=None) -> str:
    body = {
        "user_id": env.user_id,
        "job_class_string": class_string,
        "name": name or f"{class_string.rsplit('.', 1)[-1]} {uuid.uuid4().hex[:6]}",
        "pub_args": pub_args or [],
        "pub_kwargs": pub_kwargs or {},
        # Disabled: the default cron fields fire every minute, which would add executions (and
        # mails, webhook calls) behind the tests' backs. Run now works for disabled jobs.
        "is_enabled": False,
    }
    response = env.api.post("/api/scheduler/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["job_id"]


def start_run(api: Api, job_id: str) -> str:
    started = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert started.status_code == 200, started.text
    return started.json()["execution_id"]


def run_now(api: Api, job_id: str, timeout: float = 20) -> dict:
    execution = api.wait_execution(start_run(api, job_id), timeout=timeout)
    assert execution["job_id"] == job_id
    return execution


def run_job(env: Env, class_string: str, pub_args=None, pub_kwargs=None, timeout: float = 20, name=None) -> dict:
    return run_now(env.api, create(env, class_string, pub_args, pub_kwargs, name), timeout)


def completed(execution: dict) -> str:
    assert execution["status"] == "completed", execution
    assert execution["error"] in ("", None), execution
    assert execution["output"], execution
    return execution["output"]


def failed(execution: dict, *needles: str) -> str:
    """A failed execution whose error is a clear message (no traceback) containing the needles."""
    assert execution["status"] == "failed", execution
    error = execution["error"]
    assert error and "Traceback" not in error, execution
    for needle in needles:
        assert needle in error, (needle, execution)
    return error


def create_server(env: Env, **fields) -> str:
    body = {"user_id": env.user_id, "name": f"srv-{uuid.uuid4().hex[:6]}", "hostname": "127.0.0.1", **fields}
    response = env.api.post("/api/servers/create", json=body)
    assert response.status_code == 201, response.text
    return response.json()["server_id"]


def get_server(env: Env, server_id: str) -> dict:
    response = env.api.get(f"/api/servers/{server_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _all_executions(api: Api) -> list[dict]:
    body = api.get("/api/scheduler/executions?limit=1000").json()
    assert body["total"] <= 1000
    return body["data"]


# --------------------------------------------------------------------------- available jobs


def test_available_jobs_lists_all_ten_with_their_meta_info(sqlite_env):
    """The listing serves each class's meta_info as is (its content: test_jobs_builtin.py)."""
    response = sqlite_env.api.get("/api/scheduler/available-jobs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["jobs"])
    assert [job["class_string"] for job in body["jobs"]][:10] == list(ALL_JOBS)  # the document's order
    registry = JobRegistry()
    for job in body["jobs"][:10]:
        cls = registry.resolve(job["class_string"])
        meta = json.loads(json.dumps(cls.meta_info()))
        assert job["name"] == cls.__name__ == job["class_string"].rsplit(".", 1)[1]
        assert job["meta_info"] == meta and job["description"] == meta["description"], job["class_string"]


# --------------------------------------------------------------------------- echo


def test_echo_job_echoes_its_arguments(sqlite_env):
    output = completed(run_job(sqlite_env, "jobs.echo.EchoJob", ["a", 1], {"k": "v"}))
    assert output.startswith("Echo Job executed at ")
    assert output.endswith("\nArgs: ['a', 1]\nKwargs: {'k': 'v'}\n")


# --------------------------------------------------------------------------- server health check


def test_health_check_updates_the_server_the_api_serves(sqlite_env):
    env = sqlite_env
    with http_server(statuses=(200,)) as web:
        port = web.server_address[1]
        server_id = create_server(env, port=port, instance_url=web.url + "/health", status="unknown")
        job_id = create(env, "jobs.server.ServerHealthCheckJob", [server_id], {"timeout": 2})
        output = completed(run_now(env.api, job_id))
        assert "is running (was unknown)" in output and f"TCP 127.0.0.1:{port}: open" in output
        assert f"HTTP GET {web.url}/health: 200 (" in output
        assert [r["path"] for r in web.requests if r["method"] == "GET"] == ["/health"]
        server = get_server(env, server_id)
        assert server["status"] == "running" and server["last_checked_at"] is not None
        check = server["last_check"]
        assert check["reachable"] is True and check["http_status"] == 200 and check["latency_ms"] is not None
        first_check = server["last_checked_at"]

    # The web server is gone, its port closed: the same server is now stopped.
    output = completed(run_now(env.api, job_id))
    assert "is stopped (was running)" in output and f"TCP 127.0.0.1:{port}: unreachable" in output
    server = get_server(env, server_id)
    assert server["status"] == "stopped" and server["last_check"]["reachable"] is False
    assert server["last_checked_at"] >= first_check


# --------------------------------------------------------------------------- backup


def test_backup_writes_a_compressed_dump_into_backup_dir(env):
    marker_email = f"backup-{uuid.uuid4().hex[:8]}@example.com"
    env.api.create_user(name="Backed Up", email=marker_email)
    server_id = create_server(env, port=22, password="pl41n-t3xt-secret")
    output = completed(
        run_job(env, "jobs.backup.DataBackupJob", [], {"collections": ["users", "servers", "jobs"], "keep": 5})
    )
    assert output.startswith("Backup written to " + str(env.backup_dir))
    dump = Path(output.splitlines()[0].removeprefix("Backup written to ").strip())
    assert dump.parent == env.backup_dir and dump.is_dir()
    manifest = json.loads((dump / "manifest.json").read_text())
    assert manifest["provider"] == STORE_NAMES[env.provider]
    assert [c["name"] for c in manifest["collections"]] == ["users", "servers", "scheduler_jobs"]
    for entry in manifest["collections"]:
        path = dump / entry["file"]
        assert path.stat().st_size == entry["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert f"{entry['file']}" in output and f"{entry['count']:>8} documents" in output
    docs = {
        c["name"]: [json.loads(line) for line in gzip.decompress((dump / c["file"]).read_bytes()).splitlines()]
        for c in manifest["collections"]
    }
    assert len(docs["users"]) == env.api.get("/api/users/?limit=1").json()["total"]
    assert any(u["email"] == marker_email for u in docs["users"])
    saved = next(s for s in docs["servers"] if s["_id"] == server_id)
    assert saved["password_encrypted"] and "pl41n-t3xt-secret" not in json.dumps(docs["servers"])
    assert len(docs["scheduler_jobs"]) == env.api.get("/api/scheduler/jobs?limit=1").json()["total"]


# --------------------------------------------------------------------------- email


def test_email_is_received_by_the_smtp_server(sqlite_env):
    env = sqlite_env
    subject = f"Texium API test {uuid.uuid4().hex}"
    execution = run_job(
        env,
        "jobs.email.EmailNotificationJob",
        ["ops@example.com"],
        {"subject": subject, "message": "The nightly run finished."},
    )
    output = completed(execution)
    assert "Email sent to ops@example.com" in output and subject in output
    received = [m for m in env.smtp_handler.messages if subject.encode() in m["content"]]
    assert len(received) == 1, env.smtp_handler.messages
    assert received[0]["rcpt_tos"] == ["ops@example.com"] and received[0]["mail_from"] == "texium@example.com"
    assert b"The nightly run finished." in received[0]["content"]
    assert f"X-Texium-Execution: {execution['_id']}".encode() in received[0]["content"]


# --------------------------------------------------------------------------- cleanup


def test_cleanup_deletes_the_finished_executions(env):
    """days_old=0: every execution that has ended is old. Which younger ones are kept is tested
    with executions seeded with old timestamps in test_jobs_builtin.py (and through the API,
    with the job counters, in test_figures.py)."""
    echo = create(env, "jobs.echo.EchoJob", ["seed"])
    seeds = set()
    for _ in range(3):
        execution = run_now(env.api, echo)
        completed(execution)
        seeds.add(execution["_id"])
    before = _all_executions(env.api)
    ended = {e["_id"] for e in before if e["status"] not in ACTIVE}
    active = {e["_id"] for e in before if e["status"] in ACTIVE}
    assert seeds <= ended

    dry = run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": 0, "dry_run": True})
    output = completed(dry)
    assert f"Would delete {len(ended)} document(s)" in output and f"scheduler_executions: {len(ended)}" in output
    assert "[dry run: nothing deleted]" in output
    assert ended | {dry["_id"]} <= {e["_id"] for e in _all_executions(env.api)}  # nothing deleted

    cleanup = run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": 0, "collections": ["scheduler_executions"]})
    output = completed(cleanup)
    deleted = len(ended) + 1  # the dry run has ended too
    assert output.startswith(f"Deleted {deleted} document(s)") and f"scheduler_executions: {deleted}" in output
    assert {e["_id"] for e in _all_executions(env.api)} == active | {cleanup["_id"]}
    for execution_id in [dry["_id"], *seeds]:
        assert env.api.get(f"/api/scheduler/executions/{execution_id}").status_code == 404
    # Users, servers and jobs are never touched.
    assert env.api.get(f"/api/scheduler/jobs/{echo}").status_code == 200
    assert env.api.get(f"/api/users/{env.user_id}").status_code == 200


# --------------------------------------------------------------------------- metrics


def test_metrics_sample_is_listed_by_the_api(env):
    execution = run_job(env, "jobs.metrics.SystemMetricsJob", [], {"interval": 0.1})
    output = completed(execution)
    assert "System metrics sample" in output and "CPU:" in output and "Memory:" in output and "Disk" in output
    response = env.api.get("/api/scheduler/metrics/system?limit=5")
    assert response.status_code == 200, response.text
    body = response.json()
    sample = next(s for s in body["data"] if s["execution_id"] == execution["_id"])
    assert body["total"] >= 1 and f"System metrics sample {sample['_id']} stored" in output
    assert len(env.api.get("/api/scheduler/metrics/system?limit=1").json()["data"]) == 1
    assert 0 <= sample["cpu_percent"] <= 100 * (sample["cpu_count"] or 1)
    assert sample["memory_total_bytes"] > 0 and sample["disk_total_bytes"] > 0 and sample["process_rss_bytes"] > 0
    assert sample["datastore_provider"] and sample["created_at"].endswith("+00:00")


# --------------------------------------------------------------------------- report


def test_report_is_stored_written_and_served(env):
    ok_job = create(env, "jobs.echo.EchoJob", ["for the report"], name=f"Report OK {uuid.uuid4().hex[:6]}")
    bad_job = create(
        env,
        "jobs.email.EmailNotificationJob",
        ["not an address"],
        {"message": "m"},
        name=f"Report Bad {uuid.uuid4().hex[:6]}",
    )
    completed(run_now(env.api, ok_job))
    completed(run_now(env.api, ok_job))
    bad_execution = run_now(env.api, bad_job)
    failed(bad_execution, "not a valid email address")  # a JobError is a failed run with a clear error

    execution = run_job(env, "jobs.report.ReportGenerationJob", [], {"report_type": "daily"})
    output = completed(execution)
    assert output.startswith("Daily execution report")

    listing = env.api.get("/api/scheduler/reports")
    assert listing.status_code == 200, listing.text
    listed = next(r for r in listing.json()["data"] if r["execution_id"] == execution["_id"])
    assert f"(report {listed['_id']})" in output
    one = env.api.get(f"/api/scheduler/reports/{listed['_id']}")
    assert one.status_code == 200, one.text
    report = one.json()["data"]
    assert report["report_type"] == "daily" and report["period_days"] == 1
    jobs = {row["job_id"]: row for row in report["jobs"]}
    assert jobs[ok_job]["completed"] == 2 and jobs[ok_job]["failed"] == 0 and jobs[ok_job]["success_rate"] == 100.0
    assert jobs[bad_job]["failed"] == 1 and jobs[bad_job]["success_rate"] == 0.0
    assert jobs[ok_job]["max_duration_ms"] >= jobs[ok_job]["avg_duration_ms"] >= 0
    failure = next(f for f in report["failures"] if f["execution_id"] == bad_execution["_id"])
    assert "not a valid email address" in failure["error"]
    assert report["summary"]["executions"] >= 3 and report["summary"]["failed"] >= 1

    json_path, csv_path = Path(report["json_path"]), Path(report["csv_path"])
    assert json_path.parent == env.report_dir and csv_path.parent == env.report_dir
    assert json.loads(json_path.read_text())["_id"] == listed["_id"]
    csv_text = csv_path.read_text()
    assert csv_text.startswith("job_id,job_name,") and ok_job in csv_text and bad_job in csv_text

    assert env.api.get("/api/scheduler/reports/0123456789abcdef01234567").status_code == 404


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_signed_json_with_the_ids(sqlite_env):
    env = sqlite_env
    with http_server(statuses=(200,)) as hook:
        job_id = create(
            env,
            "jobs.webhook.WebhookJob",
            [hook.url + "/texium"],
            {"event": "nightly-done", "count": 3, "secret": "s3cret", "headers": {"X-Team": "ops"}},
        )
        execution = run_now(env.api, job_id)
        output = completed(execution)
        assert "-> HTTP 200" in output and "after 1 attempt(s)" in output
        assert len(hook.requests) == 1
        request = hook.requests[0]
    assert request["method"] == "POST" and request["path"] == "/texium"
    body = json.loads(request["body"])
    assert body["job_id"] == job_id and body["execution_id"] == execution["_id"]
    assert body["data"] == {"event": "nightly-done", "count": 3} and body["timestamp"].endswith("+00:00")
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/json" and headers["x-team"] == "ops"
    expected = "sha256=" + hmac.new(b"s3cret", request["body"], hashlib.sha256).hexdigest()
    assert headers["x-texium-signature"] == expected


# --------------------------------------------------------------------------- maintenance


def test_maintenance_runs_every_task(env):
    tasks = ["rebuild_indexes", "optimize_queries", "clear_cache", "vacuum"]
    output = completed(run_job(env, "jobs.maintenance.MaintenanceJob", [], {"tasks": tasks}, timeout=30))
    first, *lines = output.splitlines()
    assert first == f"Maintenance on the {STORE_NAMES[env.provider]} datastore: {', '.join(tasks)}"
    for task in tasks:
        assert any(line.startswith(f"{task}: ok in ") and " ms - " in line for line in lines), (task, output)
    assert f"rebuilt {sum(len(indexes) for indexes in INDEXES.values())} indexes: users.email_unique, " in output
    # The server's clear_cache hook ran and named the caches it emptied (a missing hook says
    # "nothing to clear"; a hook with no caches "cleared nothing").
    cleared = next(line for line in lines if line.startswith("clear_cache: ok in ")).split(" ms - ", 1)[1]
    assert cleared.startswith("cleared texium.") and "texium.server.handlers.docs.load_description: " in cleared
    if env.provider == "sqlite":  # sqlite.py's cache of base.is_time_field (lru_cache keeps its name)
        assert "texium.core.datastore.base.is_time_field: " in cleared
    # The datastore still answers after indexes were rebuilt and the store vacuumed.
    assert env.api.get(f"/api/users/{env.user_id}").status_code == 200


# --------------------------------------------------------------------------- custom script


def test_custom_script_runs_while_a_hanging_one_times_out(sqlite_env):
    """A script's stdout, stderr, arguments and execution id reach the execution; a hanging
    script is killed at its timeout, keeps what it printed, and does not block other jobs."""
    env = sqlite_env
    hang = create(env, "jobs.custom.CustomScriptJob", ["hang.sh"], {"timeout": 1.5})
    started = time.monotonic()
    hang_execution = start_run(env.api, hang)
    # State changes are recorded a moment later: wait until the run is seen running.
    seen = env.api.wait_execution(hang_execution, done=("running", "completed", "failed", "timeout"))
    assert seen["status"] == "running", seen

    # While the script hangs, another job runs and finishes.
    execution = run_job(env, "jobs.custom.CustomScriptJob", ["hello.py"], {"target": "x y", "count": 3, "timeout": 30})
    output = completed(execution)
    assert "hello from the script" in output
    assert 'argv=["--target", "x y", "--count", "3"]' in output
    assert 'stdin={"count": 3, "target": "x y"}' in output
    assert f"execution={execution['_id']}" in output
    assert "--- stderr ---\na warning" in output and "exited with code 0" in output
    assert env.api.get(f"/api/scheduler/executions/{hang_execution}").json()["data"]["status"] == "running"

    hung = env.api.wait_execution(hang_execution, timeout=15)
    assert hung["status"] == "timeout", hung
    assert "script 'hang.sh' timed out after 1.5 s" in hung["error"] and "process group was killed" in hung["error"]
    assert "started" in hung["output"]  # what the script printed before it was killed is kept
    assert time.monotonic() - started < 10
