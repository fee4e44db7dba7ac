"""The noise rules of job alerts (texium.core.events.noise) end to end: live servers, real failing
jobs (FlakyJob fails its first runs, counted in a file) and a local HTTP receiver behind webhook
and Slack channels. Failure tolerance, re-alerts while still failing with no new run, the
recovery message with the streak and its duration, flapping held until stable, mutes (a time and
a calendar's maintenance window) recorded and not sent, and two nodes on one store sending one
re-alert per interval."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

FLAKY = "tests.sample_jobs.operations.FlakyJob"
# Receivers listen on loopback over plain http; due re-alerts are looked for every 0.2 s.
LOCAL = {
    **SAMPLE_JOBS,
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_ALERT_CHECK_SECONDS": "0.2",
}
NEVER = {"minute": "0", "hour": "3", "day_of_month": "1", "month": "1"}  # fires only by run-now here


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("noise") / "data", env=LOCAL).start()
    yield process
    process.stop()


@pytest.fixture
def receiver():
    with http_server(statuses=(200,)) as server:
        yield server


def webhook_channel(api, owner, receiver, path="/hook") -> str:
    body = {"user_id": owner, "name": f"hook{time.time_ns()}", "kind": "webhook", "url": receiver.url + path}
    response = api.post("/api/scheduler/channels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def flaky_job(api, owner, channel_id, counter, events, failures=9, **fields) -> str:
    return api.create_job(
        owner,
        job_class_string=FLAKY,
        pub_args=[str(counter)],
        pub_kwargs={"failures": failures},
        notify={"channels": [{"id": channel_id, "events": events}]},
        **NEVER,
        **fields,
    )


def run(api, job_id: str, expect: str) -> dict:
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    execution = api.wait_execution(execution_id)
    assert execution["status"] == expect, execution
    return execution


def job_doc(api, job_id: str) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def applied(api, job_id: str, execution: dict) -> None:
    """Wait until the alerts thread applied this outcome to the job's alert state."""
    assert wait_for(lambda: job_doc(api, job_id).get("alert_seen_id") == execution["_id"], timeout=10)


def payloads(receiver, path="/hook") -> list[dict]:
    return [json.loads(r["body"]) for r in receiver.requests if r["path"] == path]


def events_of(receiver, path="/hook") -> list[str]:
    return [p["event"] for p in payloads(receiver, path)]


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("alert_after_failures", 0),
        ("alert_after_failures", -3),
        ("realert_every_seconds", -1),
        ("flap_threshold", -1),
        ("flap_window_seconds", 0),
        ("mute_until", "tomorrow"),
        ("mute_calendars", ["not-an-id"]),
        ("mute_calendars", ["0123456789abcdef01234567"]),  # well formed, no such calendar
    ],
)
def test_bad_noise_fields_are_a_400_naming_the_field(local, field, value):
    api = local.api
    owner = api.create_user()
    body = {"user_id": owner, "name": "x", "job_class_string": "jobs.echo.EchoJob", field: value}
    answer = api.post("/api/scheduler/jobs", json=body)
    assert answer.status_code == 400 and field in answer.json()["detail"], answer.text
    job_id = api.create_job(owner)
    answer = api.put(f"/api/scheduler/jobs/{job_id}", json={field: value})
    assert answer.status_code == 400 and field in answer.json()["detail"], answer.text


def test_noise_fields_are_kept_and_served(local):
    api = local.api
    owner = api.create_user()
    fields = {"alert_after_failures": 3, "realert_every_seconds": 60, "flap_threshold": 4, "flap_window_seconds": 600}
    job_id = api.create_job(owner, mute_until="2030-01-02T03:04:05+01:00", **fields)
    job = job_doc(api, job_id)
    assert {k: job[k] for k in fields} == fields and moment(job["mute_until"]) == moment("2030-01-02T02:04:05Z")
    answer = api.put(f"/api/scheduler/jobs/{job_id}", json={"alert_after_failures": None, "mute_until": None})
    assert answer.status_code == 200, answer.text
    job = job_doc(api, job_id)
    assert job["alert_after_failures"] is None and job["mute_until"] is None


# --------------------------------------------------------------------------- tolerance


