"""Trigger URLs (POST /api/scheduler/jobs/{id}/triggers, POST /trigger/<token>) against live
servers: a use starts one run (trigger `url`, triggered_by) and answers 202 {"execution_id"}
only; revoked, expired, wrong tokens and tokens of a deleted job are one identical 404; the
per-token rate limit; allowed_parameters; a `user` sees only their jobs' tokens; the audit
trail; the token never shows again, in any answer or the server's log."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.server_process import SAMPLE_JOBS, wait_for

NOT_FOUND = {"detail": "Not found"}
ON = {"TEXIUM_AUTH_MODE": "on", **SAMPLE_JOBS}


def create_trigger(api, job_id, **fields) -> dict:
    response = api.post(f"/api/scheduler/jobs/{job_id}/triggers", json={"name": "ci", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def use(url, body=None, **kwargs) -> requests.Response:
    """A use as curl makes it: no key, no session."""
    return requests.post(url, json=body, timeout=10, **kwargs)


def audit(api, job_id) -> list[dict]:
    return api.get(f"/api/scheduler/audit-logs?job_id={job_id}").json()["data"]


def test_a_use_starts_one_run_and_answers_its_id_only(api, server):
    owner = api.create_user()
    job_id = api.create_job(owner, pub_args=["hi"], parameters=[{"name": "env", "type": "string"}])
    created = create_trigger(api, job_id, name="deploy from CI")
    token, url = created["token"], created["url"]
    assert len(token) >= 22 and url == f"{api.base_url}/trigger/{token}"
    again = api.post(f"/api/scheduler/jobs/{job_id}/triggers", json={"name": "spare"})
    assert again.status_code == 201 and again.headers["Cache-Control"] == "no-store"
    assert api.delete(f"/api/scheduler/jobs/{job_id}/triggers/{again.json()['trigger_id']}").status_code == 200

    response = use(url, {"env": "prod"})
    assert response.status_code == 202, response.text
    assert list(response.json()) == ["execution_id"]
    execution = api.wait_execution(response.json()["execution_id"])
    assert execution["status"] == "completed" and execution["trigger"] == "url"
    assert execution["triggered_by"] == {"trigger_id": created["trigger_id"], "name": "deploy from CI"}
    assert execution["parameters"] == {"env": "prod"}

    # No body at all is a run with the defaults; the wrapped form is read as the flat one.
    assert use(url).status_code == 202
    wrapped = use(url, {"parameters": {"env": "test"}})
    assert api.wait_execution(wrapped.json()["execution_id"])["parameters"] == {"env": "test"}

    listed = next(t for t in api.get(f"/api/scheduler/jobs/{job_id}/triggers").json()["data"] if t["uses"])
    assert listed["_id"] == created["trigger_id"] and listed["uses"] == 3
    assert listed["last_used_from"] == "127.0.0.1" and listed["last_used_at"].endswith("+00:00")
    assert listed["revoked_at"] is None and listed["expires_at"] is None and "token_hash" not in listed

    events = [entry["event"] for entry in audit(api, job_id)]
    assert events.count("trigger_used") == 3 and events.count("trigger_created") == 2
    used = next(entry for entry in audit(api, job_id) if entry["event"] == "trigger_used")
    assert "deploy from CI" in used["description"] and "127.0.0.1" in used["description"]

    # The token shows nowhere after create: answers, and the server's own log (access log included).
    for path in (
        f"/api/scheduler/jobs/{job_id}/triggers",
        f"/api/scheduler/jobs/{job_id}",
        f"/api/scheduler/executions?job_id={job_id}",
        f"/api/scheduler/audit-logs?job_id={job_id}",
    ):
        assert token not in api.get(path).text, path
    assert wait_for(lambda: "/trigger/***" in server.log())
    assert token not in server.log()


def test_revoked_expired_wrong_and_orphaned_tokens_answer_the_same_404(api):
    owner = api.create_user()
    job_id = api.create_job(owner)
    revoked = create_trigger(api, job_id, name="old")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = create_trigger(api, job_id, name="short", expires_at=soon)
    assert use(revoked["url"]).status_code == 202  # works until revoked

    answer = api.delete(f"/api/scheduler/jobs/{job_id}/triggers/{revoked['trigger_id']}")
    assert answer.status_code == 200 and answer.json()["data"]["revoked_at"].endswith("+00:00")
    assert api.delete(f"/api/scheduler/jobs/{job_id}/triggers/{revoked['trigger_id']}").status_code == 200
    assert [e["event"] for e in audit(api, job_id)].count("trigger_revoked") == 1

    other_job = api.create_job(owner, name="deleted soon")
    orphan = create_trigger(api, other_job)
    assert api.delete(f"/api/scheduler/jobs/{other_job}").status_code == 200
    deleted = [e for e in audit(api, other_job) if e["event"] == "deleted"]
    assert "its 1 trigger URLs revoked" in deleted[0]["description"], deleted  # not left live in the store
    time.sleep(1.2)  # the expiring token has expired

    wrong = f"{api.base_url}/trigger/{secrets.token_urlsafe(16)}"
    answers = [use(url) for url in (wrong, revoked["url"], expiring["url"], orphan["url"])]
    for response in answers:
        assert response.status_code == 404 and response.json() == NOT_FOUND
    shapes = {(r.content, tuple(sorted(k for k in r.headers if k.lower() != "date"))) for r in answers}
    assert len(shapes) == 1, shapes

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = api.post(f"/api/scheduler/jobs/{job_id}/triggers", json={"name": "x", "expires_at": past})
    assert refused.status_code == 400 and refused.json()["detail"].startswith("Invalid field expires_at")
    nameless = api.post(f"/api/scheduler/jobs/{job_id}/triggers", json={})
    assert nameless.status_code == 400 and "name" in nameless.json()["detail"]
    missing = f"/api/scheduler/jobs/{job_id}/triggers/0123456789abcdef01234567"
    assert api.delete(missing).status_code == 404


def test_allowed_parameters_refuse_other_names(api):
    owner = api.create_user()
    declared = [{"name": "env", "type": "string"}, {"name": "force", "type": "boolean"}]
    job_id = api.create_job(owner, parameters=declared)
    url = create_trigger(api, job_id, allowed_parameters=["env"])["url"]
    for body in ({"force": True}, {"parameters": {"force": True}}, {"env": "prod", "force": True}):
        refused = use(url, body)
        assert refused.status_code == 400, body
        assert refused.json()["detail"].startswith("Invalid field parameters.force"), refused.text
    accepted = use(url, {"env": "prod"})
    assert accepted.status_code == 202
    assert api.wait_execution(accepted.json()["execution_id"])["parameters"] == {"env": "prod"}
    [listed] = api.get(f"/api/scheduler/jobs/{job_id}/triggers").json()["data"]
    assert listed["allowed_parameters"] == ["env"] and listed["uses"] == 1  # refusals are not uses


def test_uses_are_rate_limited_per_token_and_stop_in_maintenance(start_server):
    server = start_server(env={"TEXIUM_TRIGGER_RUNS_PER_MINUTE": "2"})
    api = server.api
    job_id = api.create_job(api.create_user())
    first, second = create_trigger(api, job_id, name="a"), create_trigger(api, job_id, name="b")
    assert [use(first["url"]).status_code for _ in range(3)] == [202, 202, 429]
    limited = use(first["url"])
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 61
    assert use(second["url"]).status_code == 202  # another token has its own limit

    assert api.post("/api/scheduler/pause-all", json={"note": "upgrade"}).status_code == 200
    paused = use(second["url"])
    assert paused.status_code == 409 and "Maintenance" in paused.json()["detail"]
    assert api.post("/api/scheduler/resume-all").status_code == 200
    log = server.log()  # refusals (429, 409) are logged without the token too
    assert "POST /trigger/*** 429" in log and "POST /trigger/*** 409" in log
    assert first["token"] not in log and second["token"] not in log


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server that requires keys; two users, each with a key and a job."""
    from tests.server_process import ServerProcess

    server = ServerProcess("sqlite", tmp_path_factory.mktemp("triggers") / "data", env=ON).start()
    admin = server.api
    admin.session.headers["Authorization"] = "Bearer " + (server.data_dir / "admin-api-key").read_text().strip()
    people = {}
    for name in ("uma", "oz"):
        user_id = admin.create_user(name=name)
        key = admin.post(f"/api/users/{user_id}/api-keys", json={"label": name}).json()["key"]
        session = server.api
        session.session.headers["Authorization"] = f"Bearer {key}"
        people[name] = (session, admin.create_job(user_id, name=f"{name}'s job"))
    yield server, admin, people
    server.stop()


