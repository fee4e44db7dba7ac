"""The small rules behind timeouts, retries, alerts settings and the output stream, one by one."""

import logging
from datetime import UTC, datetime

import pytest

from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import MAX_RETRY_DELAY, retry_delay
from texium.server.handlers.executions import _line_events


def test_fixed_retries_wait_exactly_the_delay():
    job = {"retry_delay_seconds": 7, "retry_backoff": "fixed"}
    assert [retry_delay(job, attempt) for attempt in (1, 2, 5)] == [7, 7, 7]


def test_exponential_retries_double_with_a_quarter_of_jitter_and_stop_at_a_day():
    job = {"retry_delay_seconds": 10, "retry_backoff": "exponential"}
    for attempt, base in ((1, 10), (2, 20), (3, 40)):
        waits = [retry_delay(job, attempt) for _ in range(200)]
        assert all(0.75 * base <= w <= 1.25 * base for w in waits)
        assert max(waits) - min(waits) > 0.2 * base  # jitter spreads nodes retrying together
    assert retry_delay(job, 30) <= 1.25 * MAX_RETRY_DELAY
    assert retry_delay({"retry_delay_seconds": 0}, 3) == 0


def test_line_events_send_whole_lines_and_the_last_partial_one_at_the_end():
    offset, events = _line_events("one\ntw", 0, ended=False)
    assert (offset, events) == (4, ["id: 4\ndata: one\n\n"])
    offset, events = _line_events("one\ntwo\r\nthree", offset, ended=True)
    assert events == ["id: 9\ndata: two\n\n", "id: 14\ndata: three\n\n"] and offset == 14
    assert _line_events("one\n", 99, ended=True) == (4, [])  # an offset past the end is the end
    assert _line_events("", 0, ended=True) == (0, [])


def test_a_change_no_store_can_encode_is_dropped_and_the_others_written(datastore, caplog):
    first = datastore.executions.insert({"status": "running", "output": ""})
    second = datastore.executions.insert({"status": "running", "output": ""})
    recorder = Recorder(datastore)
    try:
        recorder.execution(first, {"alerts": [{"at": object()}]})  # a bug's value: nothing can store it
        recorder.execution(second, {"status": "completed"})
        with caplog.at_level(logging.ERROR, "texium.recorder"):
            assert recorder.flush(5)
    finally:
        recorder.stop(2)
    assert datastore.executions.get(second)["status"] == "completed"
    assert "cannot be stored" in caplog.text


@pytest.mark.parametrize(
    "notify, detail",
    [
        ({"events": ["failure"]}, "Invalid field notify: give email recipients, a webhook or channels"),
        ({"email": ["not-an-address"], "events": ["failure"]}, "Invalid field notify.email[0]"),
        ({"webhook": "ftp://example.com/x", "events": ["failure"]}, "Invalid field notify.webhook: must be an http(s)"),
        ({"webhook": "https://u:pw@example.com/x", "events": ["failure"]}, "no password in the URL"),
        ({"webhook": "https://example.com/x", "events": []}, 'Invalid field notify["events"]'),
        ({"webhook": "https://example.com/x", "events": ["sometimes"]}, 'Invalid field notify["events"][0]'),
        ({"webhook": "https://example.com/x"}, "notify"),
        ({"webhook": "https://example.com/x", "events": ["failure"], "sms": "1"}, "notify"),
    ],
)
def test_a_bad_notify_is_a_400_naming_it(api, notify, detail):
    user_id = api.create_user()
    body = {"user_id": user_id, "name": "n", "job_class_string": "jobs.echo.EchoJob", "notify": notify}
    response = api.post("/api/scheduler/jobs", json=body)
    assert response.status_code == 400 and detail in response.json()["detail"], response.text


def test_job_options_are_stored_normalised_and_changed_by_update(api):
    notify = {
        "email": ["Ops@Example.COM", "ops@example.com"],
        "webhook": " https://hooks.example.com/t ",
        "events": ["failure"],
    }
    job_id = api.create_job(api.create_user(email="ops@example.com"), notify=notify, timeout_seconds=90, retries=2)
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    # The e-mail and webhook become channels of the owner (normalised), named with the events.
    entries = job["notify"].pop("channels")
    assert job["notify"] == {"email": [], "webhook": None, "events": ["failure"]}
    assert [entry["events"] for entry in entries] == [["failure"], ["failure"]]
    channels = [api.get(f"/api/scheduler/channels/{entry['id']}").json()["data"] for entry in entries]
    assert [(c["kind"], c.get("recipients") or c.get("url")) for c in channels] == [
        ("email", ["ops@example.com"]),
        ("webhook", "https://hooks.example.com/t"),
    ]
    assert (job["timeout_seconds"], job["retries"], job["retry_delay_seconds"], job["retry_backoff"]) == (
        90,
        2,
        60,
        "exponential",
    )
    assert job["alert_state"] is None
    changed = api.put(f"/api/scheduler/jobs/{job_id}", json={"notify": None, "timeout_seconds": None, "retries": 0})
    assert changed.status_code == 200, changed.text
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert (job["notify"], job["timeout_seconds"], job["retries"]) == (None, None, 0)
    for bad in ({"timeout_seconds": 0}, {"timeout_seconds": 604801}, {"retries": 11}, {"retry_backoff": "linear"}):
        answer = api.put(f"/api/scheduler/jobs/{job_id}", json=bad)
        assert answer.status_code == 400 and next(iter(bad)) in answer.json()["detail"], answer.text


def test_stats_of_one_job(api):
    yearly = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # the default fires every minute
    job_id = api.create_job(api.create_user(), **yearly)
    stats = api.get("/api/scheduler/stats", params={"job_id": job_id}).json()["stats"]
    assert (stats["total_jobs"], stats["total_executions"], stats["timeout_executions"]) == (1, 0, 0)
    assert api.get("/api/scheduler/stats", params={"job_id": "nope"}).status_code == 400


def test_timestamps_helper_is_utc():  # the alerts carry ISO 8601 with an explicit offset
    from texium.core.timeutil import to_iso

    assert to_iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)).endswith("+00:00")


def test_a_dead_node_s_claimed_retry_goes_back_to_the_pool_and_its_runs_are_abandoned(datastore):
    from datetime import timedelta

    from texium.core.scheduling.nodes import NodeIdentity, NodeRegistry
    from texium.core.timeutil import utcnow

    long_ago = utcnow() - timedelta(minutes=5)
    dead = datastore.nodes.insert({"state": "alive", "last_seen": long_ago, "hostname": "elsewhere", "pid": 1})
    first = "0123456789abcdef01234567"
    retry = datastore.executions.insert({"node_id": dead, "status": "scheduled", "retry_of": first})
    running = datastore.executions.insert({"node_id": dead, "status": "running", "retry_of": None})
    NodeRegistry(datastore, NodeIdentity(), "test", timeout_seconds=30).sweep()
    assert (datastore.executions.get(retry)["status"], datastore.executions.get(retry)["node_id"]) == (
        "scheduled",
        None,
    )
    assert datastore.executions.get(running)["status"] == "abandoned"
