"""Spreading the load (issue 21): `H` in cron fields and per-job `jitter_seconds`, through real
servers. The expected values are computed here from the documented rule (SHA-256 of the job's id
and the field's name, or of the id, "jitter" and the occurrence's time), so a per-process hash
or a delay applied in only part of the core would show."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tests.server_process import wait_for
from tests.test_lifecycle import executions

PREVIEW = "/api/scheduler/cron/preview"


def stable(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def job(api, job_id: str) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def preview(api, job_id=None, **fields) -> dict:
    params = {**fields, **({"job_id": job_id} if job_id else {})}
    response = api.get(PREVIEW, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


DAILY_H = {"second": "H", "minute": "H(0-29)/10", "hour": "H"}


def test_h_is_stable_across_a_restart_and_the_same_on_two_nodes(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data")
    job_id = first.api.create_job(first.api.create_user(), **DAILY_H)
    minute_start = stable(job_id, "minute") % 10
    expected = {
        "second": str(stable(job_id, "second") % 60),
        "minute": f"{minute_start}-29/10",
        "hour": str(stable(job_id, "hour") % 24),
    }
    shown = preview(first.api, job_id, count=3, **DAILY_H)
    assert shown["hashed"] == expected and shown["hash_seed"] == job_id
    times = [at(t) for t in shown["next_run_times"]]
    assert all(
        (t.hour, t.minute % 10, t.minute < 30, t.second)
        == (int(expected["hour"]), minute_start, True, int(expected["second"]))
        for t in times
    )
    stored = job(first.api, job_id)
    assert stored["minute"] == "H(0-29)/10"  # kept as written; the value is derived, not stored
    assert at(stored["next_run_time"]) == times[0]

    second = start_server("sqlite", tmp_path / "data")  # another node on the same SQLite file
    assert preview(second.api, job_id, count=3, **DAILY_H) == shown
    # The second node recomputes next_run_time on an edit: the same time.
    assert second.api.put(f"/api/scheduler/jobs/{job_id}", json={"description": "moved"}).status_code == 200
    assert at(job(second.api, job_id)["next_run_time"]) == times[0]

    first.stop()
    second.stop()
    again = start_server("sqlite", tmp_path / "data")
    assert preview(again.api, job_id, count=3, **DAILY_H) == shown
    assert again.api.put(f"/api/scheduler/jobs/{job_id}", json={"description": "again"}).status_code == 200
    assert at(job(again.api, job_id)["next_run_time"]) == times[0]
    # The Jobs page describes the schedule with the values H took.
    summary = again.api.get("/api/scheduler/job-summaries").json()["data"][0]
    assert summary["schedule_description"] == shown["description"]
    assert f"minute {minute_start}-29/10" in shown["description"]


def test_h_spreads_jobs_with_one_schedule(api):
    user_id = api.create_user()
    minutes = {job(api, api.create_job(user_id, minute="H", hour="3"))["next_run_time"][14:16] for _ in range(8)}
    assert len(minutes) > 1


def test_preview_without_a_job_uses_the_example_seed(api):
    shown = preview(api, minute="H/15", count=4)
    start = stable("example", "minute") % 15
    assert shown["hash_seed"] == "example" and shown["hashed"] == {"minute": f"{start}-59/15"}
    assert {at(t).minute for t in shown["next_run_times"]} == {start, start + 15, start + 30, start + 45}
    assert preview(api, minute="*/15", day_of_week="THU")["hashed"] == {}  # names with an H are no H


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("minute", "H(30-10)", "range runs backwards"),
        ("minute", "H/0", "step must be 1-60"),
        ("minute", "H(0-99)", "must be 0-59"),
        ("hour", "H/25", "step must be 1-24"),
        ("day_of_week", "H(1-8)", "must be 0-7"),
        ("second", "H(5)", "H takes the forms H, H/n, H(a-b) and H(a-b)/n"),
        ("month", "HH", "H takes the forms"),
    ],
)
def test_bad_h_forms_are_a_400_naming_the_field(api, field, value, why):
    user_id = api.create_user()
    for response in (
        api.post(
            "/api/scheduler/jobs",
            json={"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "H", field: value},
        ),
        api.get(PREVIEW, params={field: value}),
    ):
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"Invalid cron field {field}: {value!r}") and why in detail
    job_id = api.create_job(user_id)
    response = api.put(f"/api/scheduler/jobs/{job_id}", json={field: value})
    assert response.status_code == 400 and f"Invalid cron field {field}" in response.json()["detail"]


@pytest.mark.parametrize("value", [-1, 3601, "5", 1.5, None])
def test_bad_jitter_is_a_400_naming_the_field(api, value):
    body = {"user_id": api.create_user(), "job_class_string": "jobs.echo.EchoJob", "name": "J", "jitter_seconds": value}
    response = api.post("/api/scheduler/jobs", json=body)
    assert response.status_code == 400 and "jitter_seconds" in response.json()["detail"], response.text


def test_bad_preview_parameters_are_400s(api):
    for params, name in (({"jitter_seconds": "3601"}, "jitter_seconds"), ({"job_id": "nope"}, "job_id")):
        response = api.get(PREVIEW, params={"minute": "H", **params})
        assert response.status_code == 400 and name in response.json()["detail"], response.text


def test_jitter_is_the_same_on_two_nodes_and_within_range(start_server, tmp_path):
    nodes = [start_server("sqlite", tmp_path / "data") for _ in range(2)]
    api = nodes[0].api
    fields = {"second": "0", "minute": "*/2"}
    job_id = api.create_job(api.create_user(), jitter_seconds=90, **fields)
    shown = [preview(node.api, job_id, count=20, jitter_seconds=90, **fields) for node in nodes]
    assert shown[0] == shown[1]
    times = [at(t) for t in shown[0]["next_run_times"]]
    delays = [t - t.replace(minute=t.minute - t.minute % 2, second=0) for t in times]
    assert all(timedelta(0) <= d <= timedelta(seconds=90) for d in delays)
    for t, delay in zip(times, delays):
        nominal = t - delay
        assert delay.total_seconds() == stable(job_id, "jitter", nominal.isoformat()) % 91
    assert len(set(delays)) > 1  # really spread (20 draws of 0-90 s)
    # The job's next run is the jittered one (or, once that has come, the one after it).
    ahead = [t for t in times if t > datetime.now(UTC) + timedelta(seconds=2)]
    assert at(job(api, job_id)["next_run_time"]) in (times[0], ahead[0])
    # The other node computes the same next run when it writes the job.
    assert nodes[1].api.put(f"/api/scheduler/jobs/{job_id}", json={"description": "x"}).status_code == 200
    assert at(job(nodes[1].api, job_id)["next_run_time"]) in (times[0], ahead[0])
    # Without jitter (the same job id) the times are the nominal ones.
    plain = [at(t) for t in preview(api, job_id, count=20, **fields)["next_run_times"]]
    nominal = [t - d for t, d in zip(times, delays)]
    # (a nominal time may have passed while its delayed one is still ahead: then plain starts later)
    assert plain[0] in nominal[:2] and plain[:10] == [n for n in nominal if n >= plain[0]][:10]


def test_a_jittered_job_fires_at_its_jittered_second(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    api = server.api
    job_id = api.create_job(api.create_user(), second="H/5", minute="*", jitter_seconds=2)
    offset = stable(job_id, "second") % 5

    def expected(scheduled: datetime) -> bool:
        """Whether `scheduled` is a nominal time of `H/5` plus that occurrence's delay."""
        for delay in range(3):
            nominal = scheduled - timedelta(seconds=delay)
            if nominal.second % 5 == offset and stable(job_id, "jitter", nominal.isoformat()) % 3 == delay:
                return True
        return False

    def delayed_runs():
        runs = [r for r in executions(api, job_id=job_id) if r["status"] == "completed"]
        jittered = [r for r in runs if at(r["scheduled_at"]).second % 5 != offset]
        return runs if jittered and len(runs) >= 3 else None

    runs = wait_for(delayed_runs, timeout=40, interval=0.5)
    assert runs, executions(api, job_id=job_id)
    for run in runs:
        scheduled, started = at(run["scheduled_at"]), at(run["started_at"])
        assert expected(scheduled), run["scheduled_at"]
        assert scheduled <= started < scheduled + timedelta(seconds=1)  # at the jittered second, not before
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    assert not [r for r in executions(api, job_id=job_id) if r["status"] == "missed"]
    assert datetime.now(UTC) > max(at(r["scheduled_at"]) for r in runs)
