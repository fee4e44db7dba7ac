"""Authentication, roles and hostile clients, against real server processes on loopback.

AUTH_MODE=on gives a loopback server the behaviour of one listening on a public address;
the "auto" decision itself is tested on 0.0.0.0 inside a network namespace of its own.

The matrix of issue 20 (a company network), item by item; the cases that need a peer of their
own live beside it:
 1. connection and file-handle limits ........ tests/test_connections.py
 2. TLS, HSTS, a trusted proxy, nginx ........ tests/test_tls.py
 3. webhook secrets bound to their host ...... tests/test_secrets.py
 4. health details for admins only ........... here (test_health_shows_status_and_message...)
 5. health checks of one's own servers ....... tests/test_owner_arguments.py
 6. reports over one's own jobs .............. tests/test_owner_arguments.py
 7. metadata and own addresses refused ....... tests/test_outbound.py
 8. one user cannot take every worker ........ tests/test_worker_limits.py, webhook total_timeout
                                               in tests/test_jobs_builtin.py
 9. failed-key limit, proxy client address ... here
10. /docs cannot be framed ................... tests/test_docs_browser.py
11. stored, revocable sessions ............... tests/test_sessions.py
12. mail only to allowed domains, rate ....... tests/test_owner_arguments.py
13. export/import key and redirects .......... tests/test_ascode.py
14. first admin key only in its file ......... here
15. crafted backups refused whole ............ tests/test_restore_limits.py
16. no-store on keys and CSRF tokens ......... here
"""

import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import requests

from tests.server_process import REPO, SAMPLE_JOBS, ServerProcess, free_port

ON = {"TEXIUM_AUTH_MODE": "on", "TEXIUM_AUTH_FAILURES_PER_MINUTE": "1000", **SAMPLE_JOBS}


def admin_key(server: ServerProcess) -> str:
    """The first admin key, from the 0600 file the first start writes (never from the log)."""
    return (server.data_dir / "admin-api-key").read_text().strip()


def client(server: ServerProcess, key: str | None = None) -> requests.Session:
    session = requests.Session()
    if key:
        session.headers["Authorization"] = f"Bearer {key}"
    session.base = server.api.base_url
    return session


