"""The built-in jobs and texium.restore, called directly against real loopback peers.

This is where each job's behaviour is tested, once: arguments, failures, retries, signatures,
limits. Jobs are called with a JobContext built here; the datastore is a real provider (SQLite
in tmp_path, and mongomock too where the job reads or writes the datastore). Each job's one run
through the API on a real server is in tests/test_jobs_api.py.
"""

from __future__ import annotations

import csv
import email
import email.policy
import gzip
import hashlib
import hmac
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import psutil
import pytest
from cryptography.fernet import Fernet

from tests.jobs_fixtures import admin_owner, closed_port, http_server, listening_port, server_doc, smtp_server
from tests.test_users_api import INVALID_EMAILS, VALID_EMAILS
from texium.core.datastore import new_id, open_datastore
from texium.core.timeutil import parse_iso, utcnow
from texium.jobs import backup as backup_module
from texium.jobs import custom as custom_module
from texium.jobs import report as report_module
from texium.jobs.backup import DataBackupJob
from texium.jobs.base import JobBase, JobContext, JobError
from texium.jobs.cleanup import DataCleanupJob
from texium.jobs.custom import CustomScriptJob
from texium.jobs.echo import EchoJob
from texium.jobs.email import EmailNotificationJob
from texium.jobs.maintenance import MaintenanceJob
from texium.jobs.metrics import SystemMetricsJob
from texium.jobs.report import ReportGenerationJob
from texium.jobs.server import ServerHealthCheckJob
from texium.jobs.webhook import WebhookJob
from texium.restore import RestoreError, restore_backup

PROVIDERS = ["sqlite", "mongomock"]


# --------------------------------------------------------------------------- fixtures


def _open(provider: str, tmp_path, label: str = "db"):
    if provider == "sqlite":
        return open_datastore(None, "texium_test", str(tmp_path / label))
    return open_datastore("mongomock://", f"texium_test_{label}_{uuid.uuid4().hex[:8]}", "")


@pytest.fixture(params=PROVIDERS)
def store(request, tmp_path):
    ds = _open(request.param, tmp_path)
    yield ds
    ds.close()


@pytest.fixture
def sqlite_store(tmp_path):
    ds = _open("sqlite", tmp_path)
    yield ds
    ds.close()


@pytest.fixture
def config(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # The peers listen on loopback, which the outbound rule refuses by default (tests/test_outbound.py).
    return {"DATA_DIR": str(data), "OUTBOUND_ALLOW": ["127.0.0.0/8"]}


class Runner:
    """Build a JobContext like the runner does and collect the whole output."""

    def __init__(self, datastore, config, hooks=None):
        self.datastore = datastore
        self.config = config
        self.hooks = hooks or {}
        self.owner = None  # the jobs' owner (admin_owner() for jobs that read others' records)
        self.written: list[str] = []
        self.context = None

    def __call__(self, cls: type[JobBase], *args, **kwargs) -> str:
        self.written = []
        self.context = JobContext(
            execution_id=new_id(),
            job_id=new_id(),
            job_name=f"test {cls.__name__}",
            user_id=self.owner or new_id(),
            datastore=self.datastore,
            config=self.config,
            hooks=self.hooks,
            write=self.written.append,
        )
        result = cls(self.context).run(*args, **kwargs)
        text = result if isinstance(result, str) else json.dumps(result)
        return "".join(self.written) + (text or "")


@pytest.fixture
def run(sqlite_store, config):
    return Runner(sqlite_store, config)


@pytest.fixture
def run_any(store, config):
    return Runner(store, config)


# --------------------------------------------------------------------------- meta_info

ALL_JOBS = {
    EchoJob: "Simple job that echoes arguments",
    ServerHealthCheckJob: "Job to check server health status",
    DataBackupJob: "Job to backup database",
    EmailNotificationJob: "Job to send email notifications",
    DataCleanupJob: "Job to clean up old data",
    SystemMetricsJob: "Job to collect system metrics",
    ReportGenerationJob: "Job to generate reports",
    WebhookJob: "Job to send webhook notifications",
    MaintenanceJob: "Job for maintenance tasks",
    CustomScriptJob: "Job to run custom scripts",
}


@pytest.mark.parametrize("cls", list(ALL_JOBS), ids=lambda c: c.__name__)
def test_meta_info_describes_the_job(cls):
    assert issubclass(cls, JobBase)
    assert cls.__doc__.strip() == ALL_JOBS[cls]
    meta = cls.meta_info()
    assert meta["description"] == ALL_JOBS[cls]
    assert meta["notes"] and isinstance(meta["notes"], str)
    for arg in meta["arguments"]:
        assert set(arg) == {"name", "type", "required", "description"}
    example = meta["example_arguments"]
    assert isinstance(example["pub_args"], list) and isinstance(example["pub_kwargs"], dict)
    json.dumps(meta)


# --------------------------------------------------------------------------- health check


def test_health_check_running_then_stopped(run_any):
    """On both providers: the check writes status, last_checked_at and the nested last_check."""
    run = run_any
    run.owner = admin_owner(run.datastore)
    ds = run.datastore
    with http_server([200]) as web, listening_port() as (port, close):
        sid = server_doc(ds, port=port, instance_url=web.url + "/health")
        out = run(ServerHealthCheckJob, sid, timeout=2)
        doc = ds.servers.get(sid)
        assert doc["status"] == "running", out
        assert out.startswith("Server 'web-1' is running (was unknown)\n"), out
        assert f"TCP 127.0.0.1:{port}: open (" in out and f"HTTP GET {web.url}/health: 200 (" in out
        assert web.requests[0]["method"] == "GET" and web.requests[0]["path"] == "/health"
        check = doc["last_check"]
        assert check["reachable"] is True and check["http_status"] == 200 and check["error"] is None
        assert isinstance(check["latency_ms"], (int, float)) and check["latency_ms"] >= 0
        assert abs(parse_iso(check["checked_at"]) - doc["last_checked_at"]) < timedelta(seconds=1)
        assert utcnow() - doc["last_checked_at"] < timedelta(seconds=10)
        first_checked = doc["last_checked_at"]

        close()  # the port stops listening: the same server is now stopped
        out = run(ServerHealthCheckJob, sid, timeout=2)
    doc = ds.servers.get(sid)
    assert out.startswith("Server 'web-1' is stopped (was running): "), out
    assert f"TCP 127.0.0.1:{port}: unreachable (" in out and "HTTP GET" not in out
    assert doc["status"] == "stopped"
    assert doc["last_check"]["reachable"] is False and doc["last_check"]["http_status"] is None
    assert "refused" in doc["last_check"]["error"]
    assert doc["last_checked_at"] >= first_checked
    assert "hunter2" not in out and doc["password_encrypted"] not in out


def test_health_check_closed_port_and_http_500(run):
    run.owner = admin_owner(run.datastore)
    ds = run.datastore
    sid = server_doc(ds, port=closed_port(), status="running")
    out = run(ServerHealthCheckJob, sid, timeout=2)
    assert ds.servers.get(sid)["status"] == "stopped"
    assert "is stopped (was running)" in out and "refused" in out

    with http_server([500]) as web:
        port = web.server_address[1]
        sid2 = server_doc(ds, port=port, instance_url=web.url + "/")
        out = run(ServerHealthCheckJob, sid2, timeout=2)
    doc = ds.servers.get(sid2)
    assert doc["status"] == "stopped"
    assert doc["last_check"]["reachable"] is True and doc["last_check"]["http_status"] == 500
    assert "500" in out


def test_health_check_bad_arguments(run):
    run.owner = admin_owner(run.datastore)
    unknown = new_id()
    with pytest.raises(JobError, match=f"no server '{unknown}' that the job's owner may check"):
        run(ServerHealthCheckJob, unknown)
    with pytest.raises(JobError, match="no server 'not-an-id' that the job's owner may check"):
        run(ServerHealthCheckJob, "not-an-id")
    with pytest.raises(JobError, match="server_id is required"):
        run(ServerHealthCheckJob)
    with pytest.raises(JobError, match="timeout"):
        run(ServerHealthCheckJob, new_id(), timeout=-1)
    sid = server_doc(run.datastore, port=70000)
    with pytest.raises(JobError, match="port"):
        run(ServerHealthCheckJob, sid)


# --------------------------------------------------------------------------- email


def _smtp_config(config, port, **extra):
    return dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_FROM="texium@example.org", SMTP_TIMEOUT=5, **extra)


