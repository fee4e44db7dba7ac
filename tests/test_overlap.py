"""A job's overlap policy (issue 21): what an occurrence due while the job is at its limit does.

Real servers, real firing: an every-second job whose runs take longer than a second."""

import os
import signal
import time
from datetime import datetime

import pytest

from tests.server_process import SAMPLE_JOBS, wait_for
from tests.test_lifecycle import executions

POLITE = "tests.sample_jobs.operations.PoliteJob"  # waits, and stops at once when told to
EVERY_SECOND = {"second": "*", "minute": "*"}


def fire_for(api, seconds: float, **job) -> tuple[str, list[dict]]:
    """Create an every-second job, let it fire for `seconds`, pause it; its records, oldest first."""
    job_id = api.create_job(api.create_user(), **EVERY_SECOND, **job)
    time.sleep(seconds)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    time.sleep(0.5)
    runs = [r for r in executions(api, job_id=job_id) if "paused" not in (r["error"] or "")]
    return job_id, sorted(runs, key=lambda r: r["scheduled_at"])


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def starts_late(record: dict) -> float:
    return (moment(record["started_at"]) - moment(record["scheduled_at"])).total_seconds()


@pytest.fixture
def api(start_server, tmp_path):
    # a short shutdown grace: the server stops with a long run still going (not waiting 30 s for it)
    return start_server("sqlite", tmp_path / "data", env={**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"}).api


def test_skip_is_the_default(api):
    _, runs = fire_for(api, 4.5, job_class_string=POLITE, pub_kwargs={"seconds": 2.5})
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert skipped and all("still in progress" in r["error"] for r in skipped)
    assert all(starts_late(r) < 1 for r in runs if r["started_at"])  # nothing waited for the slot


def test_queue_all_runs_every_occurrence_in_turn_up_to_max_queued(api):
    job_id, runs = fire_for(
        api, 6.5, job_class_string=POLITE, pub_kwargs={"seconds": 2}, overlap_policy="queue_all", max_queued=2
    )
    waited = [r for r in runs if r["started_at"] and starts_late(r) > 0.9]
    assert waited, runs  # occurrences due during a run ran after it, late, instead of being skipped
    assert all(r["waiting"].startswith("queued") for r in waited)
    full = [r for r in runs if r["status"] == "skipped"]
    assert full and all("2 occurrences of this job were already queued" in r["error"] for r in full), [
        (r["scheduled_at"], r["status"], r["error"]) for r in runs
    ]
    assert not any("still in progress" in (r["error"] or "") for r in runs)
    started = sorted(
        (moment(r["started_at"]), moment(r["completed_at"] or r["started_at"])) for r in runs if r["started_at"]
    )
    assert all(end <= next_start for (_, end), (next_start, _) in zip(started, started[1:]))  # one at a time
    assert [r["scheduled_at"] for r in runs if r["started_at"]] == sorted(
        r["scheduled_at"] for r in runs if r["started_at"]
    )


def test_queue_one_keeps_only_the_newest_waiting_occurrence(api):
    _, runs = fire_for(api, 5.5, job_class_string=POLITE, pub_kwargs={"seconds": 2.5}, overlap_policy="queue_one")
    replaced = [r for r in runs if r["status"] == "skipped"]
    assert replaced and all("took its place in the queue" in r["error"] for r in replaced)
    assert any(r["started_at"] and r.get("waiting") for r in runs), runs  # the newest waited, then ran


def test_replace_cancels_the_running_run_and_starts_the_new_one(api):
    _, runs = fire_for(api, 3.5, job_class_string=POLITE, pub_kwargs={"seconds": 30}, overlap_policy="replace")
    cancelled = [r for r in runs if r["status"] == "cancelled"]
    assert len(cancelled) >= 2, runs
    assert all("overlap policy replace" in r["error"] for r in cancelled)
    assert not [r for r in runs if r["status"] == "skipped"]
    started = [r for r in runs if r["started_at"]]
    assert len(started) >= 3 and all(starts_late(r) < 1 for r in started)


def test_bad_overlap_values_are_400s_naming_the_field(api):
    owner = api.create_user()
    for field, value in (("overlap_policy", "sometimes"), ("max_queued", 0), ("max_queued", 101)):
        answer = api.post(
            "/api/scheduler/jobs",
            json={"user_id": owner, "name": "x", "job_class_string": "jobs.echo.EchoJob", field: value},
        )
        assert answer.status_code == 400 and field in answer.json()["detail"], answer.text


# --------------------------------------------------------------------------- across nodes
def two_nodes(start_server, tmp_path):
    env = {**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"}
    return [start_server("sqlite", tmp_path / "data", env=env) for _ in range(2)]


def running_on(nodes, job_id) -> tuple:
    """The node running the job's first run (its record names the process), and the others."""
    api = nodes[0].api
    first = wait_for(lambda: [r for r in executions(api, job_id=job_id) if r["status"] == "running"], timeout=10)
    assert first, "the job never started"
    holder = next(n for n in nodes if n.process.pid == first[0]["pid"])
    return first[0], holder, next(n for n in nodes if n is not holder)


def frozen(node, seconds: float) -> None:
    """The node stops (SIGSTOP) for `seconds`, well inside its lease: its run holds the job's slot."""
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(node.process.pid, signal.SIGCONT)


def spans(runs: list[dict]) -> list[tuple[datetime, datetime]]:
    return sorted((moment(r["started_at"]), moment(r["completed_at"])) for r in runs if r["started_at"])


def test_queue_all_across_nodes_waits_for_the_run_another_node_holds(start_server, tmp_path):
    """Occurrences the other node claims while this node's run holds the job's only slot wait as
    `scheduled` records on that node, then run one at a time once the slot frees, each once."""
    nodes = two_nodes(start_server, tmp_path)
    api = nodes[0].api
    job = {"job_class_string": POLITE, "pub_kwargs": {"seconds": 3}, "overlap_policy": "queue_all", "max_queued": 3}
    job_id = api.create_job(api.create_user(), **EVERY_SECOND, **job)
    first, holder, other = running_on(nodes, job_id)
    frozen(holder, 2.5)  # meanwhile only the other node passes: it claims what falls due, and queues it

    def waited_elsewhere() -> list[dict]:
        return [
            r
            for r in executions(api, job_id=job_id)
            if r["waiting"] and r["pid"] == other.process.pid and r["started_at"]
        ]

    assert wait_for(waited_elsewhere, timeout=15), executions(api, job_id=job_id)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    assert wait_for(
        lambda: not [r for r in executions(api, job_id=job_id) if r["status"] in ("running", "scheduled")], timeout=20
    )
    runs = [r for r in executions(api, job_id=job_id) if "paused" not in (r["error"] or "")]
    assert len({r["scheduled_at"] for r in runs}) == len(runs), runs  # every occurrence once
    queued = [r for r in runs if r["waiting"] and r["pid"] == other.process.pid and r["started_at"]]
    first_ended = moment(next(r for r in runs if r["_id"] == first["_id"])["completed_at"])
    assert queued and all(moment(r["started_at"]) >= first_ended for r in queued)  # once the first node's run ended
    ran = spans(runs)
    assert all(end <= following for (_, end), (following, _) in zip(ran, ran[1:])), ran  # one at a time, any node


def test_replace_across_nodes_cancels_the_run_another_node_holds(start_server, tmp_path):
    """An occurrence the other node claims cancels the running run it does not hold (a cancel
    request through the store, seen by the holder), and starts only once that run has ended."""
    nodes = two_nodes(start_server, tmp_path)
    api = nodes[0].api
    job = {"job_class_string": POLITE, "pub_kwargs": {"seconds": 8}, "overlap_policy": "replace"}
    job_id = api.create_job(api.create_user(), **EVERY_SECOND, **job)
    first, holder, other = running_on(nodes, job_id)
    frozen(holder, 2.5)
    ended = wait_for(
        lambda: (r := api.get(f"/api/scheduler/executions/{first['_id']}").json()["data"])["completed_at"] and r,
        timeout=15,
    )
    assert ended["status"] == "cancelled" and "overlap policy replace" in ended["error"], ended
    assert wait_for(
        lambda: [r for r in executions(api, job_id=job_id) if r["pid"] == other.process.pid and r["started_at"]],
        timeout=10,
    ), executions(api, job_id=job_id)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    assert wait_for(lambda: not [r for r in executions(api, job_id=job_id) if r["status"] == "running"], timeout=20)
    runs = [r for r in executions(api, job_id=job_id) if "paused" not in (r["error"] or "")]
    replacing = [r for r in runs if r["started_at"] and r["pid"] == other.process.pid]
    assert replacing, [(r["scheduled_at"], r["status"], r["pid"]) for r in runs]
    assert all(moment(r["started_at"]) >= moment(ended["completed_at"]) for r in replacing)
    assert not [r for r in runs if r["status"] == "skipped"], runs
    ran = spans([r for r in runs if r["completed_at"]])
    assert all(end <= following for (_, end), (following, _) in zip(ran, ran[1:])), ran  # never two at once
