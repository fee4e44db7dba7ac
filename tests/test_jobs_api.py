"""The ten built-in jobs end to end THROUGH THE API, on SQLite and mongomock (issue 4, "Done when").

Every test creates a job with POST /api/scheduler/jobs, runs it with POST .../run and waits for
the execution; then it checks the real peer (a loopback SMTP server, a recording HTTP server, a
listening / closed TCP port, files in BACKUP_DIR / REPORT_DIR / SCRIPTS_DIR) and what the API
serves afterwards. One server per provider is started for the whole module with SMTP_*,
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

from tests.jobs_fixtures import closed_port, http_server, listening_port, smtp_server
from tests.server_process import PROVIDERS, Api, ServerProcess
from texium.core.datastore.base import INDEXES

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
REFUSED_RECIPIENT = "nobody@refused.example.com"
PY = f"#!{sys.executable}\n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smtp():
    """One recording SMTP server shared by both providers' servers (subjects are unique)."""
    with smtp_server(refuse=[REFUSED_RECIPIENT]) as (handler, port):
        yield handler, port


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


@pytest.fixture(scope="module", params=PROVIDERS)
def env(request, tmp_path_factory, smtp):
    handler, smtp_port = smtp
    base = tmp_path_factory.mktemp(f"jobs-api-{request.param}")
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
    _write_script(scripts_dir / "broken.sh", "#!/bin/sh\necho partial output\necho 'it broke badly' >&2\nexit 3\n")
    # A real executable just outside SCRIPTS_DIR: `../outside.sh` must be refused, not merely "not found".
    _write_script(base / "outside.sh", f"#!/bin/sh\ntouch '{base / 'ESCAPED'}'\necho escaped\n")
    process = ServerProcess(
        request.param,
        base / "data",
        env={
            "TEXIUM_SMTP_HOST": "127.0.0.1",
            "TEXIUM_SMTP_PORT": str(smtp_port),
            "TEXIUM_SMTP_FROM": "texium@example.com",
            "TEXIUM_SMTP_TIMEOUT": "10",
            "TEXIUM_BACKUP_DIR": str(backup_dir),
            "TEXIUM_REPORT_DIR": str(report_dir),
            "TEXIUM_SCRIPTS_DIR": str(scripts_dir),
        },
    ).start()
    api = process.api
    user_id = api.create_user(name="Jobs API", role="admin")
    yield Env(request.param, process, api, user_id, base, backup_dir, report_dir, scripts_dir, handler)
    process.stop()


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


def run_now(api: Api, job_id: str, timeout: float = 20) -> dict:
    started = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert started.status_code == 200, started.text
    execution = api.wait_execution(started.json()["execution_id"], timeout=timeout)
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


# --------------------------------------------------------------------------- available jobs


def test_available_jobs_lists_all_ten_with_meta_info(env):
    response = env.api.get("/api/scheduler/available-jobs")
    assert response.status_code == 200, response.text
    body = response.json()
    by_class = {job["class_string"]: job for job in body["jobs"]}
    assert body["total"] == len(body["jobs"])
    assert list(by_class)[:10] == list(ALL_JOBS)  # the document's order
    for class_string in ALL_JOBS:
        job = by_class[class_string]
        assert job["name"] == class_string.rsplit(".", 1)[1]
        meta = job["meta_info"]
        assert meta["description"] and job["description"] == meta["description"]
        assert isinstance(meta["arguments"], list) and meta["arguments"], class_string
        for argument in meta["arguments"]:
            assert {"name", "type", "required", "description"} <= set(argument), (class_string, argument)
        example = meta["example_arguments"]
        assert isinstance(example["pub_args"], list) and isinstance(example["pub_kwargs"], dict), class_string
        assert isinstance(meta["notes"], str) and meta["notes"].strip(), class_string


# --------------------------------------------------------------------------- echo


def test_echo_job_echoes_its_arguments(env):
    output = completed(run_job(env, "jobs.echo.EchoJob", ["a", 1], {"k": "v"}))
    assert output.startswith("Echo Job executed at ")
    assert output.endswith("\nArgs: ['a', 1]\nKwargs: {'k': 'v'}\n")