def test_email_is_received(run, config):
    with smtp_server() as (handler, port):
        run.config = _smtp_config(config, port)
        out = run(
            EmailNotificationJob,
            "alice@example.com",
            subject="Nightly done",
            message="All 3 jobs succeeded.\nSee you tomorrow.",
        )
    assert "Email sent to alice@example.com" in out
    assert len(handler.messages) == 1
    got = handler.messages[0]
    assert got["mail_from"] == "texium@example.org" and got["rcpt_tos"] == ["alice@example.com"]
    msg = email.message_from_bytes(got["content"], policy=email.policy.default)
    assert msg["Subject"] == "Nightly done"
    assert msg["To"] == "alice@example.com" and msg["From"] == "texium@example.org"
    assert msg["X-Texium-Execution"] == run.context.execution_id
    assert msg.get_content().replace("\r\n", "\n") == "All 3 jobs succeeded.\nSee you tomorrow.\n"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_login_and_no_password_leak(run, config):
    with smtp_server(credentials=("mailer", "s3cret-pw")) as (handler, port):
        # The test server has no TLS: a plaintext login must be allowed explicitly (tests/test_outbound.py).
        login = {"SMTP_USERNAME": "mailer", "SMTP_ALLOW_PLAINTEXT_LOGIN": True}
        run.config = _smtp_config(config, port, SMTP_PASSWORD="s3cret-pw", **login)
        out = run(EmailNotificationJob, "bob@example.com", message="hi")
        assert len(handler.messages) == 1 and "s3cret-pw" not in out
        msg = email.message_from_bytes(handler.messages[0]["content"], policy=email.policy.default)
        assert msg["Subject"] == "Texium notification: test EmailNotificationJob"

        run.config = _smtp_config(config, port, SMTP_PASSWORD="wrong-pw", **login)
        with pytest.raises(JobError, match="refused the login") as info:
            run(EmailNotificationJob, "bob@example.com", message="hi")
        assert "wrong-pw" not in str(info.value)
    assert len(handler.messages) == 1


def test_email_failures(run, config):
    with smtp_server(refuse={"ghost@example.com"}) as (handler, port):
        run.config = _smtp_config(config, port)
        with pytest.raises(JobError, match="refused the recipient.*550"):
            run(EmailNotificationJob, "ghost@example.com", subject="x", message="y")
        for bad in ("not-an-address", "a b@example.com", "x@", "evil@example.com\r\nBcc: x@y.z", 42):
            with pytest.raises(JobError, match="recipient"):
                run(EmailNotificationJob, bad, message="y")
        with pytest.raises(JobError, match="subject must not contain line breaks"):
            run(EmailNotificationJob, "a@example.com", subject="hi\nBcc: x@y.z", message="y")
        with pytest.raises(JobError, match="message is required"):
            run(EmailNotificationJob, "a@example.com", subject="x")
        with pytest.raises(JobError, match="recipient is required"):
            run(EmailNotificationJob, message="y")
    assert handler.messages == []

    run.config = dict(config)  # SMTP_HOST unset
    with pytest.raises(JobError, match="SMTP is not configured: set SMTP_HOST"):
        run(EmailNotificationJob, "a@example.com", message="y")
    run.config = _smtp_config(config, closed_port())
    with pytest.raises(JobError, match="cannot reach SMTP server"):
        run(EmailNotificationJob, "a@example.com", message="y")