def test_tolerance_three_sends_nothing_for_two_failures_and_one_alert_at_the_third(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    job_id = flaky_job(api, owner, channel, tmp_path / "runs", ["failure", "recovery"], alert_after_failures=3)
    for _ in range(2):
        applied(api, job_id, run(api, job_id, "failed"))
    assert job_doc(api, job_id)["alert_streak"] == 2
    time.sleep(0.5)  # an alert, if one were sent, would have arrived by now
    assert receiver.requests == []
    third = run(api, job_id, "failed")
    assert wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
    applied(api, job_id, run(api, job_id, "failed"))  # a fourth failure: the streak was announced
    time.sleep(0.5)
    sent = payloads(receiver)
    assert [(p["event"], p["execution"]["id"], p["failure_streak"]) for p in sent] == [("failure", third["_id"], 3)]


def test_a_short_streak_that_ends_sends_no_recovery(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    job_id = flaky_job(
        api, owner, channel, tmp_path / "runs", ["failure", "recovery"], failures=2, alert_after_failures=3
    )
    for _ in range(2):
        run(api, job_id, "failed")
    applied(api, job_id, run(api, job_id, "completed"))
    time.sleep(0.5)
    assert receiver.requests == []
    assert job_doc(api, job_id)["alert_streak"] == 0


# --------------------------------------------------------------------------- re-alert


def test_still_failing_is_sent_again_every_interval_with_no_new_run(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    events = ["failure", "still_failing", "recovery"]
    job_id = flaky_job(api, owner, channel, tmp_path / "runs", events, failures=9, realert_every_seconds=2)
    failed = run(api, job_id, "failed")
    assert wait_for(lambda: events_of(receiver) == ["failure"], timeout=10)
    began = time.monotonic()
    assert wait_for(lambda: len(receiver.requests) >= 3, timeout=10), events_of(receiver)
    assert time.monotonic() - began >= 3.0  # two intervals of 2 s (the first counted from the failure alert)
    sent = payloads(receiver)
    assert [p["event"] for p in sent[:3]] == ["failure", "still_failing", "still_failing"]
    assert {p["execution"]["id"] for p in sent} == {failed["_id"]}  # no new run: the last one is named
    assert all(p["failure_streak"] == 1 and p["failing_for_seconds"] >= 1 for p in sent[1:3])
    executions = api.get(f"/api/scheduler/executions?job_id={job_id}").json()["data"]
    assert len(executions) == 1
    # every alert is recorded on that run
    alerts = wait_for(
        lambda: len(api.get(f"/api/scheduler/executions/{failed['_id']}").json()["data"].get("alerts") or []) >= 3
    )
    assert alerts


# --------------------------------------------------------------------------- recovery


def test_recovery_is_sent_once_naming_the_streak_and_its_duration(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    hook = webhook_channel(api, owner, receiver)
    slack = api.post(
        "/api/scheduler/channels",
        json={"user_id": owner, "name": "slack", "kind": "slack", "url": receiver.url + "/slack"},
    ).json()["channel_id"]
    events = ["failure", "recovery"]
    job_id = api.create_job(
        owner,
        job_class_string=FLAKY,
        pub_args=[str(tmp_path / "runs")],
        pub_kwargs={"failures": 2},
        notify={"channels": [{"id": hook, "events": events}, {"id": slack, "events": events}]},
        **NEVER,
    )
    first = run(api, job_id, "failed")
    time.sleep(1.2)  # the streak lasts more than a second
    run(api, job_id, "failed")
    recovered = run(api, job_id, "completed")
    applied(api, job_id, run(api, job_id, "completed"))
    assert wait_for(lambda: len(receiver.requests) >= 4, timeout=10)
    time.sleep(0.5)
    assert events_of(receiver) == ["failure", "recovery"]
    recovery = payloads(receiver)[1]
    lasted = moment(recovered["completed_at"]) - moment(first["completed_at"])
    assert recovery["failure_streak"] == 2
    assert abs(recovery["failing_for_seconds"] - lasted.total_seconds()) <= 1
    assert recovery["execution"]["id"] == recovered["_id"]
    slack_texts = [json.dumps(p["blocks"]) for p in payloads(receiver, "/slack")]
    assert len(slack_texts) == 2
    assert "*Failed runs*\\n2 in a row" in slack_texts[1] and "*Failing for*\\n" in slack_texts[1]
    assert "Failed runs" not in slack_texts[0]


# --------------------------------------------------------------------------- flapping


def test_flapping_sends_one_alert_holds_then_says_the_state_once_stable(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    counter = tmp_path / "runs"
    events = ["failure", "recovery", "flapping"]
    job_id = flaky_job(api, owner, channel, counter, events, failures=1, flap_threshold=2, flap_window_seconds=4)
    outcomes = []
    for _ in range(3):  # fail, succeed (FlakyJob fails its first run), start again: fail, ...
        outcomes.append(run(api, job_id, "failed"))
        outcomes.append(run(api, job_id, "completed"))
        os.remove(counter)
    last = run(api, job_id, "failed")
    applied(api, job_id, last)
    # failure, recovery, then the third change of state is one too many: flapping, and nothing more
    assert events_of(receiver) == ["failure", "recovery", "flapping"]
    assert job_doc(api, job_id)["alert_flapping"] is True
    # no change for a whole window: stable again, and one message says the state (failing)
    assert wait_for(lambda: len(receiver.requests) >= 4, timeout=10)
    time.sleep(1)
    sent = payloads(receiver)
    assert [p["event"] for p in sent] == ["failure", "recovery", "flapping", "failure"]
    assert "no longer flapping" in sent[3]["alert_note"] and sent[3]["execution"]["id"] == last["_id"]
    assert job_doc(api, job_id)["alert_flapping"] is False


# --------------------------------------------------------------------------- mutes


def test_a_mute_records_without_sending_and_alerts_go_out_again_after_it_ends(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    job_id = flaky_job(api, owner, channel, tmp_path / "runs", ["failure", "recovery"], failures=1)
    until = iso_in(3)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"mute_until": until}).status_code == 200
    muted_before = api.get("/api/scheduler/health").json()["alerts"]["muted"]
    failed = run(api, job_id, "failed")
    alerts = wait_for(lambda: api.get(f"/api/scheduler/executions/{failed['_id']}").json()["data"].get("alerts"))
    assert alerts, "the muted alert was not recorded"
    [entry] = api.get(f"/api/scheduler/executions/{failed['_id']}").json()["data"]["alerts"]
    assert (entry["event"], entry["muted"], entry["ok"], entry["channel_id"]) == ("failure", True, False, channel)
    assert "muted until" in entry["error"]
    assert api.get("/api/scheduler/health").json()["alerts"]["muted"] == muted_before + 1
    assert receiver.requests == []
    time.sleep(max(0.0, (moment(until) - datetime.now(UTC)).total_seconds()) + 0.2)
    recovered = run(api, job_id, "completed")
    assert wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
    assert [(p["event"], p["execution"]["id"]) for p in payloads(receiver)] == [("recovery", recovered["_id"])]


def test_a_calendar_s_maintenance_window_mutes_every_event_of_the_job(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    period = {"start": iso_in(-60), "end": iso_in(3600)}
    calendar = api.post(
        "/api/scheduler/calendars", json={"user_id": owner, "name": "Maintenance", "periods": [period]}
    ).json()["calendar_id"]
    job_id = flaky_job(
        api, owner, channel, tmp_path / "runs", ["failure", "recovery"], failures=1, mute_calendars=[calendar]
    )
    assert job_doc(api, job_id)["mute_calendars"] == [calendar]
    failed = run(api, job_id, "failed")
    recovered = run(api, job_id, "completed")
    for execution in (failed, recovered):
        found = wait_for(
            lambda e=execution: api.get(f"/api/scheduler/executions/{e['_id']}").json()["data"].get("alerts")
        )
        assert found, "no muted alert recorded"
        [entry] = api.get(f"/api/scheduler/executions/{execution['_id']}").json()["data"]["alerts"]
        assert entry["muted"] is True and "maintenance window Maintenance" in entry["error"]
    assert receiver.requests == []
    # a calendar a job mutes with cannot be deleted (409 naming the job), as with exclude_calendars
    assert api.delete(f"/api/scheduler/calendars/{calendar}").status_code == 409


# --------------------------------------------------------------------------- two nodes


def test_two_nodes_on_one_store_send_one_re_alert_per_interval(start_server, receiver, tmp_path):
    nodes = [start_server("sqlite", tmp_path / "data", env=LOCAL) for _ in range(2)]
    api = nodes[0].api
    owner = api.create_user()
    channel = webhook_channel(api, owner, receiver)
    events = ["failure", "still_failing"]
    job_id = flaky_job(api, owner, channel, tmp_path / "runs", events, failures=9, realert_every_seconds=2)
    run(api, job_id, "failed")
    assert wait_for(lambda: events_of(receiver).count("still_failing") >= 3, timeout=15), events_of(receiver)
    time.sleep(0.5)
    deliveries = api.get(f"/api/scheduler/channels/{channel}/deliveries").json()["data"]
    times = sorted(moment(d["created_at"]) for d in deliveries if d["event"] == "still_failing")
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= 1.5, gaps  # one node sends each one; two would arrive together
    assert events_of(receiver).count("failure") == 1
