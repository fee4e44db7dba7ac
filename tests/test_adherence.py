"""Schedule adherence against live servers: the figures in a job's stats equal what its records
say (an every-second job after an outage: one `missed` record naming several occurrences, on-time
runs, and run-now runs that must not count); `adherence_low` goes out once when the 7-day ratio
is below the target, from one of two nodes on one store; /metrics shows the ratio; bad values
are a 400 naming the field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, wait_for
from tests.test_metrics import scrape
from texium.core.datastore import open_datastore

ENV = {
    **SAMPLE_JOBS,
    "TEXIUM_SCHEDULER_POLL_SECONDS": "1",
    "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2",
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_ALERT_CHECK_SECONDS": "0.2",
    "TEXIUM_ADHERENCE_CHECK_SECONDS": "0.5",
}
EVERY_SECOND = {"second": "*", "minute": "*"}
OUTAGE = 12  # seconds the server "was down" (the job's next run is set that far back)


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def records(api, job_id) -> list[dict]:
    return api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000}).json()["data"]


def expected_figures(found: list[dict], seconds: float, now: datetime, days: int) -> dict:
    """The README's definition, applied to the records as the API serves them."""
    on_time = occurrences = completed = ended = 0
    for record in found:
        scheduled = moment(record["scheduled_at"])
        if record["trigger"] != "schedule" or scheduled < now - timedelta(days=days):
            continue
        if record["status"] == "missed":
            occurrences += record["missed_count"]
            continue
        if record["status"] == "skipped":
            continue
        started = moment(record["started_at"])
        assert started is not None, record  # the job is disabled and every record has ended
        occurrences += 1
        on_time += started - scheduled <= timedelta(seconds=seconds)
        ended += record["status"] in ("completed", "failed", "abandoned", "timeout", "cancelled")
        completed += record["status"] == "completed"
    return {
        "ratio": round(on_time / occurrences, 4),
        "on_time": on_time,
        "occurrences": occurrences,
        "success_rate": round(completed / ended * 100, 2),
    }


def after_an_outage(start_server, data_dir, create, nodes: int = 1) -> tuple[list, str]:
    """Servers whose every-second job (made by `create(api, schedule)`, disabled) was due OUTAGE
    seconds ago with catchup_policy none: the start records those occurrences `missed`, then the
    job runs each second."""
    first = start_server("sqlite", data_dir, env=ENV)
    job_id = create(first.api, {**EVERY_SECOND, "is_enabled": False, "catchup_policy": "none"})
    first.stop()
    store = open_datastore(None, "texium_db", str(data_dir))
    try:
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=OUTAGE)
        store.jobs.update_many({"_id": job_id}, {"is_enabled": True, "next_run_time": since})
    finally:
        store.close()
    return [start_server("sqlite", data_dir, env=ENV) for _ in range(nodes)], job_id


def stop_and_settle(api, job_id) -> list[dict]:
    """Disable the job and wait until none of its records is still going; its records then."""
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": False}).status_code == 200
    going = lambda: [r for r in records(api, job_id) if r["status"] in ("scheduled", "running")]  # noqa: E731
    assert wait_for(lambda: not going(), timeout=15), going()
    return records(api, job_id)


def test_the_figures_in_the_stats_equal_the_records(start_server, tmp_path):
    def create(api, schedule):
        return api.create_job(api.create_user(), **schedule, adherence_seconds=1)

    (server,), job_id = after_an_outage(start_server, tmp_path / "data", create)
    api = server.api
    assert wait_for(lambda: sum(r["status"] == "completed" for r in records(api, job_id)) >= 4, timeout=20)
    for _ in range(3):  # run-now runs: no occurrences of the schedule
        run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert api.wait_execution(run)["status"] == "completed"
    found = stop_and_settle(api, job_id)
    assert [r for r in found if r["status"] == "missed" and r["missed_count"] > 1], found
    assert sum(r["trigger"] == "run_now" for r in found) == 3

    stats = api.get("/api/scheduler/stats", params={"job_id": job_id}).json()["stats"]
    now = datetime.now(UTC)
    week, month = expected_figures(found, 1, now, 7), expected_figures(found, 1, now, 30)
    assert stats["adherence"] == {"7d": week, "30d": month}
    assert 0 < week["ratio"] < 1 and week["on_time"] >= 4  # the missed ones are not on time
    assert week["success_rate"] == 100.0  # missed occurrences are not runs that ended
    # the whole server's stats have no adherence (it is one job's)
    assert "adherence" not in api.get("/api/scheduler/stats").json()["stats"]