def test_echo_job_refuses_arguments_of_the_wrong_shape(env):
    # EchoJob accepts any argument values, so its failure path is the API refusing the job.
    for field, value in (("pub_args", "not-a-list"), ("pub_kwargs", ["not", "an", "object"])):
        response = env.api.post(
            "/api/scheduler/jobs",
            json={"user_id": env.user_id, "job_class_string": "jobs.echo.EchoJob", "name": "bad echo", field: value},
        )
        assert response.status_code == 400, response.text
        assert field in response.json()["detail"]
    response = env.api.post(
        "/api/scheduler/jobs",
        json={"user_id": env.user_id, "job_class_string": "jobs.echo.NoSuchJob", "name": "bad class"},
    )
    assert response.status_code == 400 and "job_class_string" in response.json()["detail"]


# --------------------------------------------------------------------------- server health check


def test_health_check_listening_port_running_then_closed_port_stopped(env):
    with listening_port() as (port, close):
        server_id = create_server(env, port=port, status="unknown")
        job_id = create(env, "jobs.server.ServerHealthCheckJob", [server_id], {"timeout": 2})
        output = completed(run_now(env.api, job_id))
        assert f"TCP 127.0.0.1:{port}: open" in output and "is running" in output
        server = get_server(env, server_id)
        assert server["status"] == "running"
        assert server["last_checked_at"] is not None
        assert server["last_check"]["reachable"] is True and server["last_check"]["latency_ms"] is not None
        first_check = server["last_checked_at"]

        close()
        output = completed(run_now(env.api, job_id))
        assert "is stopped (was running)" in output and "unreachable" in output
        server = get_server(env, server_id)
        assert server["status"] == "stopped" and server["last_check"]["reachable"] is False
        assert server["last_checked_at"] >= first_check


def test_health_check_http_instance_url(env):
    with http_server(statuses=(200,)) as web:
        server_id = create_server(env, port=web.server_address[1], instance_url=web.url + "/health")
        output = completed(run_job(env, "jobs.server.ServerHealthCheckJob", [server_id]))
        assert "HTTP GET" in output and ": 200 (" in output
        assert [r["path"] for r in web.requests if r["method"] == "GET"] == ["/health"]
        server = get_server(env, server_id)
        assert server["status"] == "running" and server["last_check"]["http_status"] == 200


def test_health_check_closed_port_is_stopped(env):
    server_id = create_server(env, port=closed_port(), status="running")
    output = completed(run_job(env, "jobs.server.ServerHealthCheckJob", [server_id], {"timeout": 2}))
    assert "is stopped (was running)" in output
    assert get_server(env, server_id)["status"] == "stopped"


def test_health_check_unknown_server_fails(env):
    unknown = "0123456789abcdef01234567"
    failed(run_job(env, "jobs.server.ServerHealthCheckJob", [unknown]), "unknown server id", unknown)
    failed(run_job(env, "jobs.server.ServerHealthCheckJob", []), "server_id is required")


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


def _written_dir(output: str) -> Path:
    return Path(output.splitlines()[0].removeprefix("Backup written to ").strip())


def test_backup_rotation_keeps_the_backup_it_just_wrote(env):
    """keep=1: after every run the one backup left is the one the run says it wrote.

    Three runs within one second show the product bug this test was left failing for: the 2nd
    is named <stamp>-2 and rotates <stamp> away, then the 3rd takes the freed name <stamp>,
    sorts before <stamp>-2 and is deleted by its own rotation while its output still says
    "Backup written to <stamp>" (texium/jobs/backup.py: _publish reuses the name; list_backups
    orders by (stamp, suffix)).
    """
    job_id = create(env, "jobs.backup.DataBackupJob", [], {"collections": ["users"], "keep": 1})
    while time.time() % 1 > 0.05:  # start at the top of a second so that the runs share it
        time.sleep(0.01)
    outputs = [completed(run_now(env.api, job_id)) for _ in range(3)]
    for output in outputs:
        assert _written_dir(output).parent == env.backup_dir
    stamps = {_written_dir(o).name[len("texium-backup-") :][:16] for o in outputs}
    dumps = sorted(p.name for p in env.backup_dir.iterdir() if p.name.startswith("texium-backup-"))
    newest = _written_dir(outputs[-1])
    assert dumps == [newest.name], (
        f"keep=1 must leave the newest backup; runs wrote {[_written_dir(o).name for o in outputs]} "
        f"(stamps {sorted(stamps)}), BACKUP_DIR holds {dumps}; last output:\n{outputs[-1]}"
    )


