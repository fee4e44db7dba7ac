"""A job's own notify e-mail / webhook (the alerts before channels) moved into channels: at start-up
for a store written before (a job holding `notify.email` / `notify.webhook`), and at each API write,
through real server processes, a loopback SMTP server and a loopback HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

from tests.jobs_fixtures import http_server, smtp_server
from tests.server_process import SAMPLE_JOBS, wait_for
from texium.core.datastore import open_datastore
from texium.core.events import messages

FLAKY = "tests.sample_jobs.operations.FlakyJob"  # fails its first `failures` runs
YEARLY = {"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}
LEGACY_EVENTS = ["failure", "recovery"]


def settings(smtp_port: int) -> dict:
    return {
        **SAMPLE_JOBS,
        "TEXIUM_SMTP_HOST": "127.0.0.1",
        "TEXIUM_SMTP_PORT": str(smtp_port),
        "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
        "TEXIUM_ALERT_WEBHOOK_SECRET": "alert-signing-secret",
        "TEXIUM_SCHEDULER_POLL_SECONDS": "0.2",
    }


def write_legacy_notify(data_dir, notify_by_job: dict[str, dict]) -> None:
    """What a server before channels stored: the notify's own e-mail and webhook (the server is stopped)."""
    store = open_datastore(None, "texium_db", str(data_dir))
    try:
        for job_id, notify in notify_by_job.items():
            assert store.jobs.update_many({"_id": job_id}, {"notify": notify}) == 1
    finally:
        store.close()


def seed(start_server, data_dir, env, jobs: int, **user) -> tuple[str, list[str]]:
    """A user and `jobs` run-now-only flaky jobs, made by a server that is then stopped."""
    server = start_server("sqlite", data_dir, env=env)
    user_id = server.api.create_user(**user)
    ids = [
        server.api.create_job(
            user_id,
            name=f"Nightly import {n}",
            job_class_string=FLAKY,
            pub_args=[str(data_dir.parent / f"runs-{n}.log")],
            pub_kwargs={"failures": 1},
            **YEARLY,
        )
        for n in range(jobs)
    ]
    server.stop()
    return user_id, ids


def channels_of(api, user_id: str) -> list[dict]:
    return [c for c in api.get("/api/scheduler/channels").json()["data"] if c["user_id"] == user_id]


def test_a_stored_legacy_notify_becomes_channels_at_start_and_alerts_as_before(start_server, tmp_path):
    data_dir = tmp_path / "data"
    with smtp_server() as (mailbox, smtp_port), http_server() as receiver:
        env = settings(smtp_port)
        user_id, (job_id,) = seed(start_server, data_dir, env, 1, email="dev@example.com")
        legacy = {"email": ["ops@example.com"], "webhook": receiver.url + "/hook", "events": LEGACY_EVENTS}
        write_legacy_notify(data_dir, {job_id: legacy})

        api = start_server("sqlite", data_dir, env=env).api
        notify = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["notify"]
        assert notify["email"] == [] and notify["webhook"] is None and notify["events"] == LEGACY_EVENTS
        channels = {c["_id"]: c for c in channels_of(api, user_id)}
        assert sorted(channels) == sorted(entry["id"] for entry in notify["channels"])
        assert all(entry["events"] == LEGACY_EVENTS for entry in notify["channels"])
        by_kind = {c["kind"]: c for c in channels.values()}
        assert by_kind["email"]["recipients"] == ["ops@example.com"]
        assert by_kind["webhook"]["url"] == receiver.url + "/hook" and by_kind["webhook"]["has_secret"] is False
        (entry,) = [
            e
            for e in api.get("/api/scheduler/audit-logs", params={"job_id": job_id}).json()["data"]
            if "moved to channels" in e["description"]
        ]
        assert entry["user"] == "scheduler" and by_kind["email"]["_id"] in entry["description"]
        # A non-admin's recipient outside the channel rules was accepted when stored: kept, and said so.
        assert "kept recipients the channel rules would refuse" in entry["description"]

        response = api.post(f"/api/scheduler/jobs/{job_id}/run")
        failed = api.wait_execution(response.json()["execution_id"])
        assert failed["status"] == "failed"
        assert wait_for(lambda: len(receiver.requests) >= 1 and len(mailbox.messages) >= 1, timeout=15)

    (request,) = receiver.requests
    assert request["path"] == "/hook" and request["headers"]["X-Texium-Event"] == "failure"
    assert request["headers"]["X-Texium-Execution"] == failed["_id"]
    assert request["headers"]["User-Agent"] == "Texium-Alerts/1"
    expected = "sha256=" + hmac.new(b"alert-signing-secret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Texium-Signature"] == expected
    body = json.loads(request["body"])
    before = messages.webhook_payload({"_id": job_id}, "failure", {"_id": failed["_id"]}, "http://x")
    assert body.keys() == before.keys() and body["execution"].keys() == before["execution"].keys()
    assert body["job"] == {"id": job_id, "name": "Nightly import 0", "job_class_string": FLAKY}
    assert body["execution"]["id"] == failed["_id"] and "failure number 1" in body["execution"]["error"]
    (mail,) = mailbox.messages
    assert mail["rcpt_tos"] == ["ops@example.com"]
    assert "[Texium] Job failing: Nightly import 0" in mail["content"].decode()
    alerts = wait_for(lambda: api.get(f"/api/scheduler/executions/{failed['_id']}").json()["data"].get("alerts"))
    assert sorted((a["channel"], a["ok"], a["channel_id"] in channels) for a in alerts) == [
        ("email", True, True),
        ("webhook", True, True),
    ]


