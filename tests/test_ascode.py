"""Jobs as code: `texium export` and `texium import` (texium/cli.py, texium/ascode.py).

The command runs as a subprocess (`python -m texium.cli`, the entry point as installed) against
real server processes, so every change goes through the HTTP API as it would in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.jobs_fixtures import http_server
from tests.server_process import REPO, free_port

AUTH_ON = {"TEXIUM_AUTH_MODE": "on", "TEXIUM_AUTH_FAILURES_PER_MINUTE": "1000"}


def texium(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    result = subprocess.run(
        [sys.executable, "-m", "texium.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        input=stdin,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode:  # an error is one line, on standard error
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("texium: error: "), result.stderr
    return result


def export(url: str, *args: str) -> dict:
    result = texium("export", "--url", url, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def admin_key(server) -> str:
    return (server.data_dir / "admin-api-key").read_text().strip()


def post(api, path: str, body: dict) -> str:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    return next(v for k, v in response.json().items() if k.endswith("_id"))


def seed(api) -> None:
    """Users, servers and jobs: paused, disabled, both, in several time zones, with arguments."""
    ops = post(api, "/api/users/", {"name": "Ops Team", "email": "ops@example.com", "role": "admin"})
    ada = post(api, "/api/users/", {"name": "Ada", "email": "Ada@Example.COM"})  # stored in lower case
    post(api, "/api/users/", {"name": "Idle", "email": "idle@example.com"})
    server = {"hostname": "prod.example.com", "port": 443, "status": "running", "connection_name": "ServiceNow"}
    server.update(instance_url="https://prod.example.com/now", username="svc", password="hunter2")
    post(api, "/api/servers/create", {"user_id": ops, "name": "Production", **server})
    post(api, "/api/servers/create", {"user_id": ada, "name": "Lab", "hostname": "lab.internal"})
    jobs = [
        (ops, "Nightly report", {"job_class_string": "jobs.report.ReportGenerationJob", "minute": "30", "hour": "2"}),
        (ops, "Every 5 minutes", {"minute": "*/5", "pub_args": ["hello", 1, True], "pub_kwargs": {"n": {"a": [1]}}}),
        (ops, "Paused sync", {"hour": "9", "minute": "0", "day_of_week": "mon-fri", "timezone": "America/New_York"}),
        (ada, "Disabled", {"is_enabled": False, "timezone": "Asia/Kolkata", "description": "not yet"}),
        (ada, "Paused and disabled", {"is_enabled": False, "second": "*/30", "timezone": "Australia/Lord_Howe"}),
        (
            ada,
            "Nightly report",
            {
                "week": "1-10",
                "hour": "4",
                "minute": "15",
                "timezone": "Europe/Berlin",
                "dst_policy": {"spring_forward": "skip", "fall_back": "twice"},
            },
        ),
        (
            ops,
            "Guarded",
            {
                "timeout_seconds": 600,
                "retries": 3,
                "retry_delay_seconds": 30,
                "retry_backoff": "fixed",
                "notify": {"email": ["oncall@example.com"], "webhook": None, "events": ["failure", "recovery"]},
            },
        ),
    ]
    for owner, name, fields in jobs:
        job_id = post(
            api,
            "/api/scheduler/jobs",
            {"user_id": owner, "name": name, "job_class_string": "jobs.echo.EchoJob", **fields},
        )
        if name.startswith("Paused"):
            assert api.patch(f"/api/scheduler/jobs/{job_id}/pause").status_code == 200


def jobs_by_name(api) -> dict[str, dict]:
    users = {u["_id"]: u["email"] for u in api.get("/api/users/").json()["data"]}
    return {(users[j["user_id"]], j["name"]): j for j in api.get("/api/scheduler/jobs").json()["data"]}


def totals(api) -> tuple[int, int, int, int]:
    paths = ("/api/users/", "/api/servers/", "/api/scheduler/jobs", "/api/scheduler/audit-logs")
    return tuple(api.get(path).json()["total"] for path in paths)


def test_export_then_import_into_an_empty_data_dir_reproduces_the_schedule(start_server, tmp_path):
    a = start_server("sqlite", tmp_path / "a")
    seed(a.api)
    b = start_server("mongomock", tmp_path / "b")  # another store: every id differs
    schedule = tmp_path / "schedule.yaml"

    exported = texium("export", "--url", a.api.base_url, "-o", str(schedule))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == "" and "Exported 3 users, 2 servers, 7 jobs" in exported.stderr
    document = yaml.safe_load(schedule.read_text())
    assert export(a.api.base_url) == document  # JSON on standard output by default: the same document
    assert yaml.safe_load(texium("export", "--url", a.api.base_url, "--format", "yaml").stdout) == document
    text = schedule.read_text()
    assert "hunter2" not in text and "password" not in text and "_id" not in text and "api_key" not in text
    assert document["texium"] == 1
    assert [u["email"] for u in document["users"]] == ["ada@example.com", "idle@example.com", "ops@example.com"]
    assert document["servers"][1] == {
        "name": "Production",
        "owner": "ops@example.com",
        "hostname": "prod.example.com",
        "port": 443,
        "status": "running",
        "connection_name": "ServiceNow",
        "instance_url": "https://prod.example.com/now",
        "username": "svc",
    }
    guarded = next(j for j in document["jobs"] if j["name"] == "Guarded")
    assert (guarded["timeout_seconds"], guarded["retries"], guarded["retry_backoff"]) == (600, 3, "fixed")
    assert guarded["notify"]["email"] == ["oncall@example.com"]
    paused = next(j for j in document["jobs"] if j["name"] == "Paused and disabled")
    assert paused["owner"] == "ada@example.com" and paused["is_paused"] is True and paused["is_enabled"] is False
    assert paused["timezone"] == "Australia/Lord_Howe" and paused["second"] == "*/30"
    berlin = next(j for j in document["jobs"] if j["owner"] == "ada@example.com" and j["name"] == "Nightly report")
    assert berlin["dst_policy"] == {"spring_forward": "skip", "fall_back": "twice"}

    # The plan lists the creates and changes nothing.
    plan = texium("import", str(schedule), "--url", b.api.base_url)
    assert plan.returncode == 0, plan.stderr
    assert "+ create user ops@example.com" in plan.stdout
    assert "+ create server 'Lab' of ada@example.com" in plan.stdout
    assert "+ create job 'Paused sync' of ops@example.com" in plan.stdout
    assert "Plan: 12 to create; 0 unchanged." in plan.stdout and "--apply" in plan.stdout
    assert totals(b.api) == (0, 0, 0, 0)

    applied = texium("import", str(schedule), "--url", b.api.base_url, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "created job 'Paused and disabled' of ada@example.com" in applied.stdout
    assert "Done: 12 change(s) made." in applied.stdout
    assert export(b.api.base_url) == document
    jobs = jobs_by_name(b.api)
    assert jobs[("ops@example.com", "Paused sync")]["next_run_time"] is None
    assert jobs[("ada@example.com", "Disabled")]["next_run_time"] is None
    assert jobs[("ops@example.com", "Nightly report")]["next_run_time"] is not None
    assert jobs[("ops@example.com", "Nightly report")]["job_class_string"] == "jobs.report.ReportGenerationJob"

    # Applying the same file again changes nothing: no write, no audit entry.
    before = (totals(b.api), {k: j["updated_at"] for k, j in jobs.items()})
    again = texium("import", str(schedule), "--url", b.api.base_url, "--apply")
    assert again.returncode == 0, again.stderr
    assert "Nothing to do: 12 unchanged." in again.stdout and "Applying" not in again.stdout
    assert (totals(b.api), {k: j["updated_at"] for k, j in jobs_by_name(b.api).items()}) == before
    # ...and A, whose export it is, has nothing to do either.
    assert "Nothing to do: 12 unchanged." in texium("import", str(schedule), "--url", a.api.base_url).stdout


def test_an_edited_file_plans_updates_and_with_delete_deletes(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    seed(server.api)
    url = server.api.base_url
    document = export(url)
    by_name = {(j["owner"], j["name"]): j for j in document["jobs"]}
    by_name[("ops@example.com", "Nightly report")]["hour"] = "3"  # a schedule changes
    by_name[("ops@example.com", "Paused sync")]["is_paused"] = False  # resumed
    document["jobs"].remove(by_name[("ops@example.com", "Every 5 minutes")])  # a job goes
    document["servers"] = [s for s in document["servers"] if s["name"] != "Lab"]
    document["users"] = [u for u in document["users"] if u["email"] != "idle@example.com"]
    document["users"][0]["name"] = "Ada Lovelace"
    edited = tmp_path / "schedule.json"
    edited.write_text(json.dumps(document))

    plan = texium("import", str(edited), "--url", url)
    assert plan.returncode == 0, plan.stderr
    assert '~ update user ada@example.com: name "Ada" -> "Ada Lovelace"' in plan.stdout
    assert '~ update job \'Nightly report\' of ops@example.com: hour "2" -> "3"' in plan.stdout
    assert "~ update job 'Paused sync' of ops@example.com: is_paused true -> false" in plan.stdout
    kept = "= job 'Every 5 minutes' of ops@example.com: would be kept (not in the file; --delete deletes it)"
    assert kept in plan.stdout
    assert "= server 'Lab' of ada@example.com: would be kept (not in the file" in plan.stdout
    assert "= user idle@example.com: would be kept (not in the file" in plan.stdout
    assert "Plan: 3 to update; 6 unchanged, 3 kept." in plan.stdout
    assert "- delete" not in plan.stdout

    # The same plan from standard input, with --delete: the deletes, jobs and servers before users.
    deleting = texium("import", "-", "--url", url, "--delete", stdin=edited.read_text())
    assert deleting.returncode == 0, deleting.stderr
    lines = deleting.stdout.splitlines()
    order = [
        lines.index("  - delete job 'Every 5 minutes' of ops@example.com"),
        lines.index("  - delete server 'Lab' of ada@example.com"),
        lines.index("  - delete user idle@example.com"),
    ]
    assert order == sorted(order)
    assert "Plan: 3 to update, 3 to delete; 6 unchanged." in deleting.stdout
    assert export(url)["jobs"] != document["jobs"]  # still a plan

    applied = texium("import", str(edited), "--url", url, "--delete", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "Done: 6 change(s) made." in applied.stdout
    assert export(url) == document
    jobs = jobs_by_name(server.api)
    assert jobs[("ops@example.com", "Paused sync")]["is_paused"] is False
    assert jobs[("ops@example.com", "Paused sync")]["next_run_time"] is not None
    assert "Nothing to do: 9 unchanged." in texium("import", str(edited), "--url", url, "--delete").stdout

    # A user who still owns what stays is not deleted (servers are not managed by this file).
    unmanaged = {"texium": 1, "users": [u for u in document["users"] if u["email"] != "ada@example.com"]}
    edited.write_text(json.dumps(unmanaged))
    result = texium("import", str(edited), "--url", url, "--delete")
    assert "= user ada@example.com: kept: still owns 3 jobs that stay (jobs not in the file)" in result.stdout
    assert "(no servers section in the file: servers are left as they are)" in result.stdout
    assert "Nothing to do: 1 unchanged, 1 kept." in result.stdout


def test_two_jobs_of_one_owner_with_one_name_are_refused(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    user = server.api.create_user(email="twice@example.com")
    url = server.api.base_url
    good = export(url)
    first, second = (server.api.create_job(user, name="Backup") for _ in range(2))

    for result in (texium("export", "--url", url), texium("import", "-", "--url", url, stdin=json.dumps(good))):
        assert result.returncode == 2 and result.stdout == ""
        assert "2 jobs named 'Backup' owned by twice@example.com" in result.stderr
        assert first in result.stderr and second in result.stderr

    job = {"name": "Backup", "owner": "twice@example.com", "job_class_string": "jobs.echo.EchoJob"}
    twice = {"texium": 1, "jobs": [job, dict(job, minute="5")]}
    assert server.api.delete(f"/api/scheduler/jobs/{second}").status_code == 200
    result = texium("import", "-", "--url", url, stdin=json.dumps(twice))
    assert result.returncode == 2
    assert "job 'Backup' of twice@example.com appears more than once" in result.stderr


def test_a_server_that_requires_keys(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=AUTH_ON)
    url, key = server.api.base_url, admin_key(server)

    refused = texium("export", "--url", url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "401: Authentication required" in refused.stderr and "TEXIUM_API_KEY or --key-file" in refused.stderr
    wrong = texium("export", "--url", url, env={"TEXIUM_API_KEY": "tx_not-a-key"})
    assert wrong.returncode == 1 and "401" in wrong.stderr

    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    document = export(url, "--key-file", str(key_file))
    assert [u["role"] for u in document["users"]] == ["admin"]  # the first admin, created at start
    via_env = texium("export", env={"TEXIUM_URL": url, "TEXIUM_API_KEY": key})
    assert via_env.returncode == 0 and json.loads(via_env.stdout) == document

    # With --delete, a file without the key's own user never deletes it.
    admin_email = document["users"][0]["email"]
    document["users"] = [{"name": "Uma", "email": "uma@example.com", "role": "user"}]
    document["jobs"] = [
        {"name": "Uma's echo", "owner": "uma@example.com", "job_class_string": "jobs.echo.EchoJob", "minute": 0}
    ]
    path = tmp_path / "schedule.yml"
    path.write_text(yaml.safe_dump(document))
    assert texium("import", str(path), "--url", url, "--apply").returncode == 1
    applied = texium("import", str(path), "--url", url, "--key-file", str(key_file), "--apply", "--delete")
    assert applied.returncode == 0, applied.stderr
    assert f"= user {admin_email}: kept: the user of this API key" in applied.stdout
    assert "Done: 2 change(s) made." in applied.stdout
    assert export(url, "--key-file", str(key_file))["jobs"][0]["minute"] == "0"

    # A `user` key sees only itself; what it may not do is refused with the server's detail.
    uma = next(
        u
        for u in server.api.get("/api/users/", headers={"Authorization": f"Bearer {key}"}).json()["data"]
        if u["email"] == "uma@example.com"
    )
    response = server.api.post(f"/api/users/{uma['_id']}/api-keys", json={}, headers={"Authorization": f"Bearer {key}"})
    uma_key = response.json()["key"]
    uma_file = tmp_path / "uma-key"
    uma_file.write_text(uma_key)
    mine = export(url, "--key-file", str(uma_file))
    assert [u["email"] for u in mine["users"]] == ["uma@example.com"] and len(mine["jobs"]) == 1
    mine["users"].append({"name": "Eve", "email": "eve@example.com", "role": "admin"})
    path.write_text(yaml.safe_dump(mine))
    forbidden = texium("import", str(path), "--url", url, "--apply", env={"TEXIUM_API_KEY": uma_key})
    assert forbidden.returncode == 1
    assert "create user eve@example.com: POST /api/users/ answered 403:" in forbidden.stderr
    assert "0 of 1 changes were made before it" in forbidden.stderr


def test_the_key_stays_out_of_ps_and_is_never_sent_to_another_host(start_server, tmp_path):
    """A key in the arguments is in `ps` for every user of the machine: it is read from the
    environment or a file (--key works, with a warning). A redirect to another scheme, host or
    port is refused before the key goes there (urllib would resend Authorization)."""
    server = start_server("sqlite", tmp_path / "data", env=AUTH_ON)
    url, key_file = server.api.base_url, tmp_path / "data" / "admin-api-key"
    key = key_file.read_text().strip()

    by_file = texium("export", "--url", url, "--key-file", str(key_file))
    assert by_file.returncode == 0 and by_file.stderr == "", by_file.stderr
    by_env_file = texium("export", env={"TEXIUM_URL": url, "TEXIUM_API_KEY_FILE": str(key_file)})
    assert by_env_file.returncode == 0 and by_env_file.stdout == by_file.stdout
    flagged = texium("export", "--url", url, "--key", key)
    assert flagged.returncode == 0 and flagged.stdout == by_file.stdout
    assert flagged.stderr.startswith("texium: warning: --key shows the key to every user of this machine (ps)")
    missing = texium("export", "--url", url, "--key-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and f"cannot read the API key file {tmp_path / 'nope'}" in missing.stderr

    with http_server([200]) as elsewhere:
        with http_server([302], extra_headers={"Location": elsewhere.url + "/api/users/"}) as redirector:
            for command in (("export",), ("import", "-")):
                result = texium(*command, "--url", redirector.url, "--key-file", str(key_file), stdin="texium: 1\n")
                assert result.returncode == 1, result.stderr
                assert f"redirected (HTTP 302) to {elsewhere.url}; texium follows no redirect" in result.stderr
        assert elsewhere.requests == []
        assert redirector.requests[0]["headers"]["Authorization"] == f"Bearer {key}"


def test_bad_files_arguments_and_secrets_fail_with_one_line(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    url = server.api.base_url
    server.api.create_user(name="Ops", email="ops@example.com")
    job = {"name": "Echo", "owner": "ops@example.com", "job_class_string": "jobs.echo.EchoJob"}

    def run(content: str, *args: str, name: str = "document") -> subprocess.CompletedProcess:
        path = tmp_path / name
        path.write_text(content)
        return texium("import", str(path), "--url", url, *args)

    bad_files = [
        ("{not json", "document: not valid JSON: Expecting property name"),
        ("texium: 1\njobs: [", "not valid YAML"),
        ("[]", "not a Texium document"),
        ('{"texium": 2}', "document version 2 is not supported"),
        ('{"texium": 1, "schedules": []}', "unknown section schedules"),
        ('{"texium": 1, "jobs": null}', "jobs must be a list"),
        (json.dumps({"texium": 1, "jobs": [{**job, "minutes": "5"}]}), "jobs[0] ('Echo'): unknown field minutes"),
        (json.dumps({"texium": 1, "jobs": [{**job, "is_paused": "yes"}]}), "is_paused must be true or false"),
        (json.dumps({"texium": 1, "jobs": [{**job, "pub_args": {}}]}), "Invalid field pub_args: must be a list"),
        (json.dumps({"texium": 1, "jobs": [{"name": "x"}]}), "jobs[0] ('x'): owner is required"),
        (json.dumps({"texium": 1, "users": [{"email": "not-an-address"}]}), "Invalid field email"),
        (
            json.dumps({"texium": 1, "servers": [{"name": "s", "owner": "ops@example.com", "password": "x"}]}),
            "password is not part of a document",
        ),
    ]
    for content, message in bad_files:
        result = run(content)
        assert result.returncode == 2 and message in result.stderr, (content, result.stderr)
    missing = texium("import", str(tmp_path / "missing.yaml"), "--url", url)
    assert missing.returncode == 2 and "cannot read it: No such file or directory" in missing.stderr
    assert texium("import", "--url", url).returncode == 2  # argparse: FILE is required
    assert texium("export", "--url", "localhost:8000").returncode == 2
    unreachable = texium("export", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr

    # Checked with the server before anything changes: schedules, job classes, owners, required fields.
    problems = {
        "texium": 1,
        "jobs": [
            {**job, "minute": "61"},
            {**job, "name": "Tz", "timezone": "Mars/Olympus"},
            {**job, "name": "Class", "job_class_string": "jobs.nope.NopeJob"},
            {**job, "name": "Orphan", "owner": "nobody@example.com"},
            {"name": "No class", "owner": "ops@example.com"},
        ],
    }
    result = run(json.dumps(problems), "--apply")
    assert result.returncode == 2 and "cannot be applied: 5 problem(s)" in result.stderr
    assert "problem: job 'Echo' of ops@example.com: Invalid cron field minute: '61'" in result.stdout
    assert "problem: job 'Tz' of ops@example.com:" in result.stdout and "Mars/Olympus" in result.stdout
    assert "'jobs.nope.NopeJob' is not a job class of this server" in result.stdout
    assert "nobody@example.com is neither in the file's users nor on the server" in result.stdout
    assert "job 'No class' of ops@example.com: Missing required field: job_class_string" in result.stdout
    assert server.api.get("/api/scheduler/jobs").json()["total"] == 0

    # A secret exported as *** cannot be restored by a create: a warning in the plan, and --apply
    # changes nothing unless told to leave those out.
    secret = {"texium": 1, "jobs": [{**job, "pub_kwargs": {"token": "***"}}, {**job, "name": "Plain"}]}
    plan = run(yaml.safe_dump(secret), name="secret.yaml")
    assert plan.returncode == 0, plan.stderr
    warning = "warning: job 'Echo' of ops@example.com: pub_kwargs.token is *** in the file"
    assert warning in plan.stdout and "cannot be restored on a create" in plan.stdout
    refused = run(yaml.safe_dump(secret), "--apply", name="secret.yaml")
    assert refused.returncode == 2 and "nothing was changed: 1 change(s) need a secret" in refused.stderr
    assert server.api.get("/api/scheduler/jobs").json()["total"] == 0
    skipped = run(yaml.safe_dump(secret), "--apply", "--skip-unrestorable", name="secret.yaml")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped job 'Echo' of ops@example.com: pub_kwargs.token cannot be restored from ***" in skipped.stdout
    assert [j["name"] for j in server.api.get("/api/scheduler/jobs").json()["data"]] == ["Plain"]


def test_a_masked_instance_url_password_is_sent_back_as_it_is(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    user = server.api.create_user(email="ops@example.com")
    url = "https://svc:pw@now.example.com/"
    server_id = post(
        server.api, "/api/servers/create", {"user_id": user, "name": "Now", "hostname": "now", "instance_url": url}
    )
    document = export(server.api.base_url)
    assert document["servers"][0]["instance_url"] == "https://svc:***@now.example.com/"
    document["servers"][0].update(port=8443, instance_url="https://svc:***@now.example.com/v2")
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(document))
    applied = texium("import", str(path), "--url", server.api.base_url, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "~ update server 'Now' of ops@example.com: port null -> 8443; instance_url" in applied.stdout
    assert "warning" not in applied.stdout  # the server keeps the stored password for the same host
    stored = server.api.get(f"/api/servers/{server_id}").json()["data"]
    assert stored["port"] == 8443 and stored["instance_url"] == "https://svc:***@now.example.com/v2"
    assert "Nothing to do" in texium("import", str(path), "--url", server.api.base_url, "--apply").stdout


def test_chains_export_and_import_by_name_and_a_cycle_in_the_file_writes_nothing(start_server, tmp_path):
    a = start_server("sqlite", tmp_path / "a")
    ops = post(a.api, "/api/users/", {"name": "Ops", "email": "ops@example.com", "role": "admin"})
    ada = post(a.api, "/api/users/", {"name": "Ada", "email": "ada@example.com"})
    job = {"job_class_string": "jobs.echo.EchoJob", "minute": "0", "hour": "1"}
    load = post(a.api, "/api/scheduler/jobs", {**job, "user_id": ada, "name": "load"})
    extract = post(a.api, "/api/scheduler/jobs", {**job, "user_id": ada, "name": "extract", "on_success": [load]})
    post(
        a.api, "/api/scheduler/jobs", {**job, "user_id": ops, "name": "report", "depends_on": {"jobs": [extract, load]}}
    )
    document = export(a.api.base_url)
    jobs = {j["name"]: j for j in document["jobs"]}
    assert jobs["extract"]["on_success"] == ["load"]  # a job of the same owner: its name
    assert jobs["report"]["depends_on"] == {
        "jobs": [{"owner": "ada@example.com", "name": "extract"}, {"owner": "ada@example.com", "name": "load"}],
        "within_seconds": 86400,
        "require": "success",
    }

    b = start_server("sqlite", tmp_path / "b")
    schedule = tmp_path / "chains.json"
    cyclic = json.loads(json.dumps(document))
    next(j for j in cyclic["jobs"] if j["name"] == "load")["on_failure"] = ["extract"]
    schedule.write_text(json.dumps(cyclic))
    refused = texium("import", str(schedule), "--url", b.api.base_url, "--apply")
    assert refused.returncode != 0
    assert "a cycle through the chains: 'extract' -> 'load' -> 'extract'" in refused.stdout, refused.stdout
    assert totals(b.api) == (0, 0, 0, 0)  # nothing written

    schedule.write_text(json.dumps(document))
    applied = texium("import", str(schedule), "--url", b.api.base_url, "--apply")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    assert export(b.api.base_url) == document  # the chain names resolve to the new ids
    again = texium("import", str(schedule), "--url", b.api.base_url)
    assert "Nothing to do" in again.stdout, again.stdout