def test_email_addresses_are_checked_like_a_users_email(run, config):
    """The same addresses as tests/test_users_api.py: what a user may have, a job may mail."""
    with smtp_server() as (handler, port):
        run.config = _smtp_config(config, port)
        for address, normalised in VALID_EMAILS.items():
            out = run(EmailNotificationJob, address, subject="s", message="m")
            assert f"Email sent to {normalised} via" in out, address
            assert handler.messages[-1]["rcpt_tos"] == [normalised]
        for address in INVALID_EMAILS:
            with pytest.raises(JobError) as info:
                run(EmailNotificationJob, address, message="m")
            assert str(info.value) == f"recipient is not a valid email address: {address!r}"
        assert len(handler.messages) == len(VALID_EMAILS)

        # The sender (SMTP_FROM) may be host-local, like the default texium@localhost, but is
        # otherwise checked the same way.
        run.config = dict(_smtp_config(config, port), SMTP_FROM="Texium <texium@localhost>")
        assert "Email sent to ops@example.com" in run(EmailNotificationJob, "ops@example.com", message="m")
        assert handler.messages[-1]["mail_from"] == "texium@localhost"
        for sender in ("texium@exa_mple.com", "a..b@localhost"):
            run.config = dict(_smtp_config(config, port), SMTP_FROM=sender)
            with pytest.raises(JobError, match="SMTP_FROM is not a valid email address"):
                run(EmailNotificationJob, "ops@example.com", message="m")


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_signed_json(run):
    with http_server([200]) as web:
        out = run(
            WebhookJob,
            web.url + "/hook?x=1",
            event="deploy",
            count=3,
            nested={"a": [1, 2]},
            headers={"X-Custom": "yes", "Authorization": "Bearer tok"},
            secret="sh-secret",
            retries=2,
            timeout=5,
            backoff=0.01,
        )
    assert "HTTP 200" in out and "after 1 attempt" in out
    assert "sh-secret" not in out
    assert len(web.requests) == 1
    req = web.requests[0]
    assert req["method"] == "POST" and req["path"] == "/hook?x=1"
    body = json.loads(req["body"])
    assert body["data"] == {"event": "deploy", "count": 3, "nested": {"a": [1, 2]}}
    assert body["job_id"] == run.context.job_id and body["execution_id"] == run.context.execution_id
    assert utcnow() - parse_iso(body["timestamp"]) < timedelta(seconds=10)
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "yes" and headers["authorization"] == "Bearer tok"
    expected = "sha256=" + hmac.new(b"sh-secret", req["body"], hashlib.sha256).hexdigest()
    assert headers["x-texium-signature"] == expected
    assert b"sh-secret" not in req["body"]


def test_webhook_retries_5xx_then_succeeds(run):
    with http_server([500, 503, 200]) as web:
        started = time.monotonic()
        out = run(WebhookJob, web.url, msg="hi", retries=3, backoff=0.05)
        elapsed = time.monotonic() - started
    assert len(web.requests) == 3
    assert "HTTP 200" in out and "after 3 attempt" in out
    assert "attempt 1: HTTP 500" in out and "attempt 2: HTTP 503" in out
    assert elapsed >= 0.05 + 0.1  # exponential backoff: 0.05 then 0.1
    assert "x-texium-signature" not in {k.lower() for k in web.requests[0]["headers"]}  # no secret given
    assert all(r["body"] == web.requests[0]["body"] for r in web.requests)


def test_webhook_failures(run):
    with http_server([400]) as web:
        run.owner = admin_owner(run.datastore)  # an admin's job sees a private reply
        with pytest.raises(JobError, match=r"HTTP 400.*attempt 1 \(client errors are not retried\)") as info:
            run(WebhookJob, web.url, retries=3, backoff=0.01)
        assert len(web.requests) == 1  # no retry on 4xx
        assert '"answer": 400' in str(info.value)  # a private address's reply: shown on an admin's job
    with http_server([502]) as web:
        with pytest.raises(JobError, match="after 3 attempt"):
            run(WebhookJob, web.url, retries=2, backoff=0.01)
        assert len(web.requests) == 3
    with http_server([302], extra_headers={"Location": "http://127.0.0.1:1/"}) as web:
        with pytest.raises(JobError, match="redirected"):
            run(WebhookJob, web.url, retries=0)
    with pytest.raises(JobError, match="after 2 attempt.*refused"):
        run(WebhookJob, f"http://127.0.0.1:{closed_port()}/", retries=1, backoff=0.01, timeout=2)
    for url in ("ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)"):
        with pytest.raises(JobError, match="url must be an http:// or https:// URL"):
            run(WebhookJob, url)
    for url in ("http://", 5):
        with pytest.raises(JobError, match="url"):
            run(WebhookJob, url)
    with pytest.raises(JobError, match="headers"):
        run(WebhookJob, "http://127.0.0.1:1/", headers={"X-Bad": "a\r\nInjected: 1"})
    with pytest.raises(JobError, match="retries"):
        run(WebhookJob, "http://127.0.0.1:1/", retries=-1)