def test_two_servers_starting_at_once_on_one_store_make_each_channel_once(start_server, tmp_path):
    data_dir = tmp_path / "data"
    with smtp_server() as (_, smtp_port):
        env = settings(smtp_port)
        user_id, job_ids = seed(start_server, data_dir, env, 4, email="ops@example.com")
        same = {"email": ["ops@example.com"], "webhook": "http://127.0.0.1:9/same", "events": LEGACY_EVENTS}
        write_legacy_notify(
            data_dir,
            {
                job_ids[0]: same,
                job_ids[1]: same,  # the same destinations: the same two channels
                job_ids[2]: {"email": ["ops@example.com"], "webhook": None, "events": ["failure"]},
                job_ids[3]: {"email": [], "webhook": "http://127.0.0.1:9/other", "events": ["missed"]},
            },
        )
        servers = []
        starting = [
            threading.Thread(target=lambda: servers.append(start_server("sqlite", data_dir, env=env))) for _ in range(2)
        ]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert len(servers) == 2
        api = servers[0].api

        channels = channels_of(api, user_id)
        assert sorted((c["kind"], c["url"] or c["recipients"][0]) for c in channels) == [
            ("email", "ops@example.com"),
            ("webhook", "http://127.0.0.1:9/other"),
            ("webhook", "http://127.0.0.1:9/same"),
        ]
        ids = {(c["kind"], c["url"]): c["_id"] for c in channels}
        jobs = [api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["notify"] for job_id in job_ids]
        assert jobs[0]["channels"] == jobs[1]["channels"]
        assert {e["id"] for e in jobs[0]["channels"]} == {
            ids[("email", None)],
            ids[("webhook", "http://127.0.0.1:9/same")],
        }
        assert jobs[2]["channels"] == [{"id": ids[("email", None)], "events": ["failure"]}]
        assert jobs[3]["channels"] == [{"id": ids[("webhook", "http://127.0.0.1:9/other")], "events": ["missed"]}]
        assert all(n["email"] == [] and n["webhook"] is None for n in jobs)
        moved = [
            e["job_id"]
            for e in api.get("/api/scheduler/audit-logs", params={"limit": 100}).json()["data"]
            if "moved to channels" in e["description"]
        ]
        assert sorted(moved) == sorted(job_ids)  # one node moved each job


def test_a_legacy_notify_written_through_the_api_is_converted_the_same_way(start_server, tmp_path):
    with smtp_server() as (_, smtp_port):
        api = start_server("sqlite", tmp_path / "data", env=settings(smtp_port)).api
        user_id = api.create_user(email="dev@example.com")
        legacy = {"email": ["dev@example.com"], "webhook": "http://127.0.0.1:9/hook", "events": ["failure"]}
        first = api.create_job(user_id, notify=legacy, **YEARLY)
        second = api.create_job(user_id, name="Other", **YEARLY)
        assert api.put(f"/api/scheduler/jobs/{second}", json={"notify": legacy}).status_code == 200
        notifies = [api.get(f"/api/scheduler/jobs/{j}").json()["data"]["notify"] for j in (first, second)]
        assert notifies[0] == notifies[1] and len(notifies[0]["channels"]) == 2
        assert notifies[0]["email"] == [] and notifies[0]["webhook"] is None
        assert len(channels_of(api, user_id)) == 2  # the second job reuses the first one's channels

        # The channel rules hold for the old fields too: a user mails only their own address ...
        foreign = {"email": ["boss@elsewhere.org"], "events": ["failure"]}
        response = api.post(
            "/api/scheduler/jobs",
            json={"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "x", "notify": foreign},
        )
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Invalid field notify.email[0]: the owner may mail only")
        response = api.put(f"/api/scheduler/jobs/{second}", json={"notify": foreign})
        assert response.status_code == 400 and "notify.email[0]" in response.json()["detail"]
        assert len(channels_of(api, user_id)) == 2
