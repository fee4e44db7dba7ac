"""Duration alerts and skipped runs (issue 22): real servers, real jobs, a local receiver as the
job's webhook channel.

- `max_duration_seconds`: `long_running` arrives while the run still runs, once per run, from
  one node of two on one store;
- `duration_anomaly_factor`: a run longer than k x the p95 of the job's successful runs;
- `min_duration_seconds`: `too_short` when a success took less;
- occurrences the overlap policy skipped send `skipped`; missed occurrences still send `missed`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, wait_for
from texium.core.datastore import open_datastore

SLOW = "tests.sample_jobs.slow.SlowJob"
LOCAL = {
    **SAMPLE_JOBS,
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_SCHEDULER_POLL_SECONDS": "1",
    "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2",
}
ALL = ["failure", "recovery", "timeout", "missed", "skipped", "long_running", "too_short"]


@pytest.fixture
def receiver():
    with http_server(statuses=(200,)) as server:
        yield server


def events(receiver) -> list[dict]:
    """The webhook payloads received so far."""
    return [json.loads(r["body"]) for r in list(receiver.requests)]


def of(receiver, event: str) -> list[dict]:
    return [p for p in events(receiver) if p["event"] == event]


def channel(api, owner, receiver) -> str:
    body = {"user_id": owner, "name": "hook", "kind": "webhook", "url": f"{receiver.url}/hook"}
    response = api.post("/api/scheduler/channels", json=body)
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def notify(channel_id: str, listed=ALL) -> dict:
    return {"channels": [{"id": channel_id, "events": list(listed)}]}


def run_now(api, job_id) -> str:
    response = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert response.status_code in (200, 201, 202), response.text
    return response.json()["execution_id"]


def status_of(api, execution_id) -> str:
    return api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"]


def test_a_run_past_max_duration_alerts_while_it_still_runs(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        minute="0",
        hour="3",
        pub_kwargs={"seconds": 4},
        max_duration_seconds=1,
        notify=notify(hook),
    )
    started = time.monotonic()
    run = run_now(api, job_id)
    assert wait_for(lambda: of(receiver, "long_running"), timeout=3.5), events(receiver)
    assert status_of(api, run) == "running", "the alert must come while the run still runs"
    assert time.monotonic() - started < 3.5
    alert = of(receiver, "long_running")[0]
    assert alert["execution"]["id"] == run and alert["execution"]["status"] == "running"
    assert "max_duration_seconds (1 s)" in alert["execution"]["error"]
    assert api.wait_execution(run)["status"] == "completed"
    time.sleep(1.0)  # a second alert, if any, would be here by now
    assert len(of(receiver, "long_running")) == 1, events(receiver)
    record = wait_for(lambda: (r := api.wait_execution(run)).get("alerts") and r, timeout=5)
    assert record["duration_alerted_at"] and [a["event"] for a in record["alerts"]] == ["long_running"]
    # a run that ends in time says nothing
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pub_kwargs": {"seconds": 0.1}}).ok
    assert api.wait_execution(run_now(api, job_id))["status"] == "completed"
    time.sleep(1.5)
    assert len(of(receiver, "long_running")) == 1, events(receiver)


def test_two_nodes_on_one_store_send_one_long_running_alert_per_run(start_server, receiver, tmp_path):
    nodes = [start_server("sqlite", tmp_path / "data", env=LOCAL) for _ in range(2)]
    api = nodes[0].api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    # every 3 s, whichever node claims it runs it; each run is long for 1 s of its 2
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        second="*/3",
        minute="*",
        pub_kwargs={"seconds": 2},
        max_duration_seconds=1,
        notify=notify(hook, ["long_running"]),
    )

    def ended():
        found = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 100}).json()["data"]
        return [r for r in found if r["status"] == "completed"]

    assert wait_for(lambda: len(ended()) >= 3, timeout=20)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": False}).ok
    time.sleep(2.5)
    runs = ended()
    alerted = [p["execution"]["id"] for p in of(receiver, "long_running")]
    assert sorted(alerted) == sorted(r["_id"] for r in runs), (alerted, runs)
    assert all(r["duration_alerted_at"] for r in runs)


def test_the_conditional_write_lets_one_of_two_nodes_send(datastore, receiver):
    """Two nodes' alerts asked to announce one run: one write sets duration_alerted_at, one alert."""
    from tests.test_alerts import LOOPBACK, add_job
    from texium.core.events.alerts import Alerts
    from texium.core.events.channels import Deliveries, Sender
    from texium.core.events.durations import ALERTED_FIELD

    hook = {"user_id": "0123456789abcdef01234567", "name": "hook", "kind": "webhook", "url": f"{receiver.url}/h"}
    channel_id = datastore.channels.insert(hook)
    job_id = add_job(datastore, {"channels": [{"id": channel_id, "events": ["long_running"]}], "events": []})
    run = {"job_id": job_id, "status": "running", "attempt": 1, "started_at": datetime.now(UTC)}
    run["_id"] = datastore.executions.insert(dict(run))
    nodes = []
    for _ in range(2):
        deliveries = Deliveries(datastore, Sender({}, LOOPBACK, backoff=0.05), lambda c: None)
        nodes.append(Alerts(datastore, lambda *_: None, channels=deliveries))
    job = datastore.jobs.get(job_id)
    for node in nodes:
        node.announce(job, "long_running", {**run, "error": "Still running"}, ALERTED_FIELD)
    assert wait_for(lambda: receiver.requests, timeout=5)
    time.sleep(0.5)  # the other node's, if any, would have arrived by now
    assert all(node.stop(5) for node in nodes)
    assert [p["event"] for p in events(receiver)] == ["long_running"]
    assert datastore.executions.get(run["_id"])[ALERTED_FIELD] is not None


