"""A job runs on behalf of its owner: what its arguments reach must be the owner's to use.

Against real servers requiring keys: a `user`'s health check may not name another user's server
(and cannot tell such an id from an unknown one), a `user`'s report covers their own jobs, and a
`user`'s mail goes only to EMAIL_ALLOWED_DOMAINS, within EMAIL_MAX_PER_HOUR. Admins' jobs may
do all of it.
"""

from __future__ import annotations

import time

import pytest

from tests.jobs_fixtures import closed_port, smtp_server
from tests.server_process import ServerProcess
from tests.test_security import ON, admin_key, call, client
from texium.core.datastore import new_id

YEARLY = {"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}


class Tenants:
    """An admin, two users with keys of their own, and helpers for their jobs."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.admin = client(server, admin_key(server))
        self.admin_id = call(self.admin, "GET", "/api/users/").json()["data"][0]["_id"]
        self.keys = {}
        self.ids = {}
        for name in ("uma", "oz"):
            user = {"name": name.capitalize(), "email": f"{name}-{new_id()}@example.com"}
            self.ids[name] = call(self.admin, "POST", "/api/users/", json=user).json()["user_id"]
            key = call(self.admin, "POST", f"/api/users/{self.ids[name]}/api-keys", json={}).json()["key"]
            self.keys[name] = client(server, key)

    def session(self, who: str):
        return self.admin if who == "admin" else self.keys[who]

    def owner(self, who: str) -> str:
        return self.admin_id if who == "admin" else self.ids[who]

    def create_job(self, who: str, class_string: str, pub_args=(), owner: str | None = None, name=None, **kwargs):
        body = {
            "user_id": self.owner(owner or who),
            "job_class_string": class_string,
            "name": name or f"{class_string.rsplit('.', 1)[1]} of {owner or who} {new_id()[-6:]}",
            "pub_args": list(pub_args),
            "pub_kwargs": kwargs,
            **YEARLY,
        }
        return call(self.session(who), "POST", "/api/scheduler/jobs", json=body)

    def job_id(self, who: str, class_string: str, pub_args=(), owner: str | None = None, **kwargs) -> str:
        answer = self.create_job(who, class_string, pub_args, owner, **kwargs)
        assert answer.status_code == 201, answer.text
        return answer.json()["job_id"]

    def run(self, who: str, job_id: str) -> dict:
        started = call(self.session(who), "POST", f"/api/scheduler/jobs/{job_id}/run")
        assert started.status_code == 200, started.text
        path = f"/api/scheduler/executions/{started.json()['execution_id']}"
        deadline = time.monotonic() + 20
        while True:
            execution = call(self.admin, "GET", path).json()["data"]
            if execution["status"] not in ("scheduled", "running") or time.monotonic() > deadline:
                return execution
            time.sleep(0.05)

    def server_id(self, who: str) -> str:
        body = {"user_id": self.owner(who), "name": f"{who}'s box", "hostname": "127.0.0.1", "port": closed_port()}
        answer = call(self.session(who), "POST", "/api/servers/create", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()["server_id"]

    def server_record(self, server_id: str) -> dict:
        return call(self.admin, "GET", f"/api/servers/{server_id}").json()["data"]


@pytest.fixture(scope="module")
def mailbox():
    with smtp_server() as (handler, port):
        yield handler, port


@pytest.fixture(scope="module")
def tenants(tmp_path_factory, mailbox):
    env = {
        **ON,
        "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
        "TEXIUM_SMTP_HOST": "127.0.0.1",
        "TEXIUM_SMTP_PORT": str(mailbox[1]),
        "TEXIUM_EMAIL_ALLOWED_DOMAINS": "example.com,Example.ORG",
        "TEXIUM_EMAIL_MAX_PER_HOUR": "2",
    }
    server = ServerProcess("sqlite", tmp_path_factory.mktemp("tenants") / "data", env=env).start()
    yield Tenants(server)
    server.stop()


CHECK = "jobs.server.ServerHealthCheckJob"


# --------------------------------------------------------------------------- health checks
def test_a_user_cannot_schedule_a_health_check_of_another_users_server(tenants):
    t = tenants
    theirs, mine, unknown = t.server_id("oz"), t.server_id("uma"), new_id()
    refused = t.create_job("uma", CHECK, [theirs])
    guessed = t.create_job("uma", CHECK, [unknown])
    assert refused.status_code == guessed.status_code == 400, refused.text
    # The same answer for another user's server as for an id that does not exist.
    assert refused.json()["detail"].replace(theirs, "<id>") == guessed.json()["detail"].replace(unknown, "<id>")
    assert refused.json()["detail"].startswith("Invalid field pub_args: ")

    own = t.job_id("uma", CHECK, [mine])
    moved = call(t.keys["uma"], "PUT", f"/api/scheduler/jobs/{own}", json={"pub_args": [theirs]})
    assert moved.status_code == 400 and moved.json()["detail"] == refused.json()["detail"]
    # Whoever creates it: the job's owner is the one who must own the server.
    assert t.create_job("admin", CHECK, [theirs], owner="uma").status_code == 400
    # A job whose owner is handed the job of someone else keeps nothing either.
    admins = t.job_id("admin", CHECK, [theirs], timeout=2)
    handed = call(t.admin, "PUT", f"/api/scheduler/jobs/{admins}", json={"user_id": t.ids["uma"]})
    assert handed.status_code == 400
    assert t.server_record(theirs).get("last_check") is None


def test_a_health_check_runs_only_while_its_owner_may_check_the_server(tenants):
    t = tenants
    server_id = t.server_id("uma")
    job_id = t.job_id("uma", CHECK, [server_id], timeout=2)
    assert t.run("uma", job_id)["status"] == "completed"
    checked = t.server_record(server_id)
    assert checked["status"] == "stopped" and checked["last_check"]["reachable"] is False

    # The server goes to another user: Uma's job no longer reads or writes it.
    given = call(t.admin, "PUT", f"/api/servers/{server_id}", json={"user_id": t.ids["oz"], "status": "running"})
    assert given.status_code == 200, given.text
    refused = t.run("uma", job_id)
    assert refused["status"] == "failed" and "that the job's owner may check" in refused["error"], refused
    assert "127.0.0.1" not in refused["error"] + refused["output"] and "box" not in refused["output"]
    after = t.server_record(server_id)
    assert after["status"] == "running" and after["last_checked_at"] == checked["last_checked_at"]

    # An admin's job checks any server.
    admins = t.job_id("admin", CHECK, [server_id], timeout=2)
    assert t.run("admin", admins)["status"] == "completed"
    assert t.server_record(server_id)["status"] == "stopped"


# --------------------------------------------------------------------------- reports
def test_a_users_report_covers_only_their_own_jobs(tenants):
    t = tenants
    for who in ("uma", "oz"):
        echo = t.job_id(who, "jobs.echo.EchoJob", ["hello"], name=f"{who}-private-echo")
        assert t.run(who, echo)["status"] == "completed"
    report = t.run("uma", t.job_id("uma", "jobs.report.ReportGenerationJob", report_type="daily"))
    assert report["status"] == "completed", report
    assert "uma-private-echo" in report["output"] and "oz-private-echo" not in report["output"]
    assert f"Jobs of user {t.ids['uma']}" in report["output"]

    everything = t.run("admin", t.job_id("admin", "jobs.report.ReportGenerationJob", report_type="daily"))
    assert "uma-private-echo" in everything["output"] and "oz-private-echo" in everything["output"]
    stored = call(t.admin, "GET", "/api/scheduler/reports").json()["data"]
    by_execution = {r["execution_id"]: r for r in stored}
    assert {j["job_name"] for j in by_execution[report["_id"]]["jobs"]} >= {"uma-private-echo"}
    assert "oz-private-echo" not in {j["job_name"] for j in by_execution[report["_id"]]["jobs"]}
    assert by_execution[report["_id"]]["covers_user_id"] == t.ids["uma"]
    assert by_execution[everything["_id"]]["covers_user_id"] is None


# --------------------------------------------------------------------------- mail
MAIL = "jobs.email.EmailNotificationJob"


def test_a_users_mail_goes_only_to_allowed_domains_and_within_the_hourly_limit(tenants, mailbox):
    t, (handler, _) = tenants, mailbox
    refused = t.create_job("uma", MAIL, ["victim@elsewhere.net"], message="click here")
    assert refused.status_code == 400 and "EMAIL_ALLOWED_DOMAINS" in refused.json()["detail"], refused.text
    assert t.create_job("admin", MAIL, ["victim@elsewhere.net"], owner="uma", message="x").status_code == 400
    job_id = t.job_id("uma", MAIL, ["ops@EXAMPLE.org"], message="nightly done")
    moved = call(t.keys["uma"], "PUT", f"/api/scheduler/jobs/{job_id}", json={"pub_args": ["a@elsewhere.net"]})
    assert moved.status_code == 400

    before = len(handler.messages)
    runs = [t.run("uma", job_id) for _ in range(3)]
    assert [r["status"] for r in runs] == ["completed", "completed", "failed"], runs
    assert "EMAIL_MAX_PER_HOUR" in runs[2]["error"]
    assert len(handler.messages) == before + 2

    # An admin's job sends anywhere, without the limit.
    admins = t.job_id("admin", MAIL, ["someone@elsewhere.net"], message="from the admin")
    assert [t.run("admin", admins)["status"] for _ in range(3)] == ["completed"] * 3
    assert handler.messages[-1]["rcpt_tos"] == ["someone@elsewhere.net"]


def test_mail_rules_follow_the_owner_s_role_when_the_job_runs(tenants, mailbox):
    t, (handler, _) = tenants, mailbox
    user = {"name": "Carl", "email": f"carl-{new_id()}@example.com", "role": "admin"}
    carl = call(t.admin, "POST", "/api/users/", json=user).json()["user_id"]
    body = {"user_id": carl, "job_class_string": MAIL, "name": "to anyone", "pub_args": ["x@elsewhere.net"]}
    created = call(t.admin, "POST", "/api/scheduler/jobs", json={**body, "pub_kwargs": {"message": "m"}, **YEARLY})
    assert created.status_code == 201, created.text
    assert call(t.admin, "PUT", f"/api/users/{carl}", json={"role": "user"}).status_code == 200
    before = len(handler.messages)
    run = t.run("admin", created.json()["job_id"])
    assert run["status"] == "failed" and "EMAIL_ALLOWED_DOMAINS" in run["error"], run
    assert len(handler.messages) == before


def test_without_allowed_domains_only_admins_jobs_send_mail(start_server, tmp_path):
    t = Tenants(start_server("sqlite", tmp_path / "data", env=ON))
    refused = t.create_job("uma", MAIL, ["ops@example.com"], message="hello")
    assert refused.status_code == 400, refused.text
    assert "only an admin's jobs may send mail" in refused.json()["detail"]
    assert t.create_job("admin", MAIL, ["ops@example.com"], message="hello").status_code == 201


def test_email_allowed_domains_must_be_domain_names():
    from texium.config import ConfigError, load_settings

    found = load_settings(environ={"TEXIUM_EMAIL_ALLOWED_DOMAINS": "example.com, mail.example.org"}, cwd="/")
    assert found["EMAIL_ALLOWED_DOMAINS"] == ["example.com", "mail.example.org"]
    for bad in ("@example.com", "ops@example.com", "exa mple.com", '["example.com", 3]'):
        with pytest.raises(ConfigError, match="EMAIL_ALLOWED_DOMAINS"):
            load_settings(environ={"TEXIUM_EMAIL_ALLOWED_DOMAINS": bad}, cwd="/")