def test_backup_unknown_collection_fails(env):
    failed(
        run_job(env, "jobs.backup.DataBackupJob", [], {"collections": ["no_such_collection"]}),
        "unknown collection 'no_such_collection'",
    )
    failed(run_job(env, "jobs.backup.DataBackupJob", [], {"keep": 0}), "keep must be at least 1")


# --------------------------------------------------------------------------- email


def test_email_is_received_by_the_smtp_server(env):
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


def test_email_refused_recipient_and_bad_address_fail(env):
    failed(
        run_job(env, "jobs.email.EmailNotificationJob", [REFUSED_RECIPIENT], {"subject": "x", "message": "y"}),
        "refused the recipient",
        "550",
    )
    failed(
        run_job(env, "jobs.email.EmailNotificationJob", ["not an address"], {"message": "y"}),
        "not a valid email address",
    )
    failed(
        run_job(env, "jobs.email.EmailNotificationJob", ["ops@example.com"], {"subject": "no body"}),
        "message is required",
    )


def test_email_fails_clearly_when_smtp_is_not_configured(api):
    # The shared `server` fixture of conftest runs without any SMTP_* settings.
    user_id = api.create_user()
    job_id = api.create_job(
        user_id,
        job_class_string="jobs.email.EmailNotificationJob",
        name="No SMTP",
        pub_args=["ops@example.com"],
        pub_kwargs={"subject": "s", "message": "m"},
        is_enabled=False,
    )
    failed(run_now(api, job_id), "SMTP is not configured", "SMTP_HOST")


# --------------------------------------------------------------------------- cleanup


def _all_executions(api: Api) -> list[dict]:
    body = api.get("/api/scheduler/executions?limit=1000").json()
    assert body["total"] <= 1000
    return body["data"]


def test_cleanup_deletes_exactly_the_old_executions(env):
    echo = create(env, "jobs.echo.EchoJob", ["seed"])
    for _ in range(3):
        completed(run_now(env.api, echo))
    # Everything that exists now (this module's earlier executions and the 3 seeds) is "old".
    old = {e["_id"] for e in _all_executions(env.api)}
    assert all(e["status"] not in ("running", "scheduled") for e in _all_executions(env.api))
    time.sleep(3.0)
    new = set()
    for _ in range(2):
        started = env.api.post(f"/api/scheduler/jobs/{echo}/run").json()["execution_id"]
        completed(env.api.wait_execution(started))
        new.add(started)
    days_old = 1.5 / 86400  # 1.5 s: the old ones are >= 3 s old, the new ones a fraction of a second

    dry = run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": days_old, "dry_run": True})
    output = completed(dry)
    assert f"Would delete {len(old)} document(s)" in output and f"scheduler_executions: {len(old)}" in output
    assert "dry run" in output
    assert old <= {e["_id"] for e in _all_executions(env.api)}  # nothing deleted

    cleanup = run_job(
        env, "jobs.cleanup.DataCleanupJob", [], {"days_old": days_old, "collections": ["scheduler_executions"]}
    )
    output = completed(cleanup)
    assert output.startswith(f"Deleted {len(old)} document(s)") and f"scheduler_executions: {len(old)}" in output
    remaining = {e["_id"] for e in _all_executions(env.api)}
    assert remaining == new | {dry["_id"], cleanup["_id"]}
    for execution_id in list(old)[:3]:
        assert env.api.get(f"/api/scheduler/executions/{execution_id}").status_code == 404
    # Users, servers and jobs are never touched.
    assert env.api.get(f"/api/scheduler/jobs/{echo}").status_code == 200
    assert env.api.get(f"/api/users/{env.user_id}").status_code == 200


