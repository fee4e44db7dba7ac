"""Heartbeat monitors (/api/scheduler/monitors, /ping/<token>, `texium ping-run`) against live
servers and a real local receiver channel: CRUD and 400s naming the field; late then down with a
short grace, and recovery; /fail and exit codes as execution records; a wrong or rotated token is
a 404 that reveals nothing; rate limits; the wrapper with a real failing command; two nodes on
one store send one down alert, and two checks that read the same due monitor move it once."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from unittest import mock

import pytest
import requests

from tests.jobs_fixtures import http_server
from tests.server_process import REPO, wait_for

# The receiver listens on loopback over plain http (both refused by default).
LOCAL = {"TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32", "TEXIUM_CHANNEL_HTTPS_ONLY": "false"}
FAST_NODES = {**LOCAL, "TEXIUM_HEARTBEAT_SECONDS": "0.2"}
NOT_FOUND = {"detail": "Not found"}


@pytest.fixture
def receiver():
    with http_server(statuses=(200,)) as server:
        yield server


def create_monitor(api, owner, **fields) -> tuple[str, str]:
    """(monitor id, ping URL)."""
    body = {"user_id": owner, "name": "nightly", "period_seconds": 3600, **fields}
    response = api.post("/api/scheduler/monitors", json=body)
    assert response.status_code == 201, response.text
    return response.json()["monitor_id"], response.json()["ping_url"]


def monitor(api, monitor_id) -> dict:
    response = api.get(f"/api/scheduler/monitors/{monitor_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def executions(api, owner) -> list[dict]:
    return api.get(f"/api/scheduler/executions?user_id={owner}").json()["data"]


def webhook_channel(api, owner, receiver) -> str:
    body = {"user_id": owner, "name": "hook", "kind": "webhook", "url": receiver.url}
    response = api.post("/api/scheduler/channels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def events(receiver) -> list[str]:
    return [json.loads(request["body"])["event"] for request in receiver.requests]


def test_crud_shows_the_ping_url_only_at_create(api):
    owner = api.create_user()
    monitor_id, ping_url = create_monitor(
        api, owner, name="backup", period_seconds=None, minute="0", hour="2", timezone="Europe/Berlin"
    )
    assert ping_url.startswith(f"{api.base_url}/ping/") and len(ping_url.rsplit("/", 1)[1]) >= 22
    shown = monitor(api, monitor_id)
    assert shown["state"] == "new" and shown["ping_url"] is None and "token_hash" not in shown
    assert (shown["minute"], shown["hour"], shown["timezone"], shown["period_seconds"]) == (
        "0",
        "2",
        "Europe/Berlin",
        None,
    )
    assert shown["next_expected_at"].endswith(("+00:00", "Z")) and shown["grace_seconds"] == 300
    assert ping_url.rsplit("/", 1)[1] not in json.dumps(api.get("/api/scheduler/monitors").json())
    assert [m["_id"] for m in api.get("/api/scheduler/monitors").json()["data"]].count(monitor_id) == 1
    daily, _ = create_monitor(api, owner, period_seconds=None)  # neither a period nor cron fields
    assert monitor(api, daily)["period_seconds"] == 86400

    assert api.put(f"/api/scheduler/monitors/{monitor_id}", json={"period_seconds": 60, "grace_seconds": 5}).ok
    shown = monitor(api, monitor_id)
    assert (shown["period_seconds"], shown["grace_seconds"], shown.get("minute")) == (60, 5, None)
    assert api.patch(f"/api/scheduler/monitors/{monitor_id}", json={"is_paused": True}).ok
    assert monitor(api, monitor_id)["state"] == "paused"
    assert api.delete(f"/api/scheduler/monitors/{monitor_id}").ok
    assert api.get(f"/api/scheduler/monitors/{monitor_id}").status_code == 404
    assert api.get(ping_url.replace(api.base_url, "")).json() == NOT_FOUND


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": ""}, "name"),
        ({"period_seconds": 0}, "period_seconds"),
        ({"minute": "5"}, "period_seconds"),  # both
        ({"period_seconds": None, "minute": "61"}, "minute"),
        ({"period_seconds": None, "hour": "1", "timezone": "Mars/Base"}, "timezone"),
        ({"grace_seconds": -1}, "grace_seconds"),
        ({"notify": {"channels": [{"id": "0123456789abcdef01234567", "events": ["late"]}]}}, "notify.channels[0].id"),
        ({"notify": {"channels": [{"id": "0123456789abcdef01234567", "events": ["timeout"]}]}}, "notify"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_monitors_are_a_400_naming_the_field(api, fields, field):
    owner = api.create_user()
    body = {"user_id": owner, "name": "m", "period_seconds": 60, **fields}
    response = api.post("/api/scheduler/monitors", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]


def test_fail_exit_codes_start_and_output_are_execution_records(api):
    owner = api.create_user()
    monitor_id, ping_url = create_monitor(api, owner)
    path = ping_url.replace(api.base_url, "")
    assert api.get(path).json() == {"ok": True}
    assert monitor(api, monitor_id)["state"] == "up"
    assert api.post(f"{path}/fail", data=b"disk full").status_code == 200
    shown = monitor(api, monitor_id)
    assert shown["state"] == "down" and shown["last_ping_at"] is not None
    assert api.post(f"{path}/start").ok
    assert monitor(api, monitor_id)["state"] == "running"
    time.sleep(0.2)
    big = b"x" * 20_000 + b"the end"
    assert api.post(f"{path}/0", data=big).ok
    assert (monitor(api, monitor_id)["state"], monitor(api, monitor_id)["last_exit_code"]) == ("up", 0)
    assert api.get(f"{path}/3").ok
    assert (monitor(api, monitor_id)["state"], monitor(api, monitor_id)["last_exit_code"]) == ("down", 3)
    for bad in ("nope", "256", "-1", "\u00b2"):
        assert api.get(f"{path}/{bad}").json() == NOT_FOUND

    records = executions(api, owner)  # newest first
    assert [r["status"] for r in records] == ["failed", "completed", "failed", "completed"]
    assert all(r["source"] == "monitor" and r["monitor_id"] == monitor_id for r in records)
    assert records[0]["exit_code"] == 3 and records[0]["error"] == "Exit code 3"
    assert len(records[1]["output"]) == 10 * 1024 and records[1]["output"].endswith("the end")
    assert records[1]["duration_ms"] >= 150 and records[1]["started_at"] < records[1]["completed_at"]
    assert records[2]["output"] == "disk full" and records[2]["error"] == "Failure reported by /fail"


def test_the_executions_list_filters_by_monitor_and_by_source(api):
    owner = api.create_user()
    first, first_url = create_monitor(api, owner, name="first")
    second, second_url = create_monitor(api, owner, name="second")
    for url in (first_url, f"{first_url}/fail", second_url):
        assert requests.get(url, timeout=10).ok
    job_id = api.create_job(owner, second="0", minute="0", hour="3", day_of_month="1", month="1")
    run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    api.wait_execution(run)

    def listed(query: str) -> list[dict]:
        response = api.get(f"/api/scheduler/executions?user_id={owner}&{query}")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    assert [(r["monitor_id"], r["status"]) for r in listed(f"monitor_id={first}")] == [
        (first, "failed"),
        (first, "completed"),
    ]
    assert [r["monitor_id"] for r in listed(f"monitor_id={second}&status=completed")] == [second]
    assert sorted(r["monitor_id"] for r in listed("source=monitor")) == sorted([first, first, second])
    assert [r["_id"] for r in listed("source=job")] == [run]
    for query, field in (("monitor_id=nope", "monitor_id"), ("source=cron", "source")):
        response = api.get(f"/api/scheduler/executions?{query}")
        assert response.status_code == 400 and field in response.json()["detail"], response.text


def test_a_wrong_or_rotated_token_is_a_404_that_reveals_nothing(api):
    owner = api.create_user()
    monitor_id, ping_url = create_monitor(api, owner)
    old = ping_url.replace(api.base_url, "")
    guesses = [f"/ping/{secrets.token_urlsafe(16)}", f"/ping/{secrets.token_urlsafe(16)}/start", "/ping/x/fail"]
    for path in guesses:
        for method in ("GET", "POST"):
            response = api.request(method, path)
            assert (response.status_code, response.json()) == (404, NOT_FOUND)
    rotated = api.post(f"/api/scheduler/monitors/{monitor_id}/rotate")
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new = rotated.json()["ping_url"].replace(api.base_url, "")
    assert new != old
    assert (api.get(old).status_code, api.get(old).json()) == (404, NOT_FOUND)
    assert api.get(f"{new}/0").json() == {"ok": True}
    assert monitor(api, monitor_id)["state"] == "up"


def test_pings_are_rate_limited_per_token_and_per_address(start_server):
    server = start_server(
        env={"TEXIUM_MONITOR_PINGS_PER_MINUTE": "3", "TEXIUM_MONITOR_PINGS_PER_ADDRESS_PER_MINUTE": "8"}
    )
    api = server.api
    owner = api.create_user()
    _, ping_url = create_monitor(api, owner)
    path = ping_url.replace(api.base_url, "")
    assert [api.get(path).status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get(path)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 61
    # Guesses count against the address too: 4 pings so far, 4 more allowed, then 429 whatever the token.
    statuses = [api.get(f"/ping/{secrets.token_urlsafe(16)}").status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 404, 429]


def test_late_then_down_then_recovery_alert_through_the_channels(start_server, receiver):
    api = start_server(env=FAST_NODES).api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    notify = {"channels": [{"id": channel, "events": ["late", "failure", "recovery"]}]}
    monitor_id, ping_url = create_monitor(api, owner, period_seconds=2, grace_seconds=1, notify=notify)
    time.sleep(3.5)
    assert monitor(api, monitor_id)["state"] == "new" and receiver.requests == []  # no ping yet: not checked
    path = ping_url.replace(api.base_url, "")
    assert api.get(path).ok
    assert wait_for(lambda: monitor(api, monitor_id)["state"] == "late", timeout=4)
    assert wait_for(lambda: monitor(api, monitor_id)["state"] == "down", timeout=4)
    assert wait_for(lambda: events(receiver) == ["late", "failure"], timeout=10), events(receiver)
    failure = json.loads(receiver.requests[1]["body"])
    assert failure["job"]["id"] == monitor_id and failure["link"].endswith(f"/#/monitors/{monitor_id}")
    assert executions(api, owner)[0]["status"] == "missed"
    assert api.get(path).ok
    assert wait_for(lambda: events(receiver) == ["late", "failure", "recovery"], timeout=10), events(receiver)
    assert monitor(api, monitor_id)["state"] == "up"


def test_ping_run_wraps_a_failing_command(start_server):
    api = start_server().api
    owner = api.create_user()
    monitor_id, ping_url = create_monitor(api, owner)
    token = ping_url.rsplit("/", 1)[1]
    env = {**os.environ, "TEXIUM_URL": api.base_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "texium.cli", "ping-run", token, "--", "sh", "-c", "echo boom; exit 3"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert done.returncode == 3 and done.stdout == b"boom\n" and done.stderr == b""
    record = executions(api, owner)[0]
    assert (record["status"], record["exit_code"], record["output"]) == ("failed", 3, "boom\n")
    assert record["duration_ms"] is not None and len(executions(api, owner)) == 1  # start and end: one record
    assert monitor(api, monitor_id)["state"] == "down"

    ok = [sys.executable, "-m", "texium.cli", "ping-run", ping_url, "--", "true"]
    assert subprocess.run(ok, env=env, capture_output=True, timeout=60).returncode == 0
    assert monitor(api, monitor_id)["state"] == "up"
    # The server gone: the command still runs and keeps its exit code; the pings only warn.
    gone = {**env, "TEXIUM_URL": "http://127.0.0.1:9"}
    done = subprocess.run(command, env=gone, capture_output=True, timeout=60)
    assert done.returncode == 3 and done.stdout == b"boom\n"
    assert b"warning" in done.stderr and token.encode() not in done.stderr


def test_two_nodes_on_one_store_send_one_down_alert(start_server, tmp_path, receiver):
    nodes = [start_server("sqlite", tmp_path / "data", env=FAST_NODES) for _ in range(2)]
    api = nodes[0].api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    notify = {"channels": [{"id": channel, "events": ["failure"]}]}
    monitor_id, ping_url = create_monitor(api, owner, period_seconds=1, grace_seconds=1, notify=notify)
    assert requests.get(ping_url.replace(api.base_url, nodes[1].api.base_url), timeout=10).ok
    assert wait_for(lambda: monitor(nodes[1].api, monitor_id)["state"] == "down", timeout=6)
    assert wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
    time.sleep(2)  # a second node's duplicate, if any, would have arrived by now
    assert events(receiver) == ["failure"]
    assert [r["status"] for r in executions(api, owner)] == ["missed", "completed"]


def test_two_checks_that_read_the_same_due_monitor_move_it_and_alert_once(datastore):
    """Both nodes' checks read the monitor before either writes (a barrier holds them): the
    conditional write on its generation lets exactly one move it and announce."""
    from datetime import timedelta

    from texium.core.records.monitors import MonitorService
    from texium.core.timeutil import utcnow

    owner = datastore.users.insert({"name": "o", "email": "o@example.com", "role": "admin"})
    announced: list[tuple[str, str]] = []
    nodes = [MonitorService(datastore, announce=lambda s, e, x: announced.append((s["_id"], e))) for _ in range(2)]
    monitor_id, _, _ = nodes[0].create({"user_id": owner, "name": "m", "period_seconds": 1, "grace_seconds": 1})
    past = utcnow() - timedelta(seconds=5)
    datastore.monitors.update(monitor_id, fields={"state": "up", "next_expected_at": past, "next_check_at": past})

    barrier = threading.Barrier(2, timeout=10)
    find = type(datastore.monitors).find

    def find_together(self, query=None, *args, **kwargs):
        found = find(self, query, *args, **kwargs)
        if query and "next_check_at" in query:
            barrier.wait()  # both have read the due monitor; now both try to move it
        return found

    with mock.patch.object(type(datastore.monitors), "find", find_together):
        threads = [threading.Thread(target=node.check_due) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    assert announced == [(monitor_id, "failure")]
    assert datastore.monitors.get(monitor_id)["state"] == "down"
    assert datastore.executions.count({"monitor_id": monitor_id, "status": "missed"}) == 1