def test_a_user_manages_only_their_own_jobs_triggers(secured):
    server, admin, people = secured
    (uma, uma_job), (oz, oz_job) = people["uma"], people["oz"]
    mine = create_trigger(uma, uma_job, name="uma's")
    create_trigger(admin, oz_job, name="oz's")
    assert [t["name"] for t in uma.get(f"/api/scheduler/jobs/{uma_job}/triggers").json()["data"]] == ["uma's"]
    for method, path in (
        ("GET", f"/api/scheduler/jobs/{oz_job}/triggers"),
        ("POST", f"/api/scheduler/jobs/{oz_job}/triggers"),
        ("DELETE", f"/api/scheduler/jobs/{oz_job}/triggers/{mine['trigger_id']}"),
    ):
        response = uma.request(method, path, json={"name": "x"})
        assert response.status_code == 404 and response.json() == {"detail": "Job not found"}, (method, path)
    # Oz cannot revoke Uma's trigger through his own job either.
    assert oz.delete(f"/api/scheduler/jobs/{oz_job}/triggers/{mine['trigger_id']}").status_code == 404
    # The use needs no key; a key-less request elsewhere is still a 401.
    assert use(mine["url"]).status_code == 202
    assert requests.get(f"{server.api.base_url}/api/scheduler/jobs/{uma_job}/triggers", timeout=10).status_code == 401
    assert mine["token"] not in json.dumps(admin.get(f"/api/scheduler/jobs/{uma_job}/triggers").json())