def test_adherence_low_is_sent_once_by_one_of_two_nodes_and_the_metric_shows_the_ratio(start_server, tmp_path):
    with http_server(statuses=(200,)) as receiver:

        def create(api, schedule):
            owner = api.create_user()
            body = {"user_id": owner, "name": "hook", "kind": "webhook", "url": receiver.url}
            channel = api.post("/api/scheduler/channels", json=body).json()["channel_id"]
            notify = {"channels": [{"id": channel, "events": ["adherence_low"]}]}
            return api.create_job(owner, **schedule, name="nightly", adherence_target=0.95, notify=notify)

        nodes, job_id = after_an_outage(start_server, tmp_path / "data", create, nodes=2)
        api = nodes[0].api
        assert wait_for(lambda: receiver.requests, timeout=20), "no adherence_low alert"
        time.sleep(2)  # both nodes check every 0.5 s: a second alert would have come by now
        sent = [json.loads(r["body"]) for r in receiver.requests]
        assert [(a["event"], a["job"]["id"]) for a in sent] == [("adherence_low", job_id)]
        assert "below the target 95.00%" in sent[0]["execution"]["error"]
        job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
        assert job["adherence_low"] is True and job["adherence_target"] == 0.95

        stop_and_settle(api, job_id)
        week = api.get("/api/scheduler/stats", params={"job_id": job_id}).json()["stats"]["adherence"]["7d"]
        assert week["ratio"] < 0.95

        def metric(node) -> dict:
            found = scrape(node.api).get("texium_job_schedule_adherence_ratio", [])
            return {labels["window"]: (labels["job"], value) for labels, value in found if labels["job_id"] == job_id}

        expected = {"7d": ("nightly", week["ratio"]), "30d": ("nightly", week["ratio"])}
        for node in nodes:
            assert wait_for(lambda node=node: metric(node) == expected, timeout=10), metric(node)
        assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("adherence_seconds", 0),
        ("adherence_seconds", 86401),
        ("adherence_seconds", "60"),
        ("adherence_target", 1.5),
        ("adherence_target", -0.1),
        ("adherence_target", "high"),
    ],
)
def test_a_bad_adherence_value_is_a_400_naming_the_field(server, field, value):
    api = server.api
    owner = api.create_user()
    body = {"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "bad", field: value}
    response = api.post("/api/scheduler/jobs", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"] and "Unknown" not in response.json()["detail"], response.text
    job_id = api.create_job(owner)
    response = api.put(f"/api/scheduler/jobs/{job_id}", json={field: value})
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"] and "Unknown" not in response.json()["detail"], response.text


def test_the_fields_default_to_60_s_and_no_target_and_take_their_range(server):
    api = server.api
    owner = api.create_user()
    job = api.get(f"/api/scheduler/jobs/{api.create_job(owner)}").json()["data"]
    assert (job["adherence_seconds"], job["adherence_target"], job.get("adherence_due_at")) == (60, None, None)
    job_id = api.create_job(owner, adherence_seconds=86400, adherence_target=1)
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert (job["adherence_seconds"], job["adherence_target"], job["adherence_low"]) == (86400, 1, False)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"adherence_target": None}).status_code == 200
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert (job["adherence_target"], job["adherence_due_at"], job["adherence_low"]) == (None, None, None)