def test_cleanup_refuses_protected_collections(env):
    jobs_before = env.api.get("/api/scheduler/jobs?limit=1").json()["total"]
    failed(
        run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": 0, "collections": ["users"]}),
        "'users' is never cleaned up",
    )
    failed(run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": -1}), "days_old must be at least 0")
    assert env.api.get("/api/scheduler/jobs?limit=1").json()["total"] == jobs_before + 2


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


def test_metrics_bad_argument_fails(env):
    failed(run_job(env, "jobs.metrics.SystemMetricsJob", [], {"interval": 60}), "interval must be at most 10")
    failed(run_job(env, "jobs.metrics.SystemMetricsJob", [], {"bogus": 1}), "unknown argument 'bogus'")


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
    failed(bad_execution, "not a valid email address")

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

    # DataCleanupJob prunes reports together with their files.
    output = completed(run_job(env, "jobs.cleanup.DataCleanupJob", [], {"days_old": 0, "collections": ["reports"]}))
    assert "reports: " in output and "report file(s)" in output
    assert env.api.get(f"/api/scheduler/reports/{listed['_id']}").status_code == 404
    assert not json_path.exists() and not csv_path.exists()


def test_report_bad_type_fails(env):
    failed(
        run_job(env, "jobs.report.ReportGenerationJob", [], {"report_type": "hourly"}),
        "report_type must be one of daily, weekly, monthly",
        "'hourly'",
    )


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_signed_json_with_the_ids(env):
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


def test_webhook_retries_a_500_then_succeeds(env):
    with http_server(statuses=(500, 200)) as hook:
        output = completed(run_job(env, "jobs.webhook.WebhookJob", [hook.url], {"backoff": 0.05, "retries": 2}))
        assert len(hook.requests) == 2
    assert "after 2 attempt(s)" in output and "attempt 1: HTTP 500" in output


def test_webhook_to_a_400_server_fails_without_retry(env):
    with http_server(statuses=(400,)) as hook:
        failed(
            run_job(env, "jobs.webhook.WebhookJob", [hook.url], {"backoff": 0.05}),
            "HTTP 400",
            "client errors are not retried",
        )
        assert len(hook.requests) == 1
    failed(run_job(env, "jobs.webhook.WebhookJob", ["ftp://127.0.0.1/x"]), "must be an http:// or https:// URL")
    failed(
        run_job(
            env, "jobs.webhook.WebhookJob", [f"http://127.0.0.1:{closed_port()}/"], {"retries": 1, "backoff": 0.05}
        ),
        "failed after 2 attempt(s)",
    )


# --------------------------------------------------------------------------- maintenance


def test_maintenance_runs_every_task(env):
    tasks = ["rebuild_indexes", "optimize_queries", "clear_cache", "vacuum"]
    output = completed(run_job(env, "jobs.maintenance.MaintenanceJob", [], {"tasks": tasks}, timeout=30))
    first, *lines = output.splitlines()
    assert "datastore" in first
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


def test_maintenance_unknown_task_fails_naming_it(env):
    failed(
        run_job(env, "jobs.maintenance.MaintenanceJob", [], {"tasks": ["clear_cache", "defragment"]}),
        "unknown maintenance task 'defragment'",
    )


# --------------------------------------------------------------------------- custom script


def test_custom_script_output_contains_its_stdout(env):
    execution = run_job(env, "jobs.custom.CustomScriptJob", ["hello.py"], {"target": "x y", "count": 3, "timeout": 30})
    output = completed(execution)
    assert "hello from the script" in output
    assert 'argv=["--target", "x y", "--count", "3"]' in output
    assert 'stdin={"count": 3, "target": "x y"}' in output
    assert f"execution={execution['_id']}" in output
    assert "--- stderr ---\na warning" in output and "exited with code 0" in output


def test_custom_script_failures(env):
    broken = run_job(env, "jobs.custom.CustomScriptJob", ["broken.sh"])
    failed(broken, "exited with code 3", "it broke badly")
    assert "partial output" in broken["output"]  # what the script printed before failing is kept
    failed(run_job(env, "jobs.custom.CustomScriptJob", ["../outside.sh"]), "leaves SCRIPTS_DIR")
    failed(run_job(env, "jobs.custom.CustomScriptJob", [str(env.base / "outside.sh")]), "absolute path")
    failed(run_job(env, "jobs.custom.CustomScriptJob", ["missing.sh"]), "not found")
    assert not (env.base / "ESCAPED").exists()


def test_custom_script_timeout_does_not_block_other_jobs(env):
    hang = create(env, "jobs.custom.CustomScriptJob", ["hang.sh"], {"timeout": 1.5})
    started = time.monotonic()
    hang_execution = env.api.post(f"/api/scheduler/jobs/{hang}/run").json()["execution_id"]
    # While the script hangs, another job runs and finishes.
    echo = completed(run_job(env, "jobs.echo.EchoJob", ["meanwhile"]))
    assert "meanwhile" in echo
    assert env.api.get(f"/api/scheduler/executions/{hang_execution}").json()["data"]["status"] == "running"
    execution = env.api.wait_execution(hang_execution, timeout=15)
    failed(execution, "timed out after 1.5 s", "process group was killed")
    assert "started" in execution["output"]
    assert time.monotonic() - started < 10