def test_a_run_longer_than_k_times_the_p95_of_the_successful_ones_alerts(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        minute="0",
        hour="3",
        pub_kwargs={"seconds": 0.2},
        duration_anomaly_factor=3,
        notify=notify(hook),
    )
    for _ in range(5):
        assert api.wait_execution(run_now(api, job_id))["status"] == "completed"

    def job():
        return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]

    assert wait_for(lambda: job().get("duration_p95_runs") == 5, timeout=5), job()
    p95 = job()["duration_p95_ms"]
    assert 200 <= p95 < 600, p95
    assert not of(receiver, "long_running")  # the short runs themselves are not anomalies
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pub_kwargs": {"seconds": 4}}).ok
    started = time.monotonic()
    run = run_now(api, job_id)
    assert wait_for(lambda: of(receiver, "long_running"), timeout=3.5), events(receiver)
    assert status_of(api, run) == "running" and time.monotonic() - started < 3.5
    error = of(receiver, "long_running")[0]["execution"]["error"]
    assert f"3 x the p95 ({p95 / 1000:g} s) of its last 5 successful runs" in error, error


def test_too_few_successful_runs_judge_nothing(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner, job_class_string=SLOW, minute="0", hour="3", pub_kwargs={"seconds": 0.1}, duration_anomaly_factor=2
    )
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"notify": notify(hook)}).ok
    for _ in range(4):
        assert api.wait_execution(run_now(api, job_id))["status"] == "completed"
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pub_kwargs": {"seconds": 2}}).ok
    assert api.wait_execution(run_now(api, job_id))["status"] == "completed"
    time.sleep(1.0)
    assert not of(receiver, "long_running"), events(receiver)


def test_a_success_shorter_than_min_duration_sends_too_short(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        minute="0",
        hour="3",
        pub_kwargs={"seconds": 0.1},
        min_duration_seconds=2,
        notify=notify(hook),
    )
    short = run_now(api, job_id)
    assert api.wait_execution(short)["status"] == "completed"
    assert wait_for(lambda: of(receiver, "too_short"), timeout=5), events(receiver)
    alert = of(receiver, "too_short")[0]
    assert alert["execution"]["id"] == short and alert["execution"]["status"] == "completed"
    assert "under the job's min_duration_seconds (2 s)" in alert["execution"]["error"]
    # long enough, or failed: no too_short
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pub_kwargs": {"seconds": 2.2}}).ok
    assert api.wait_execution(run_now(api, job_id))["status"] == "completed"
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pub_kwargs": {"seconds": 0.1, "fail": True}}).ok
    assert api.wait_execution(run_now(api, job_id))["status"] == "failed"
    assert wait_for(lambda: of(receiver, "failure"), timeout=5)
    time.sleep(0.5)
    assert len(of(receiver, "too_short")) == 1, events(receiver)