def test_webhook_to_a_host_that_never_answers_ends_by_its_total_timeout(run):
    """A peer that accepts and never answers: without a cap, retries x timeout (up to 21 x 600 s)
    held a worker; every attempt and wait of one call now ends by total_timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepted by the kernel, never read, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        started = time.monotonic()
        with pytest.raises(JobError, match=r"total_timeout 1\.5 s reached") as info:
            run(WebhookJob, url, retries=20, timeout=600, backoff=0.01, total_timeout=1.5)
        elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 3, elapsed
    assert "attempt 1: timed out after 1.5 s" in str(info.value)
    with pytest.raises(JobError, match="total_timeout"):
        run(WebhookJob, url, total_timeout=0)
    with pytest.raises(JobError, match="total_timeout"):
        run(WebhookJob, url, total_timeout=3601)


# --------------------------------------------------------------------------- cleanup


def _execution(ds, age: timedelta, status: str, **extra) -> str:
    created = utcnow() - age
    doc = {
        "job_id": extra.pop("job_id", new_id()),
        "user_id": new_id(),
        "job_name": extra.pop("job_name", "j"),
        "job_class_string": "jobs.echo.EchoJob",
        "status": status,
        "output": "",
        "error": None,
        "scheduled_at": created,
        "started_at": created,
        "completed_at": created,
        "created_at": created,
        "duration_ms": 10,
        "hostname": "h",
        "pid": 1,
        "occurrence_key": f"k-{new_id()}",
    }
    doc.update(extra)
    return ds.executions.insert(doc)


def test_cleanup_deletes_exactly_the_old_rows(run_any):
    ds = run_any.datastore
    old, new = timedelta(days=40), timedelta(days=1)
    old_done = {
        _execution(ds, old, "completed"),
        _execution(ds, old, "failed"),
        _execution(ds, old, "skipped"),
        _execution(ds, old, "abandoned"),
    }
    kept = {
        _execution(ds, old, "running"),
        _execution(ds, old, "scheduled"),
        _execution(ds, new, "completed"),
        _execution(ds, timedelta(days=29), "failed"),
    }
    old_audit = ds.audit_logs.insert(
        {
            "job_id": new_id(),
            "job_name": "j",
            "event": "modified",
            "user": "u",
            "description": "d",
            "created_at": utcnow() - old,
        }
    )
    new_audit = ds.audit_logs.insert(
        {
            "job_id": new_id(),
            "job_name": "j",
            "event": "added",
            "user": "u",
            "description": "d",
            "created_at": utcnow() - new,
        }
    )
    ancient = utcnow() - timedelta(days=400)
    ds.users.insert(
        {"name": "u", "email": "u@example.com", "role": "user", "created_at": ancient, "updated_at": ancient}
    )
    server_doc(ds, created_at=ancient)
    ds.jobs.insert(
        {
            "user_id": new_id(),
            "name": "j",
            "job_class_string": "jobs.echo.EchoJob",
            "created_at": ancient,
            "updated_at": ancient,
        }
    )
    ds.collection("system_metrics").insert({"cpu_percent": 1.0, "created_at": ancient})

    out = run_any(
        DataCleanupJob,
        days_old=30,
        dry_run=True,
        collections=["scheduler_executions", "scheduler_audit_logs", "system_metrics"],
    )
    assert "Would delete 6" in out and "scheduler_executions: 4" in out and "scheduler_audit_logs: 1" in out
    assert ds.executions.count() == 8 and ds.audit_logs.count() == 2

    out = run_any(DataCleanupJob, days_old=30)  # default: executions only
    assert "Deleted 4" in out and "scheduler_executions: 4" in out
    assert {d["_id"] for d in ds.executions.find()} == kept
    assert all(ds.executions.get(i) is None for i in old_done)
    assert ds.audit_logs.count() == 2

    out = run_any(DataCleanupJob, days_old=30, collections=["scheduler_audit_logs", "system_metrics"])
    assert "scheduler_audit_logs: 1" in out and "system_metrics: 1" in out
    assert ds.audit_logs.get(old_audit) is None and ds.audit_logs.get(new_audit) is not None
    assert ds.users.count() == 1 and ds.servers.count() == 1 and ds.jobs.count() == 1

    out = run_any(DataCleanupJob, days_old=0)  # everything finished, never running / scheduled
    assert "scheduler_executions: 2" in out
    assert {d["status"] for d in ds.executions.find()} == {"running", "scheduled"}


def test_cleanup_refuses_bad_arguments(run):
    ds = run.datastore
    old_run = _execution(ds, timedelta(days=400), "completed")
    ancient = utcnow() - timedelta(days=400)
    ds.users.insert(
        {"name": "u", "email": "u@example.com", "role": "user", "created_at": ancient, "updated_at": ancient}
    )
    for name in ("users", "servers", "scheduler_jobs", "jobs"):
        with pytest.raises(JobError, match=f"'{name}' is never cleaned up"):
            run(DataCleanupJob, days_old=0, collections=["scheduler_executions", name])
    with pytest.raises(JobError, match="unknown collection 'nope'"):
        run(DataCleanupJob, collections=["nope"])
    with pytest.raises(JobError, match="days_old must be at least 0, got -1"):
        run(DataCleanupJob, days_old=-1)
    for bad in ("abc", True, None, float("nan")):
        with pytest.raises(JobError, match="days_old"):
            run(DataCleanupJob, days_old=bad)
    with pytest.raises(JobError, match="dry_run"):
        run(DataCleanupJob, dry_run="maybe")
    with pytest.raises(JobError, match="unknown argument 'days'"):
        run(DataCleanupJob, days=3)
    # A refused clean-up deletes nothing, not even the history it was also asked for.
    assert ds.users.count() == 1 and ds.executions.get(old_run) is not None


# --------------------------------------------------------------------------- metrics


def test_metrics_sample_is_stored(run_any):
    out = run_any(SystemMetricsJob, interval=0.05)
    samples = run_any.datastore.collection("system_metrics").find()
    assert len(samples) == 1
    s = samples[0]
    assert 0 <= s["cpu_percent"] <= 100 * (psutil.cpu_count() or 1)
    assert s["memory_total_bytes"] > 0 and 0 <= s["memory_percent"] <= 100
    assert s["disk_total_bytes"] > 0 and s["disk_path"] == run_any.config["DATA_DIR"]
    assert s["process_rss_bytes"] > 0 and s["pid"] == os.getpid()
    assert s["load_avg_1m"] is not None
    assert s["datastore_provider"] == run_any.datastore.provider
    assert isinstance(s["datastore_size_bytes"], int)
    assert utcnow() - s["created_at"] < timedelta(seconds=10)
    assert s["execution_id"] == run_any.context.execution_id
    assert f"System metrics sample {s['_id']} stored" in out
    assert "CPU:" in out and "Memory:" in out and "Disk" in out
    with pytest.raises(JobError, match="interval must be at most 10"):
        run_any(SystemMetricsJob, interval=60)
    with pytest.raises(JobError, match="unknown argument 'bogus'"):
        run_any(SystemMetricsJob, bogus=1)
    assert run_any.datastore.collection("system_metrics").count() == 1  # a refused run stores nothing


# --------------------------------------------------------------------------- report


def test_report_numbers_files_and_cleanup(run_any, config, monkeypatch):
    run_any.owner = admin_owner(run_any.datastore)  # an admin's report covers every user's jobs
    monkeypatch.setattr(report_module, "PAGE_SIZE", 2)  # read executions in pages of two
    ds = run_any.datastore
    a, b = new_id(), new_id()
    hour = timedelta(hours=1)
    for ms in (100, 200, 300):
        _execution(ds, 2 * hour, "completed", job_id=a, job_name="=alpha", duration_ms=ms)
    _execution(
        ds,
        3 * hour,
        "failed",
        job_id=a,
        job_name="=alpha",
        duration_ms=50,
        error='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad input\n',
    )
    _execution(ds, hour, "failed", job_id=b, job_name="beta", duration_ms=1000, error="boom\nsecond line")
    _execution(ds, timedelta(minutes=1), "running", job_id=b, job_name="beta", duration_ms=None)
    _execution(ds, timedelta(days=3), "completed", job_id=b, job_name="beta", duration_ms=7)

    out = run_any(ReportGenerationJob, report_type="daily")
    reports = ds.collection("reports").find()
    assert len(reports) == 1
    rep = reports[0]
    assert rep["report_type"] == "daily" and rep["period_days"] == 1
    start, end = parse_iso(rep["period_start"]), parse_iso(rep["period_end"])
    assert end - start == timedelta(days=1) and utcnow() - rep["created_at"] < timedelta(seconds=10)
    jobs = {j["job_id"]: j for j in rep["jobs"]}
    assert jobs[a]["executions"] == 4 and jobs[a]["completed"] == 3 and jobs[a]["failed"] == 1
    assert jobs[a]["success_rate"] == 75.0
    assert jobs[a]["avg_duration_ms"] == 162.5 and jobs[a]["max_duration_ms"] == 300
    assert jobs[b]["executions"] == 2 and jobs[b]["failed"] == 1 and jobs[b]["other"] == 1
    assert jobs[b]["success_rate"] == 0.0 and jobs[b]["max_duration_ms"] == 1000
    assert rep["summary"]["executions"] == 6 and rep["summary"]["failures"] == 2
    assert rep["summary"]["success_rate"] == 60.0
    assert [f["error"] for f in rep["failures"]] == ["boom", "ValueError: bad input"]  # newest first
    assert out.startswith("Daily execution report ") and f"(report {rep['_id']})" in out
    assert "6 executions of 2 jobs" in out

    with open(rep["json_path"], encoding="utf-8") as fh:
        on_disk = json.load(fh)
    assert on_disk["_id"] == rep["_id"] and on_disk["jobs"] == rep["jobs"] and on_disk["summary"] == rep["summary"]
    assert os.path.dirname(rep["json_path"]) == os.path.join(config["DATA_DIR"], "reports")
    with open(rep["csv_path"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r["job_id"]: r for r in rows}
    assert by_id[a]["job_name"] == "'=alpha"  # no spreadsheet formula
    assert by_id[a]["executions"] == "4" and by_id[a]["success_rate"] == "75.0"
    assert by_id["TOTAL"]["executions"] == "6"

    run_any(ReportGenerationJob, report_type="weekly", max_failures=1)
    weekly = ds.collection("reports").find_one({"report_type": "weekly"})
    assert weekly["summary"]["executions"] == 7 and weekly["failures_total"] == 2
    assert [f["error"] for f in weekly["failures"]] == ["boom"]

    with pytest.raises(JobError, match="report_type must be one of daily, weekly, monthly, got 'hourly'"):
        run_any(ReportGenerationJob, report_type="hourly")

    out = run_any(DataCleanupJob, days_old=0, collections=["reports"])
    assert "reports: 2" in out and "removed 4 report file" in out
    assert not os.path.exists(rep["json_path"]) and not os.path.exists(rep["csv_path"])
    assert ds.collection("reports").count() == 0


# --------------------------------------------------------------------------- backup / restore


def _seed(ds):
    t = utcnow() - timedelta(days=2, microseconds=123000)
    token = Fernet(Fernet.generate_key()).encrypt(b"plain-server-password").decode()
    uid = ds.users.insert(
        {"name": "Zoë", "email": "zoe@example.com", "role": "admin", "created_at": t, "updated_at": t}
    )
    ds.servers.insert(
        {
            "user_id": uid,
            "name": "db",
            "hostname": "10.0.0.5",
            "port": 5432,
            "status": "running",
            "connection_name": "prod",
            "instance_url": "https://db.example.com",
            "username": "pg",
            "password_encrypted": token,
            "created_at": t,
            "updated_at": t,
            "last_checked_at": None,
            "last_check": {
                "reachable": True,
                "latency_ms": 1.5,
                "http_status": None,
                "error": None,
                "checked_at": "2024-01-01T00:00:00+00:00",
            },
        }
    )
    jid = ds.jobs.insert(
        {
            "user_id": uid,
            "name": "nightly",
            "job_class_string": "jobs.echo.EchoJob",
            "minute": "0",
            "hour": "3",
            "pub_args": ["a", 1, True, None],
            "pub_kwargs": {"k": {"n": [1.5]}},
            "is_enabled": True,
            "is_paused": False,
            "next_run_time": t + timedelta(days=3),
            "last_run_time": None,
            "total_executions": 2**40,
            "created_at": t,
            "updated_at": t,
        }
    )
    for i in range(5):
        _execution(ds, timedelta(hours=i), "completed", job_id=jid, output=f"line {i}\n")
    ds.audit_logs.insert(
        {
            "job_id": jid,
            "job_name": "nightly",
            "event": "added",
            "user": "zoe",
            "description": "created",
            "created_at": t,
        }
    )
    return token


def _dump_all(ds):
    return {
        name: ds.collection(name).find(sort=[("_id", 1)])
        for name in ds.collection_names()
        if ds.collection(name).count()
    }


@pytest.mark.parametrize("target", PROVIDERS)
def test_backup_then_restore_round_trip(run_any, config, tmp_path, target, monkeypatch):
    monkeypatch.setattr(backup_module, "PAGE_SIZE", 2)  # dump in pages of two documents
    src = run_any.datastore
    token = _seed(src)
    out = run_any(DataBackupJob)
    backups = os.listdir(os.path.join(config["DATA_DIR"], "backups"))
    assert len(backups) == 1 and backups[0].startswith("texium-backup-")
    bdir = os.path.join(config["DATA_DIR"], "backups", backups[0])
    assert stat.S_IMODE(os.stat(bdir).st_mode) == 0o700
    with open(os.path.join(bdir, "manifest.json")) as fh:
        manifest = json.load(fh)
    counts = {e["name"]: e["count"] for e in manifest["collections"]}
    assert counts["users"] == 1 and counts["servers"] == 1 and counts["scheduler_executions"] == 5
    assert manifest["total_documents"] == sum(counts.values()) and parse_iso(manifest["created_at"])
    assert out.startswith(f"Backup written to {bdir}\n")
    for e in manifest["collections"]:
        with open(os.path.join(bdir, e["file"]), "rb") as fh:
            raw = fh.read()
        assert len(raw) == e["bytes"] and hashlib.sha256(raw).hexdigest() == e["sha256"]
        assert f"  {e['file']}" in out and f"{e['count']:>8} documents  {e['bytes']:>10} bytes" in out
    with gzip.open(os.path.join(bdir, "servers.jsonl.gz"), "rt") as fh:
        servers_text = fh.read()
    assert token in servers_text and "plain-server-password" not in servers_text
    assert '"$date"' in servers_text

    expected = _dump_all(src)
    fresh = _open(target, tmp_path, "fresh")
    try:
        result = restore_backup(fresh, bdir)
        assert {k: v["inserted"] for k, v in result.items() if v["inserted"]} == {
            k: len(v) for k, v in expected.items()
        }
        assert _dump_all(fresh) == expected  # ids, aware datetimes, nesting, big ints: all exact
        again = restore_backup(fresh, os.path.join(bdir, "manifest.json"))
        assert all(v["inserted"] == 0 for v in again.values())
        assert sum(v["skipped"] for v in again.values()) == sum(len(v) for v in expected.values())

        fresh.users.update(fresh.users.find_one()["_id"], fields={"name": "changed"})
        one = restore_backup(fresh, os.path.join(bdir, "users.jsonl.gz"), drop=True)
        assert one == {"users": {"inserted": 1, "skipped": 0}}
        assert _dump_all(fresh) == expected
    finally:
        fresh.close()


def test_backup_selection_rotation_and_errors(run, config, tmp_path):
    _seed(run.datastore)
    out = run(DataBackupJob, collections=["users", "servers", "jobs"])
    assert "users.jsonl.gz" in out and "scheduler_jobs.jsonl.gz" in out and "scheduler_executions" not in out
    root = os.path.join(config["DATA_DIR"], "backups")
    for _ in range(3):
        out = run(DataBackupJob, keep=2, collections=["users"])
    names = sorted(os.listdir(root))
    assert len(names) == 2 and "Removed 1 old backup" in out
    with pytest.raises(JobError, match="unknown collection 'nope'"):
        run(DataBackupJob, collections=["nope"])
    with pytest.raises(JobError, match="keep must be at least 1"):
        run(DataBackupJob, keep=0)
    run.config = dict(config, BACKUP_DIR=str(config["DATA_DIR"]) + "/custom-backups")
    run(DataBackupJob, collections=["users"])
    assert len(os.listdir(run.config["BACKUP_DIR"])) == 1

    # A damaged file is refused before anything is written; the CLI restores into SQLite.
    bdir = os.path.join(root, names[-1])
    cli_dir = str(config["DATA_DIR"]) + "/restored"
    proc = subprocess.run(
        [sys.executable, "-m", "texium.restore", bdir, "--data-dir", cli_dir],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "users: 1 inserted" in proc.stdout
    restored = open_datastore(None, "x", cli_dir)
    try:
        assert restored.users.find() == run.datastore.users.find()
    finally:
        restored.close()
    with gzip.open(os.path.join(bdir, "users.jsonl.gz"), "wb") as fh:
        fh.write(b'{"_id": "000000000000000000000001", "name": "forged"}\n')
    fresh = _open("sqlite", tmp_path, "fresh2")
    try:
        with pytest.raises(RestoreError, match="checksum mismatch"):
            restore_backup(fresh, bdir)
        assert fresh.users.count() == 0
        with pytest.raises(RestoreError, match="several backups"):
            restore_backup(fresh, root)
        bad = str(tmp_path / "users.jsonl.gz")
        with gzip.open(bad, "wb") as fh:
            fh.write(b'{"_id": "not-an-id", "name": "x"}\n')
        with pytest.raises(RestoreError, match="not a 24-hex id"):
            restore_backup(fresh, bad)
        assert fresh.users.count() == 0
    finally:
        fresh.close()


def test_backup_rotation_keeps_the_backup_it_just_wrote(run, config, monkeypatch):
    """keep=1, three runs in the same second: after every run the one backup left is the one the
    run says it wrote. The 2nd run is named <stamp>-2 and rotates <stamp> away; the 3rd must not
    take the freed name <stamp> (it would sort before <stamp>-2 and be deleted by its own
    rotation while its output still says "Backup written to <stamp>")."""
    frozen = utcnow().replace(microsecond=0)
    monkeypatch.setattr(backup_module, "utcnow", lambda: frozen)  # the runs share one second
    root = os.path.join(config["DATA_DIR"], "backups")
    written = []
    for _ in range(3):
        out = run(DataBackupJob, collections=["users"], keep=1)
        assert out.startswith("Backup written to "), out
        written.append(out.splitlines()[0].removeprefix("Backup written to "))
        assert os.listdir(root) == [os.path.basename(written[-1])], (written, out)
    stamp = "texium-backup-" + frozen.strftime("%Y%m%dT%H%M%SZ")
    assert [os.path.basename(path) for path in written] == [stamp, stamp + "-2", stamp + "-3"]
    assert "Removed 1 old backup(s) (keep=1): " + stamp + "-2" in out


# --------------------------------------------------------------------------- maintenance


def test_maintenance_tasks_on_both_providers(run_any):
    calls = []
    run_any.hooks = {"clear_cache": lambda: calls.append(1) or 3}
    _seed(run_any.datastore)
    for task in ("rebuild_indexes", "optimize_queries", "clear_cache", "vacuum"):
        out = run_any(MaintenanceJob, tasks=[task])
        assert f"{task}: ok in" in out, out
    assert calls == [1]
    out = run_any(MaintenanceJob)  # the default set
    assert "rebuild_indexes: ok" in out and "optimize_queries: ok" in out and "cleared 3 cached entries" in out
    rebuilt = re.search(r"rebuilt (\d+) indexes: (.*)", out)
    assert rebuilt and int(rebuilt.group(1)) > 12 and "more)" in rebuilt.group(2), out  # the first 12 named
    assert run_any.datastore.executions.count() == 5  # data intact

    run_any.hooks = {}
    assert "nothing to clear" in run_any(MaintenanceJob, tasks=["clear_cache"])

    calls.clear()
    run_any.hooks = {"clear_cache": lambda: calls.append(1)}
    with pytest.raises(JobError, match="unknown maintenance task 'defrag'"):
        run_any(MaintenanceJob, tasks=["clear_cache", "defrag"])
    assert calls == []  # nothing ran

    def broken():
        raise RuntimeError("cache backend gone")

    run_any.hooks = {"clear_cache": broken}
    with pytest.raises(JobError, match="failed: clear_cache"):
        run_any(MaintenanceJob, tasks=["clear_cache", "optimize_queries"])
    written = "".join(run_any.written)
    assert "cache backend gone" in written and "optimize_queries: ok" in written


# --------------------------------------------------------------------------- custom script


def _script(directory, name, body, mode=0o755):
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(body)
    os.chmod(path, mode)
    return path


@pytest.fixture
def scripts(config):
    path = os.path.join(config["DATA_DIR"], "scripts")  # the default <DATA_DIR>/scripts
    os.makedirs(path)
    return path


PY = f"#!{sys.executable}\n"


def test_script_runs_with_arguments_and_stdin(run, scripts):
    _script(
        scripts,
        "tools/show.py",
        PY
        + (
            "import json, os, sys\n"
            "print('argv=' + json.dumps(sys.argv[1:]))\n"
            "print('stdin=' + json.dumps(json.load(sys.stdin), sort_keys=True))\n"
            "print('exec=' + os.environ['TEXIUM_EXECUTION_ID'])\n"
            "print('cwd=' + os.getcwd())\n"
            "print('secret=' + os.environ.get('TEXIUM_SECRET_KEY', 'absent'))\n"
            "print('warn', file=sys.stderr)\n"
        ),
    )
    os.environ["TEXIUM_SECRET_KEY"] = "do-not-pass"
    try:
        out = run(CustomScriptJob, "tools/show.py", target="/tmp/x y", count=3, flag=True, items=[1, "a"], timeout=30)
    finally:
        del os.environ["TEXIUM_SECRET_KEY"]
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("-"))
    assert json.loads(lines["argv"]) == [
        "--target",
        "/tmp/x y",
        "--count",
        "3",
        "--flag",
        "true",
        "--items",
        '[1, "a"]',
    ]
    assert json.loads(lines["stdin"]) == {"count": 3, "flag": True, "items": [1, "a"], "target": "/tmp/x y"}
    assert lines["exec"] == run.context.execution_id
    assert lines["cwd"] == os.path.realpath(os.path.join(scripts, "tools"))
    assert lines["secret"] == "absent"
    assert "--- stderr ---\nwarn" in out and "exited with code 0" in out


def test_script_failure_exit_code_and_stderr(run, scripts):
    _script(scripts, "fail.sh", "#!/bin/sh\necho partial output\necho 'it broke badly' >&2\nexit 3\n")
    with pytest.raises(JobError, match=r"script 'fail.sh' exited with code 3\nstderr:\nit broke badly"):
        run(CustomScriptJob, "fail.sh")
    assert "partial output" in "".join(run.written)


def test_script_timeout_kills_process_group(run, scripts):
    _script(
        scripts, "hang.sh", "#!/bin/sh\nsleep 30 &\necho $! > child.pid\necho $$ > parent.pid\necho started\nsleep 30\n"
    )
    started = time.monotonic()
    with pytest.raises(JobError, match="timed out after 0.5 s; its process group was killed"):
        run(CustomScriptJob, "hang.sh", timeout=0.5)
    assert time.monotonic() - started < 5
    assert "started" in "".join(run.written)
    for name in ("child.pid", "parent.pid"):
        with open(os.path.join(scripts, name)) as fh:
            pid = int(fh.read())
        _assert_dead(pid)


def _assert_dead(pid):
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} still alive")


def test_script_leftover_children_holding_output_are_killed(run, scripts, monkeypatch):
    monkeypatch.setattr(custom_module, "LINGER", 0.3)
    _script(scripts, "bg.sh", "#!/bin/sh\nsleep 30 &\necho $! > child.pid\necho done\n")
    out = run(CustomScriptJob, "bg.sh", timeout=20)
    assert "done" in out and "were killed" in out
    with open(os.path.join(scripts, "child.pid")) as fh:
        _assert_dead(int(fh.read()))


def test_script_output_is_capped(run, scripts):
    _script(
        scripts,
        "loud.py",
        PY + "import sys\nsys.stdout.write('x' * (1536 * 1024))\nsys.stderr.write('e' * (1100 * 1024))\n",
    )
    out = run(CustomScriptJob, "loud.py")
    assert "[stdout truncated: showing the first 1048576 of 1572864 bytes" in out
    assert "[stderr truncated: showing the first 1048576 of 1126400 bytes" in out
    assert out.split("\n[stdout truncated")[0] == "x" * 1048576


def test_script_path_escapes_are_refused(run, scripts, config):
    # A real executable just outside SCRIPTS_DIR: it must be refused, not merely "not found".
    escaped = os.path.join(config["DATA_DIR"], "ESCAPED")
    outside = _script(config["DATA_DIR"], "outside.sh", f"#!/bin/sh\ntouch '{escaped}'\necho escaped\n")
    os.symlink(outside, os.path.join(scripts, "link.sh"))
    os.symlink("/bin", os.path.join(scripts, "bindir"))
    _script(scripts, "inner.sh", "#!/bin/sh\necho inner\n")
    os.symlink(os.path.join(scripts, "inner.sh"), os.path.join(scripts, "alias.sh"))
    for name in ("../outside.sh", "link.sh", "bindir/ls", "tools/../../outside.sh", ".."):
        with pytest.raises(JobError, match="leaves SCRIPTS_DIR"):
            run(CustomScriptJob, name)
    with pytest.raises(JobError, match="absolute path"):
        run(CustomScriptJob, "/bin/ls")
    with pytest.raises(JobError, match="absolute path"):
        run(CustomScriptJob, outside)
    assert "inner" in run(CustomScriptJob, "alias.sh")  # a symlink that stays inside is fine
    _script(scripts, "plain.txt", "data\n", mode=0o644)
    os.makedirs(os.path.join(scripts, "sub"))
    with pytest.raises(JobError, match="not executable"):
        run(CustomScriptJob, "plain.txt")
    with pytest.raises(JobError, match="not a regular file"):
        run(CustomScriptJob, "sub")
    with pytest.raises(JobError, match="not found"):
        run(CustomScriptJob, "missing.sh")
    with pytest.raises(JobError, match="parameter name '-x'"):
        run(CustomScriptJob, "inner.sh", **{"-x": 1})
    with pytest.raises(JobError, match="timeout"):
        run(CustomScriptJob, "inner.sh", timeout=0)
    with pytest.raises(JobError, match="script_name is required"):
        run(CustomScriptJob)
    assert not os.path.exists(escaped)


def test_cleanup_deletes_old_channel_deliveries_only_when_asked(run_any):
    ds = run_any.datastore

    def delivery(days: int) -> str:
        return ds.channel_deliveries.insert({"channel_id": new_id(), "created_at": utcnow() - timedelta(days)})

    old, new = delivery(40), delivery(1)
    run_any(DataCleanupJob, days_old=30)  # default: executions only
    assert ds.channel_deliveries.count() == 2
    out = run_any(DataCleanupJob, days_old=30, collections=["channel_deliveries"])
    assert "scheduler_channel_deliveries: 1" in out
    assert ds.channel_deliveries.get(old) is None and ds.channel_deliveries.get(new) is not None
