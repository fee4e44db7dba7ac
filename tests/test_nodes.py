"""Several server processes on one SQLite file: each occurrence runs once, nodes take over from
each other, and a dead node's runs are abandoned by a survivor."""

import time
from collections import Counter
from datetime import datetime

from tests.server_process import SAMPLE_JOBS
from tests.test_lifecycle import SLOW, executions, seconds_accounted_for, start_run, wait_for

FAST_NODES = {"TEXIUM_HEARTBEAT_SECONDS": "0.3", "TEXIUM_NODE_TIMEOUT_SECONDS": "2", **SAMPLE_JOBS}


def node_id(server):
    return server.api.get("/api/scheduler/health").json()["node"]["node_id"]


def test_three_nodes_run_each_occurrence_once(start_server, tmp_path):
    nodes = [start_server("sqlite", tmp_path / "data", env=FAST_NODES) for _ in range(3)]
    api = nodes[0].api
    job_id = api.create_job(api.create_user(), second="*/1", minute="*")
    time.sleep(5)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    time.sleep(0.5)
    runs = executions(api, job_id=job_id)
    scheduled = Counter(r["scheduled_at"] for r in runs)
    assert scheduled and max(scheduled.values()) == 1  # no second claimed by two nodes
    seconds = seconds_accounted_for(runs)
    assert len(seconds) >= 4 and all((b - a).total_seconds() == 1 for a, b in zip(seconds, seconds[1:]))
    # A pause also ends the occurrence a node had claimed ahead: skipped, saying so.
    assert {r["status"] for r in runs if "paused" not in r["error"]} <= {"completed", "missed"}
    listed = api.get("/api/scheduler/nodes").json()
    assert listed["total"] == 3 and {n["state"] for n in listed["data"]} == {"alive"}
    assert sum(n["is_self"] for n in listed["data"]) == 1
    assert "Sharing the store with 2 other live nodes" in nodes[2].log()


def test_a_standby_fires_jobs_created_through_another_node(start_server, tmp_path):
    standby = start_server("sqlite", tmp_path / "data", env=FAST_NODES)  # starts with nothing to do
    other = start_server("sqlite", tmp_path / "data", env=FAST_NODES)
    job_id = other.api.create_job(other.api.create_user(), second="*/1", minute="*")
    other.stop()
    standby_id = node_id(standby)
    ran_here = wait_for(
        lambda: [r for r in executions(standby.api, job_id=job_id, status="completed") if r["node_id"] == standby_id],
        timeout=5,
    )
    assert ran_here
    states = {n["_id"]: n["state"] for n in standby.api.get("/api/scheduler/nodes").json()["data"]}
    assert states[standby_id] == "alive" and sorted(states.values()) == ["alive", "stopped"]


def test_a_killed_node_s_runs_are_abandoned_and_its_schedule_fires_on(start_server, tmp_path):
    doomed = start_server("sqlite", tmp_path / "data", env=FAST_NODES)
    survivor = start_server("sqlite", tmp_path / "data", env=FAST_NODES)
    api = doomed.api
    user_id = api.create_user()
    slow_id = api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 60})
    execution_id = start_run(api, slow_id)
    tick_id = api.create_job(user_id, second="*/1", minute="*")
    doomed.kill()
    killed_at = datetime.now().astimezone()
    abandoned = wait_for(
        lambda: (
            survivor.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
            if survivor.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"] == "abandoned"
            else None
        ),
        timeout=5,
    )
    assert abandoned and "stopped before it finished" in abandoned["error"]
    survivor_id = node_id(survivor)
    later = wait_for(
        lambda: [
            r
            for r in executions(survivor.api, job_id=tick_id, status="completed")
            if r["node_id"] == survivor_id and datetime.fromisoformat(r["scheduled_at"]) > killed_at
        ],
        timeout=5,
    )
    assert later
    states = Counter(n["state"] for n in survivor.api.get("/api/scheduler/nodes").json()["data"])
    assert states == {"alive": 1, "dead": 1}
    assert "is dead" in survivor.log()


def test_runs_in_flight_when_a_node_shuts_down_are_all_accounted_for(start_server, tmp_path):
    """Run-nows queued behind a running one, then SIGTERM with a short grace: the running one
    is abandoned, the queued ones are handed back (never abandoned) and run by the next server;
    a run-now sent during the grace period is refused with 503."""
    server = start_server("sqlite", tmp_path / "data", env={**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2"})
    api = server.api
    job_id = api.create_job(api.create_user(), job_class_string=SLOW, pub_kwargs={"seconds": 30})
    first = start_run(api, job_id)
    queued = [api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"] for _ in range(2)]
    time.sleep(0.3)
    assert all(api.get(f"/api/scheduler/executions/{e}").json()["data"]["status"] == "scheduled" for e in queued)
    server.process.send_signal(15)
    time.sleep(0.5)
    refused = api.post(f"/api/scheduler/jobs/{job_id}/run")  # same keep-alive connection
    assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
    server.process.wait(30)
    again = start_server("sqlite", tmp_path / "data", env={**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"})
    execution = again.api.get(f"/api/scheduler/executions/{first}").json()["data"]
    assert execution["status"] == "abandoned" and "shut down" in execution["error"]
    node = again.api.get("/api/scheduler/health").json()["node"]["node_id"]

    def first_queued_runs_on_the_new_server():
        runs = [again.api.get(f"/api/scheduler/executions/{e}").json()["data"] for e in queued]
        return runs if runs[0]["status"] == "running" and runs[0]["node_id"] == node else None

    runs = wait_for(first_queued_runs_on_the_new_server, timeout=10)
    assert runs, [again.api.get(f"/api/scheduler/executions/{e}").json()["data"] for e in queued]
    assert runs[1]["status"] == "scheduled"  # one at a time: it waits its turn