def test_occurrences_the_overlap_policy_skips_send_skipped(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    quiet = channel(api, owner, receiver)  # does not list skipped: hears nothing of it
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        second="*",
        minute="*",
        pub_kwargs={"seconds": 3.5},
        max_instances=1,
        overlap_policy="skip",
        notify={"channels": [{"id": hook, "events": ["skipped"]}, {"id": quiet, "events": ["failure"]}]},
    )

    def skipped():
        found = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 100}).json()["data"]
        return [r for r in found if r["status"] == "skipped"]

    assert wait_for(lambda: len(skipped()) >= 2, timeout=15)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": False}).ok
    time.sleep(1.5)
    records = [r for r in skipped() if "still in progress" in r["error"]]
    alerted = of(receiver, "skipped")
    assert sorted(p["execution"]["id"] for p in alerted) == sorted(r["_id"] for r in records), (alerted, records)
    assert all(
        p["execution"]["status"] == "skipped" and "still in progress" in p["execution"]["error"] for p in alerted
    )
    deliveries = api.get(f"/api/scheduler/channels/{quiet}/deliveries").json()["data"]
    assert deliveries == []


def test_queue_one_s_replaced_occurrences_send_skipped(start_server, receiver):
    api = start_server(env=LOCAL).api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner,
        job_class_string=SLOW,
        second="*",
        minute="*",
        pub_kwargs={"seconds": 4},
        max_instances=1,
        overlap_policy="queue_one",
        notify=notify(hook, ["skipped"]),
    )

    def skipped():
        found = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 100}).json()["data"]
        return [r for r in found if r["status"] == "skipped" and "took its place" in (r["error"] or "")]

    assert wait_for(lambda: len(skipped()) >= 1, timeout=15)
    assert wait_for(lambda: of(receiver, "skipped"), timeout=5)
    ids = {p["execution"]["id"] for p in of(receiver, "skipped")}
    assert ids <= {r["_id"] for r in skipped()} and ids


def test_missed_occurrences_still_send_missed(start_server, receiver, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=LOCAL)
    api = server.api
    owner = api.create_user()
    hook = channel(api, owner, receiver)
    job_id = api.create_job(
        owner, second="*", minute="*", catchup_policy="none", is_enabled=False, notify=notify(hook, ["missed"])
    )
    server.stop()
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    store = open_datastore(None, "texium_db", str(tmp_path / "data"))
    try:
        store.jobs.update_many(
            {"_id": job_id}, {"is_enabled": True, "next_run_time": first, "end_at": first + timedelta(seconds=5)}
        )
    finally:
        store.close()
    start_server("sqlite", tmp_path / "data", env=LOCAL)
    assert wait_for(lambda: of(receiver, "missed"), timeout=15), events(receiver)
    assert of(receiver, "missed")[0]["execution"]["status"] == "missed"


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_duration_seconds", 0),
        ("max_duration_seconds", -5),
        ("max_duration_seconds", 1.5),
        ("max_duration_seconds", "60"),
        ("min_duration_seconds", 0),
        ("min_duration_seconds", 604801),
        ("duration_anomaly_factor", 0.5),
        ("duration_anomaly_factor", 101),
        ("duration_anomaly_factor", "3"),
    ],
)
def test_bad_duration_fields_are_a_400_naming_the_field(api, field, value):
    owner = api.create_user()
    response = api.post(
        "/api/scheduler/jobs",
        json={"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "x", field: value},
    )
    assert response.status_code == 400 and field in response.json()["detail"], response.text
    job_id = api.create_job(owner)
    response = api.put(f"/api/scheduler/jobs/{job_id}", json={field: value})
    assert response.status_code == 400 and field in response.json()["detail"], response.text


def test_duration_fields_are_kept_and_the_new_events_accepted(api):
    owner = api.create_user(email="ops@example.com")  # a user's job may mail its owner
    fields = {"max_duration_seconds": 600, "min_duration_seconds": 5, "duration_anomaly_factor": 2.5}
    job_id = api.create_job(owner, **fields)
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert {k: job[k] for k in fields} == fields
    body = {"notify": {"email": ["ops@example.com"], "events": ["skipped", "long_running", "too_short"]}}
    assert api.put(f"/api/scheduler/jobs/{job_id}", json=body).status_code == 200
    bad = {"notify": {"email": ["ops@example.com"], "events": ["sometimes"]}}
    response = api.put(f"/api/scheduler/jobs/{job_id}", json=bad)
    assert response.status_code == 400 and 'notify["events"]' in response.json()["detail"], response.text
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"max_duration_seconds": None}).status_code == 200
    assert api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["max_duration_seconds"] is None