def call(session, method, path, **kwargs):
    return session.request(method, session.base + path, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server that requires keys, an admin, and a `user` with a job of their own."""
    server = ServerProcess("sqlite", tmp_path_factory.mktemp("secured") / "data", env=ON).start()
    admin = client(server, admin_key(server))
    user_id = call(admin, "POST", "/api/users/", json={"name": "Uma", "email": "uma@example.com"}).json()["user_id"]
    other_id = call(admin, "POST", "/api/users/", json={"name": "Oz", "email": "oz@example.com"}).json()["user_id"]
    user_key = call(admin, "POST", f"/api/users/{user_id}/api-keys", json={"label": "uma"}).json()["key"]
    job = {"job_class_string": "jobs.echo.EchoJob", "name": "mine", "minute": "0", "hour": "3"}
    mine = call(admin, "POST", "/api/scheduler/jobs", json={**job, "user_id": user_id}).json()["job_id"]
    theirs = call(admin, "POST", "/api/scheduler/jobs", json={**job, "user_id": other_id}).json()["job_id"]
    yield {
        "server": server,
        "admin": admin,
        "user": client(server, user_key),
        "user_id": user_id,
        "other_id": other_id,
        "mine": mine,
        "theirs": theirs,
    }
    server.stop()


# --------------------------------------------------------------------------- the loopback default
def test_loopback_default_needs_no_key_but_refuses_other_sites_and_foreign_hosts(api):
    assert api.post("/api/users/", json={"name": "A", "email": f"a{time.time_ns()}@example.com"}).status_code == 201
    forged = api.post(
        "/api/users/",
        data='{"name": "Evil", "email": "evil@example.com"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert forged.status_code == 403 and "Cross-site" in forged.json()["detail"]
    fetched = api.post(
        "/api/users/", json={"name": "E", "email": "e2@example.com"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert fetched.status_code == 403
    port = api.base_url.rsplit(":", 1)[1]
    rebound = api.get("/api/servers/", headers={"Host": f"rebind.attacker.example:{port}"})
    assert rebound.status_code == 400 and rebound.json()["detail"].startswith("Host")
    same_site = api.post(
        "/api/users/", json={"name": "D", "email": f"d{time.time_ns()}@example.com"}, headers={"Origin": api.base_url}
    )  # the dashboard itself
    assert same_site.status_code == 201


def test_every_response_carries_the_protective_headers_and_static_nul_is_a_404(api):
    for path in ("/api/users/", "/api/scheduler/health", "/nope", "/static/%00", "/static/vendor/README.md"):
        response = api.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
    nul = api.get("/static/%00")
    assert nul.status_code == 404 and nul.json() == {"detail": "Not found"}
    assert "Access-Control-Allow-Origin" not in api.get("/api/users/", headers={"Origin": "http://x.example"}).headers


# --------------------------------------------------------------------------- keys and roles
SOME_JOB = "0123456789abcdef01234567"  # 401 comes before any look-up; the admin check uses a real job
PROTECTED = [
    ("GET", "/api/users/"),
    ("POST", "/api/users/"),
    ("GET", "/api/servers/"),
    ("POST", "/api/servers/create"),
    ("GET", "/api/scheduler/jobs"),
    ("POST", "/api/scheduler/jobs"),
    ("GET", "/api/scheduler/executions"),
    ("GET", "/api/scheduler/audit-logs"),
    ("GET", "/api/scheduler/stats"),
    ("GET", "/api/scheduler/available-jobs"),
    ("GET", "/api/scheduler/cron/preview"),
    ("GET", f"/api/scheduler/jobs/{SOME_JOB}/preview"),
    ("GET", "/api/scheduler/nodes"),
    ("GET", "/api/scheduler/reports"),
    ("GET", "/api/scheduler/metrics/system"),
    ("GET", "/api/scheduler/forecast"),
    ("GET", "/api/scheduler/job-summaries"),
    ("GET", "/api/scheduler/activity"),
    ("GET", "/api/scheduler/channels"),
    ("POST", "/api/scheduler/channels"),
    ("GET", "/api/scheduler/monitors"),
    ("POST", "/api/scheduler/monitors"),
    ("POST", f"/api/scheduler/monitors/{SOME_JOB}/rotate"),
    ("GET", "/metrics"),
    ("POST", "/api/scheduler/pause-all"),
    ("POST", "/api/scheduler/resume-all"),
]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_without_a_valid_key_every_endpoint_answers_401(secured, method, path):
    for key in (None, "tx_garbage", "not-even-a-key"):
        response = call(client(secured["server"], key), method, path, json={})
        assert response.status_code == 401, (key, response.text)
        assert set(response.json()) == {"detail"}


def test_public_pages_and_health_need_no_key(secured):
    anonymous = client(secured["server"])
    for path in ("/api/scheduler/health", "/openapi.json", "/docs", "/"):
        assert call(anonymous, "GET", path).status_code == 200, path


def test_health_shows_status_and_message_to_all_and_its_details_to_admins_only(secured):
    """A failed alert's target (a Slack-style hook keeps its secret in the path), the job's name,
    host and pid are details: anonymous callers and `user`s get status, message and timestamp."""
    token = "T0000/B0000/pathSecretToken"
    notify = {"webhook": f"http://127.0.0.1:{free_port()}/services/{token}", "events": ["failure"]}
    admin = secured["admin"]
    admin_id = next(u["_id"] for u in call(admin, "GET", "/api/users/").json()["data"] if u["role"] == "admin")
    job = {
        "user_id": admin_id,
        "job_class_string": "tests.sample_jobs.slow.SlowJob",
        "name": "leaky-alert-job",
        "minute": "0",
        "hour": "3",
        "pub_kwargs": {"seconds": 0, "fail": True},
        "notify": notify,
    }
    job_id = call(admin, "POST", "/api/scheduler/jobs", json=job).json()["job_id"]
    assert call(admin, "POST", f"/api/scheduler/jobs/{job_id}/run").status_code == 200
    deadline = time.monotonic() + 15
    while not call(admin, "GET", "/api/scheduler/health").json()["alerts"]["last_failure"]:
        assert time.monotonic() < deadline, "the alert did not fail"
        time.sleep(0.1)
    full = call(admin, "GET", "/api/scheduler/health").json()
    assert full["node"]["pid"] and "leaky-alert-job" in full["alerts"]["last_failure"]
    for caller in (client(secured["server"]), secured["user"]):
        answer = call(caller, "GET", "/api/scheduler/health")
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"status", "message", "timestamp", "maintenance"}, answer.text
        assert answer.json()["status"] == "healthy" and answer.json()["maintenance"] is None
        for leak in (token, "leaky-alert-job", "127.0.0.1"):
            assert leak not in answer.text, leak
    # The maintenance switch is for everyone to see (the dashboard's banner reads it), as its message says.
    assert call(admin, "POST", "/api/scheduler/pause-all", json={"note": "db upgrade"}).status_code == 200
    try:
        switch = call(secured["user"], "GET", "/api/scheduler/health").json()["maintenance"]
        assert switch["is_paused"] is True and switch["pause_note"] == "db upgrade", switch
    finally:
        assert call(admin, "POST", "/api/scheduler/resume-all").status_code == 200


def test_an_admin_key_reaches_everything(secured):
    admin = secured["admin"]
    for method, path in PROTECTED:
        if method == "GET":
            assert call(admin, method, path.replace(SOME_JOB, secured["mine"])).status_code == 200, path


def test_a_user_sees_only_their_own_and_cannot_manage_users(secured):
    user, mine, theirs = secured["user"], secured["mine"], secured["theirs"]
    listed = call(user, "GET", "/api/scheduler/jobs").json()
    assert [job["_id"] for job in listed["data"]] == [mine]
    assert call(user, "GET", f"/api/scheduler/jobs/{mine}").status_code == 200
    assert call(user, "GET", f"/api/scheduler/jobs/{mine}/preview").status_code == 200
    for method, suffix in (
        ("GET", ""),
        ("GET", "/preview"),
        ("PUT", ""),
        ("DELETE", ""),
        ("PATCH", "/pause"),
        ("POST", "/run"),
    ):
        body = {"json": {"name": "x"}} if method == "PUT" else {}
        assert call(user, method, f"/api/scheduler/jobs/{theirs}{suffix}", **body).status_code == 404, method
    assert call(user, "GET", f"/api/scheduler/users/{secured['other_id']}/jobs").status_code == 404
    stolen = call(
        user,
        "POST",
        "/api/scheduler/jobs",
        json={"user_id": secured["other_id"], "job_class_string": "jobs.echo.EchoJob", "name": "x"},
    )
    assert stolen.status_code == 400 and "user_id" in stolen.json()["detail"]
    assert call(user, "GET", "/api/users/").status_code == 403
    assert call(user, "POST", "/api/users/", json={"name": "N", "email": "n@example.com"}).status_code == 403
    assert call(user, "GET", f"/api/users/{secured['other_id']}").status_code == 403
    assert call(user, "GET", f"/api/users/{secured['user_id']}").status_code == 200
    assert call(user, "GET", "/api/scheduler/nodes").status_code == 403
    assert call(user, "GET", "/metrics").status_code == 403
    stats = call(user, "GET", "/api/scheduler/stats").json()["stats"]
    assert stats["total_jobs"] == 1


def test_backfill_rights_are_run_now_rights(secured):
    """Issue 21: a user backfills only their own jobs (others' answer 404, as unknown ones do)
    and never an admin-only class (403); without a key, 401."""
    user, admin, mine, theirs = secured["user"], secured["admin"], secured["mine"], secured["theirs"]
    span = {"from": "2026-01-10T00:00:00+00:00", "to": "2026-01-11T00:00:00+00:00"}
    listed = call(user, "POST", f"/api/scheduler/jobs/{mine}/backfill", json={**span, "dry_run": True})
    assert listed.json()["count"] == 1  # the job fires at 03:00
    assert call(user, "POST", f"/api/scheduler/jobs/{theirs}/backfill", json=span).status_code == 404
    nothing = {"from": "2026-01-10T04:00:00+00:00", "to": "2026-01-10T05:00:00+00:00"}  # runs nothing
    started = call(admin, "POST", f"/api/scheduler/jobs/{theirs}/backfill", json=nothing)
    assert started.status_code == 202, started.text
    path = f"/api/scheduler/jobs/{theirs}/backfills/{started.json()['backfill_id']}"
    assert call(admin, "GET", path).status_code == 200
    assert call(user, "GET", path).status_code == 404 and call(user, "DELETE", path).status_code == 404
    assert call(client(secured["server"], None), "GET", path).status_code == 401
    backup = {"job_class_string": "jobs.backup.DataBackupJob", "name": "b", "minute": "0", "hour": "3"}
    theirs_admin_only = call(admin, "POST", "/api/scheduler/jobs", json={**backup, "user_id": secured["user_id"]})
    admin_only = theirs_admin_only.json()["job_id"]
    forbidden = call(user, "POST", f"/api/scheduler/jobs/{admin_only}/backfill", json={**span, "dry_run": True})
    assert forbidden.status_code == 403, forbidden.text
    assert call(admin, "DELETE", f"/api/scheduler/jobs/{admin_only}").status_code == 200


def test_a_user_cannot_create_or_run_admin_only_job_classes(secured):
    user = secured["user"]
    for class_string in (
        "jobs.custom.CustomScriptJob",
        "jobs.maintenance.MaintenanceJob",
        "jobs.backup.DataBackupJob",
        "jobs.cleanup.DataCleanupJob",
    ):
        response = call(
            user,
            "POST",
            "/api/scheduler/jobs",
            json={"user_id": secured["user_id"], "job_class_string": class_string, "name": "x"},
        )
        assert response.status_code == 403, class_string
    admin = secured["admin"]
    cleanup = call(
        admin,
        "POST",
        "/api/scheduler/jobs",
        json={
            "user_id": secured["user_id"],
            "job_class_string": "jobs.cleanup.DataCleanupJob",
            "name": "given to uma",
            "minute": "0",
            "hour": "3",
        },
    ).json()["job_id"]
    assert call(user, "POST", f"/api/scheduler/jobs/{cleanup}/run").status_code == 403
    assert call(user, "PUT", f"/api/scheduler/jobs/{cleanup}", json={"name": "y"}).status_code == 403
    classes = {
        job["class_string"]: job["admin_only"]
        for job in call(user, "GET", "/api/scheduler/available-jobs").json()["jobs"]
    }
    assert classes["jobs.custom.CustomScriptJob"] is True and classes["jobs.echo.EchoJob"] is False


def test_a_user_sees_and_changes_only_their_own_channels_and_never_a_secret(secured):
    admin, user = secured["admin"], secured["user"]
    slack = {"kind": "slack", "url": "https://hooks.slack.com/services/T/B/theirsecret"}
    theirs = call(admin, "POST", "/api/scheduler/channels", json={"user_id": secured["other_id"], "name": "o", **slack})
    theirs = theirs.json()["channel_id"]
    pagerduty = {"kind": "pagerduty", "secret": "mine-routing-key"}
    mine = call(user, "POST", "/api/scheduler/channels", json={"user_id": secured["user_id"], "name": "m", **pagerduty})
    assert mine.status_code == 201, mine.text
    mine = mine.json()["channel_id"]
    listed = call(user, "GET", "/api/scheduler/channels").json()
    assert [c["_id"] for c in listed["data"]] == [mine] and listed["data"][0]["secret"] == "***"
    for method, suffix in (("GET", ""), ("PUT", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test")):
        body = {"json": {"name": "x"}} if method in ("PUT", "PATCH") else {}
        assert call(user, method, f"/api/scheduler/channels/{theirs}{suffix}", **body).status_code == 404, method
    assert call(user, "GET", f"/api/scheduler/channels/{theirs}/deliveries").status_code == 404
    stolen = call(user, "POST", "/api/scheduler/channels", json={"user_id": secured["other_id"], "name": "x", **slack})
    assert stolen.status_code == 400 and "user_id" in stolen.json()["detail"]
    everything = call(admin, "GET", "/api/scheduler/channels").text
    assert "theirsecret" not in everything and "mine-routing-key" not in everything
    assert "theirsecret" not in secured["server"].log() and "mine-routing-key" not in secured["server"].log()


def test_a_user_sees_and_changes_only_their_own_monitors_and_pings_need_no_key(secured):
    admin, user = secured["admin"], secured["user"]
    body = {"name": "theirs", "period_seconds": 3600}
    theirs = call(admin, "POST", "/api/scheduler/monitors", json={"user_id": secured["other_id"], **body})
    theirs_id, their_url = theirs.json()["monitor_id"], theirs.json()["ping_url"]
    mine = call(user, "POST", "/api/scheduler/monitors", json={"user_id": secured["user_id"], **body, "name": "m"})
    assert mine.status_code == 201, mine.text
    assert [m["_id"] for m in call(user, "GET", "/api/scheduler/monitors").json()["data"]] == [
        mine.json()["monitor_id"]
    ]
    for method, suffix in (("GET", ""), ("PUT", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate")):
        kwargs = {"json": {"name": "x"}} if method in ("PUT", "PATCH") else {}
        assert call(user, method, f"/api/scheduler/monitors/{theirs_id}{suffix}", **kwargs).status_code == 404, method
    stolen = call(user, "POST", "/api/scheduler/monitors", json={"user_id": secured["other_id"], **body})
    assert stolen.status_code == 400 and "user_id" in stolen.json()["detail"]
    anonymous = client(secured["server"])
    assert call(anonymous, "POST", their_url.replace(anonymous.base, ""), data=b"ok").json() == {"ok": True}
    token = their_url.rsplit("/", 1)[1]
    assert token not in call(admin, "GET", "/api/scheduler/monitors").text and token not in secured["server"].log()


def test_only_an_admin_may_pause_or_resume_every_job(secured):
    for path in ("/api/scheduler/pause-all", "/api/scheduler/resume-all"):
        refused = call(secured["user"], "POST", path, json={"note": "mine now"})
        assert refused.status_code == 403, refused.text
    health = call(secured["admin"], "GET", "/api/scheduler/health").json()
    assert health["maintenance"] is None and "maintenance" not in health["message"]
    on = call(secured["admin"], "POST", "/api/scheduler/pause-all", json={"note": "window"}).json()["maintenance"]
    assert "Administrator" in on["paused_by"] and on["pause_note"] == "window"
    assert call(secured["admin"], "POST", "/api/scheduler/resume-all").json()["maintenance"]["is_paused"] is False


def test_the_audit_actor_is_the_key_s_user_not_a_header(secured):
    admin = secured["admin"]
    call(admin, "PATCH", f"/api/scheduler/jobs/{secured['mine']}/pause", headers={"X-Texium-User": "mallory"})
    logs = call(admin, "GET", "/api/scheduler/audit-logs", params={"job_id": secured["mine"]}).json()["data"]
    assert logs[0]["event"] == "paused" and "mallory" not in logs[0]["user"] and "Administrator" in logs[0]["user"]
    own_trail = call(secured["user"], "GET", "/api/scheduler/audit-logs").json()["data"]
    assert own_trail and {log["user_id"] for log in own_trail} == {secured["user_id"]}
    assert secured["theirs"] not in {log["job_id"] for log in own_trail}


def test_keys_are_listed_without_the_key_and_revoked_at_once(secured):
    admin, user_id = secured["admin"], secured["user_id"]
    made = call(admin, "POST", f"/api/users/{user_id}/api-keys", json={"label": "short-lived"}).json()
    key, key_id = made["key"], made["key_id"]
    temporary = client(secured["server"], key)
    assert call(temporary, "GET", "/api/scheduler/jobs").status_code == 200
    listed = call(admin, "GET", f"/api/users/{user_id}/api-keys").json()["data"]
    assert key_id in {entry["_id"] for entry in listed} and key not in str(listed)
    assert all(set(entry) == {"_id", "user_id", "label", "created_at", "last_used_at"} for entry in listed)
    assert call(admin, "DELETE", f"/api/users/{user_id}/api-keys/{key_id}").status_code == 200
    assert call(temporary, "GET", "/api/scheduler/jobs").status_code == 401
    assert key not in secured["server"].log()


def test_failed_keys_are_rate_limited_per_client_and_logged_without_the_key(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env={**ON, "TEXIUM_AUTH_FAILURES_PER_MINUTE": "5"})
    attacker = client(server, "tx_wrong-guess-0123456789")
    statuses = [call(attacker, "GET", "/api/scheduler/jobs").status_code for _ in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    blocked = call(attacker, "GET", "/api/scheduler/jobs")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "tx_wrong-guess" not in server.log() and "Failed authentication from 127.0.0.1" in server.log()


def test_a_valid_key_is_never_refused_for_others_failures_from_its_address(start_server, tmp_path):
    """Behind NAT or an untrusted proxy many people share one address: their good keys keep
    working (for the API and the dashboard's sign-in) while bad ones from there are 429."""
    server = start_server("sqlite", tmp_path / "data", env={**ON, "TEXIUM_AUTH_FAILURES_PER_MINUTE": "3"})
    key = admin_key(server)
    attacker = client(server, "tx_wrong-guess-0123456789")
    assert [call(attacker, "GET", "/api/users/").status_code for _ in range(5)] == [401] * 3 + [429] * 2
    for _ in range(3):  # a success neither unblocks the address nor counts as a failure
        assert call(client(server, key), "GET", "/api/users/").status_code == 200
        assert call(client(server), "POST", "/api/auth/session", json={"key": key}).status_code == 200
        assert call(attacker, "GET", "/api/users/").status_code == 429
    assert call(client(server), "POST", "/api/auth/session", json={"key": "tx_nope"}).status_code == 429


def test_behind_a_trusted_proxy_the_address_it_vouches_for_is_counted(start_server, tmp_path):
    """A proxy that sets only X-Real-Ip passes the client's own X-Forwarded-For through: a
    new forged address per request must not escape the limit."""
    env = {**ON, "TEXIUM_AUTH_FAILURES_PER_MINUTE": "3", "TEXIUM_TRUSTED_PROXIES": "127.0.0.1/32"}
    server = start_server("sqlite", tmp_path / "data", env=env)
    statuses = []
    for n in range(5):
        forged = {"X-Real-Ip": "198.51.100.7", "X-Forwarded-For": f"203.0.113.{n}"}
        response = call(client(server, "tx_wrong-guess-0123456789"), "GET", "/api/users/", headers=forged)
        statuses.append(response.status_code)
    assert statuses == [401] * 3 + [429] * 2
    assert "Failed authentication from 198.51.100.7" in server.log() and "203.0.113." not in server.log()
    elsewhere = {"X-Real-Ip": "198.51.100.8"}  # another client behind the same proxy
    assert call(client(server, "tx_wrong"), "GET", "/api/users/", headers=elsewhere).status_code == 401


def test_the_client_address_is_the_one_the_trusted_proxy_gave():
    import ipaddress

    from texium.server.access import AccessPolicy

    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    policy = AccessPolicy(required=True, listen_address="0.0.0.0", trusted_proxies=proxies)
    address = policy.client_address
    # X-Real-Ip, set by the proxy, wins over whatever X-Forwarded-For the client sent.
    assert address("10.0.0.2", {"X-Real-Ip": "192.0.2.1", "X-Forwarded-For": "203.0.113.9"}) == "192.0.2.1"
    # X-Forwarded-For: the hop the proxies appended (the nearest one that is not a proxy).
    assert address("10.0.0.2", {"X-Forwarded-For": "203.0.113.9, 192.0.2.1, 10.0.0.3"}) == "192.0.2.1"
    # Hops that are not IP addresses are no addresses at all.
    assert address("10.0.0.2", {"X-Forwarded-For": "192.0.2.1, evil\nline"}) == "192.0.2.1"
    assert address("10.0.0.2", {"X-Real-Ip": "unknown", "X-Forwarded-For": "192.0.2.1"}) == "192.0.2.1"
    assert address("10.0.0.2", {"X-Real-Ip": "10.0.0.5", "X-Forwarded-For": "192.0.2.1, 10.0.0.5"}) == "192.0.2.1"
    assert address("10.0.0.2", {"X-Forwarded-For": "nonsense"}) == "10.0.0.2"
    assert address("10.0.0.2", {"X-Real-Ip": " 2001:db8::1 "}) == "2001:db8::1"
    # Headers from anyone else are ignored.
    assert address("192.0.2.50", {"X-Real-Ip": "192.0.2.1", "X-Forwarded-For": "192.0.2.2"}) == "192.0.2.50"


def test_the_dashboard_session_is_a_strict_cookie_and_needs_the_csrf_token(secured):
    server = secured["server"]
    browser = client(server)
    key = call(secured["admin"], "POST", f"/api/users/{secured['user_id']}/api-keys", json={}).json()["key"]
    signed_in = call(browser, "POST", "/api/auth/session", json={"key": key})
    assert signed_in.status_code == 200
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and key not in cookie
    token = signed_in.json()["csrf_token"]
    assert call(browser, "GET", "/api/scheduler/jobs").status_code == 200
    body = {"user_id": secured["user_id"], "job_class_string": "jobs.echo.EchoJob", "name": "by cookie"}
    assert call(browser, "POST", "/api/scheduler/jobs", json=body).status_code == 403
    assert call(browser, "POST", "/api/scheduler/jobs", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    assert call(browser, "DELETE", "/api/auth/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert call(browser, "GET", "/api/scheduler/jobs").status_code == 401


def test_answers_carrying_a_new_key_or_a_csrf_token_are_never_cached(secured):
    server = secured["server"]
    created = call(secured["admin"], "POST", f"/api/users/{secured['user_id']}/api-keys", json={"label": "cache"})
    assert created.status_code == 201 and created.headers.get("Cache-Control") == "no-store"
    browser = client(server)
    signed_in = call(browser, "POST", "/api/auth/session", json={"key": created.json()["key"]})
    assert signed_in.json()["csrf_token"] and signed_in.headers.get("Cache-Control") == "no-store"
    again = call(browser, "GET", "/api/auth/session")
    assert again.json()["csrf_token"] and again.headers.get("Cache-Control") == "no-store"


# --------------------------------------------------------------------------- start-up decisions
def test_the_first_start_that_needs_keys_creates_an_admin_key_once(tmp_path):
    server = ServerProcess("sqlite", tmp_path / "data", env=ON).start()
    try:
        key = admin_key(server)
        path = tmp_path / "data" / "admin-api-key"
        assert key.startswith("tx_") and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert call(client(server, key), "GET", "/api/users/").json()["data"][0]["role"] == "admin"
        assert key not in server.log() and str(path) in server.log()  # the log names the file, never the key
    finally:
        server.stop()
    again = ServerProcess("sqlite", tmp_path / "data", env=ON).start()
    try:
        assert "tx_" not in again.log()  # not created, not shown again
    finally:
        again.stop()


def test_auth_off_on_a_public_address_needs_insecure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}
    env.update(TEXIUM_DATA_DIR=str(tmp_path / "data"), TEXIUM_AUTH_MODE="off", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "texium.server", "--address", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--insecure" in result.stderr


def test_auto_requires_keys_when_listening_on_all_interfaces(tmp_path):
    """On 0.0.0.0 (inside a network namespace, so nothing is exposed) the quick start's default
    AUTH_MODE=auto refuses requests without a key, and the README's curl works with one."""
    port = free_port()
    script = f"""
import os, re, subprocess, sys, time, requests
env = {{k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}}
env.update(TEXIUM_DATA_DIR={str(tmp_path / "data")!r}, PYTHONPATH={str(REPO)!r})
log = open({str(tmp_path / "server.log")!r}, "w")
server = subprocess.Popen([sys.executable, "-m", "texium.server", "--address", "0.0.0.0", "--port", "{port}"],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
url = "http://127.0.0.1:{port}"
for _ in range(200):
    try:
        requests.get(url + "/api/scheduler/health", timeout=1); break
    except requests.ConnectionError:
        time.sleep(0.05)
key = open({str(tmp_path / "data" / "admin-api-key")!r}).read().strip()
authorized = requests.get(url + "/api/users/", headers={{"Authorization": "Bearer " + key}})
print(requests.get(url + "/api/users/").status_code, authorized.status_code)
server.terminate(); server.wait(30)
"""
    script_path = tmp_path / "inside.py"
    script_path.write_text(script)
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && {sys.executable} {script_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["401", "200"], result.stdout + result.stderr


# --------------------------------------------------------------------------- hostile clients
def test_a_client_dribbling_its_headers_is_dropped(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env={"TEXIUM_HEADER_TIMEOUT_SECONDS": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/users/ HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            time.sleep(0.2)
        assert closed and time.monotonic() - started < 5


def test_a_name_with_a_newline_cannot_forge_a_log_line(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    api = server.api
    job_id = api.create_job(api.create_user(), name="tick\n2026-01-01 00:00:00 ERROR texium: FORGED")
    api.wait_execution(api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"])
    time.sleep(0.3)
    assert not any(line.startswith("2026-01-01 00:00:00 ERROR texium: FORGED") for line in server.log().splitlines())
    assert "tick\\n2026-01-01" in server.log()


def test_host_rules_follow_the_listening_address():
    from texium.server.access import AccessPolicy

    everywhere = AccessPolicy(required=True, listen_address="0.0.0.0", allowed_hosts=("scheduler.example.com",))
    assert everywhere.host_allowed("10.1.2.3") and everywhere.host_allowed("::1")  # the machine's addresses
    assert everywhere.host_allowed("scheduler.example.com") and not everywhere.host_allowed("rebind.example")
    loopback = AccessPolicy(required=False, listen_address="127.0.0.1")
    assert loopback.host_allowed("localhost") and not loopback.host_allowed("10.1.2.3")


def test_a_user_cancels_and_follows_only_their_own_runs(secured):
    admin, user, anonymous = secured["admin"], secured["user"], client(secured["server"])
    mine = call(admin, "POST", f"/api/scheduler/jobs/{secured['mine']}/run").json()["execution_id"]
    theirs = call(admin, "POST", f"/api/scheduler/jobs/{secured['theirs']}/run").json()["execution_id"]
    for method, suffix in (("POST", "/cancel"), ("GET", "/output/stream")):
        assert call(anonymous, method, f"/api/scheduler/executions/{mine}{suffix}").status_code == 401, suffix
        foreign = call(user, method, f"/api/scheduler/executions/{theirs}{suffix}")
        assert foreign.status_code == 404 and foreign.json() == {"detail": "Execution not found"}, suffix
    stream = call(user, "GET", f"/api/scheduler/executions/{mine}/output/stream")
    assert stream.status_code == 200 and "event: end" in stream.text
    assert call(user, "POST", f"/api/scheduler/executions/{mine}/cancel").status_code == 409  # it has ended
