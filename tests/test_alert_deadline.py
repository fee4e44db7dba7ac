"""Deadlines and schedule adherence against live servers and a local webhook receiver: a
deadline a few seconds ahead (`time` with seconds) alerts once when it passes without a success,
not when a run succeeded before it, and once across a restart (the server stopped before the
deadline and started after it); bad deadlines are a 400 naming the field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, wait_for

LOCAL = {
    **SAMPLE_JOBS,
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_ALERT_CHECK_SECONDS": "0.2",
}
NEVER_SOON = {"second": "0", "minute": "0", "hour": "3", "day_of_month": "1", "month": "1"}  # Jan 1st, 03:00


@pytest.fixture
def receiver():
    with http_server(statuses=(200,)) as server:
        yield server


def webhook_channel(api, owner, receiver) -> str:
    body = {"user_id": owner, "name": "hook", "kind": "webhook", "url": receiver.url}
    response = api.post("/api/scheduler/channels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def deadline_in(seconds: float) -> tuple[dict, datetime]:
    """A daily deadline `seconds` from now (whole seconds, UTC), and its instant."""
    instant = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return {"time": instant.strftime("%H:%M:%S"), "timezone": "UTC"}, instant


def deadline_job(api, owner, channel, deadline, **fields) -> str:
    notify = {"channels": [{"id": channel, "events": ["deadline_missed"]}]}
    return api.create_job(owner, **NEVER_SOON, deadline=deadline, notify=notify, **fields)


def alerts_of(receiver) -> list[dict]:
    return [json.loads(r["body"]) for r in receiver.requests]


def checked_until(api, job_id) -> str | None:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["deadline_checked_until"]


def test_a_deadline_without_a_success_alerts_once_and_one_with_a_success_says_nothing(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    deadline, instant = deadline_in(4)
    idle = deadline_job(api, owner, channel, deadline, name="nightly-export")
    done = deadline_job(api, owner, channel, deadline, name="nightly-import")
    run = api.post(f"/api/scheduler/jobs/{done}/run").json()["execution_id"]
    assert api.wait_execution(run)["status"] == "completed"
    assert not receiver.requests  # nothing before the deadline

    assert wait_for(lambda: receiver.requests, timeout=15), "no deadline alert"
    assert datetime.now(UTC) >= instant
    # both were judged at this instant; only the one without a success alerted, once
    expected = instant.isoformat(timespec="microseconds")
    assert wait_for(lambda: checked_until(api, done) == expected and checked_until(api, idle) == expected)
    time.sleep(1.5)
    sent = alerts_of(receiver)
    assert [(a["event"], a["job"]["id"], a["job"]["name"]) for a in sent] == [
        ("deadline_missed", idle, "nightly-export")
    ]
    assert "deadline" in sent[0]["execution"]["error"] and expected[:19] in sent[0]["execution"]["error"]
    job = api.get(f"/api/scheduler/jobs/{idle}").json()["data"]
    assert job["deadline"] == {**deadline, "day_of_month": "*", "month": "*", "day_of_week": "*", "week": "*"}
    assert job["deadline_due_at"] == (instant + timedelta(days=1)).isoformat(timespec="microseconds")
    deliveries = api.get(f"/api/scheduler/channels/{channel}/deliveries").json()["data"]
    assert [(d["event"], d["ok"]) for d in deliveries] == [("deadline_missed", True)]


def test_a_deadline_that_passed_while_the_server_was_down_alerts_once_after_it_starts(start_server, receiver, tmp_path):
    data_dir = tmp_path / "shared-data"
    first = start_server(env=LOCAL, data_dir=data_dir)
    api = first.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    deadline, instant = deadline_in(3)
    job_id = deadline_job(api, owner, channel, deadline)
    first.stop()
    while datetime.now(UTC) < instant + timedelta(seconds=1):
        time.sleep(0.1)
    assert not receiver.requests

    api = start_server(env=LOCAL, data_dir=data_dir).api
    assert wait_for(lambda: receiver.requests, timeout=15), "no deadline alert after the restart"
    time.sleep(1.5)
    assert [(a["event"], a["job"]["id"]) for a in alerts_of(receiver)] == [("deadline_missed", job_id)]
    assert checked_until(api, job_id) == instant.isoformat(timespec="microseconds")


@pytest.mark.parametrize(
    ("deadline", "field"),
    [
        ({"time": "25:00"}, "deadline.time"),
        ({"time": "6am"}, "deadline.time"),
        ({"day_of_week": "mon-fri"}, "deadline"),
        ({"time": "06:00", "timezone": "Mars/Olympus"}, "deadline.timezone"),
        ({"time": "06:00", "day_of_week": "mon-funday"}, "deadline.day_of_week"),
        ({"time": "06:00", "hour": "6"}, "deadline"),
    ],
)
def test_a_bad_deadline_is_a_400_naming_the_field(server, deadline, field):
    api = server.api
    owner = api.create_user()
    body = {"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "bad", "deadline": deadline}
    response = api.post("/api/scheduler/jobs", json=body)
    assert response.status_code == 400, response.text
    assert f"field {field}" in response.json()["detail"], response.text