def test_metrics_and_stats_count_runs_by_what_started_them(start_server):
    server = start_server()
    api = server.api
    owner = api.create_user()
    job_id = api.create_job(owner)
    other_job = api.create_job(owner, name="other")
    url = create_trigger(api, job_id)["url"]
    started = [use(url).json()["execution_id"] for _ in range(2)]
    started.append(api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"])
    started.append(api.post(f"/api/scheduler/jobs/{other_job}/run").json()["execution_id"])
    assert all(api.wait_execution(execution_id)["status"] == "completed" for execution_id in started)

    metrics = api.get("/metrics").text
    assert 'texium_runs_started_total{job_class="jobs.echo.EchoJob",trigger="url"} 2.0' in metrics
    assert 'texium_runs_started_total{job_class="jobs.echo.EchoJob",trigger="run_now"} 2.0' in metrics

    none = {"schedule": 0, "run_now": 0, "retry": 0, "backfill": 0, "chain": 0}
    one_job = api.get(f"/api/scheduler/stats?job_id={job_id}").json()["stats"]
    assert one_job["by_trigger"] == {**none, "run_now": 1, "url": 2}
    everything = api.get("/api/scheduler/stats").json()["stats"]["by_trigger"]
    assert everything == api.get(f"/api/scheduler/stats?user_id={owner}").json()["stats"]["by_trigger"]
    assert everything == {**none, "run_now": 2, "url": 2}
