"""Chains and fan-ins (issue 23) through real servers: what starts what, exactly once.

- `on_success` / `on_failure` / `on_finish`: a run's end starts each listed job once, with
  trigger `chain`, `triggered_by` and `parent_execution_id`;
- `depends_on`: a fan-in starts once per complete set of upstream runs, never for a partial one;
- cycles are a 400 naming them; deleting a job others name is a 409 (or `force`);
- a chained start obeys the started job's pause; `cancel_downstream` starts nothing;
- two nodes on one store, the node that ran the upstream killed -9 around its end: the
  downstream job runs exactly once.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.server_process import SAMPLE_JOBS, wait_for

YEARLY = {"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}
SLOW = "tests.sample_jobs.slow.SlowJob"
FAST = {**SAMPLE_JOBS, "TEXIUM_SCHEDULER_POLL_SECONDS": "1", "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2"}


PRODUCE = """#!/usr/bin/env python3
print("exporting")
print('::texium-result {"rows": 42, "file": "/tmp/export.csv"}')
"""
CONSUME = """#!/usr/bin/env python3
import os
for name in ("TEXIUM_PARENT_RESULT", "TEXIUM_PARENT_EXECUTION_ID", "TEXIUM_TRIGGER"):
    print(name + "=" + os.environ.get(name, "(none)"))
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.server_process import ServerProcess

    scripts = tmp_path_factory.mktemp("chain-scripts")
    for name, text in (("produce.py", PRODUCE), ("consume.py", CONSUME)):
        (scripts / name).write_text(text)
        (scripts / name).chmod(0o755)
    env = {**FAST, "TEXIUM_SCRIPTS_DIR": str(scripts)}
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("chains") / "data", env=env).start()
    yield process
    process.stop()


def job(api, owner, name, **fields) -> str:
    return api.create_job(owner, name=name, **{**YEARLY, **fields})


def runs_of(api, job_id) -> list[dict]:
    return api.get(f"/api/scheduler/executions?job_id={job_id}").json()["data"]


def run_now(api, job_id, **body) -> str:
    answer = api.post(f"/api/scheduler/jobs/{job_id}/run", json=body or None)
    assert answer.status_code == 200, answer.text
    return answer.json()["execution_id"]


def settled(api, execution_id) -> dict:
    """The execution once it ended and its chained starts are made."""
    done = {}

    def check():
        done.update(api.wait_execution(execution_id))
        return done.get("status") not in ("scheduled", "running") and not done.get("chain_pending")

    wait_for(check, timeout=20)
    return done


def test_a_success_starts_on_success_once_and_a_failure_on_failure(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B")
    c = job(api, owner, "C")
    d = job(api, owner, "D")
    a = job(
        api, owner, "A", job_class_string=SLOW, pub_kwargs={"seconds": 0}, on_success=[b], on_failure=[c], on_finish=[d]
    )
    ok = settled(api, run_now(api, a))
    assert ok["status"] == "completed"
    started = {entry["job_id"]: entry for entry in ok["chain_started"]}
    assert set(started) == {b, d}, ok["chain_started"]
    chained = api.get(f"/api/scheduler/executions?parent_execution_id={ok['_id']}").json()["data"]
    assert sorted(run["job_id"] for run in chained) == sorted([b, d])
    for run in chained:
        assert run["trigger"] == "chain"
        assert run["triggered_by"] == {"job_id": a, "execution_id": ok["_id"]}
        assert run["chain_depth"] == 1
        assert api.wait_execution(run["_id"])["status"] == "completed"
    assert runs_of(api, c) == []

    api.put(f"/api/scheduler/jobs/{a}", json={"pub_kwargs": {"seconds": 0, "fail": True}})
    failed = settled(api, run_now(api, a))
    assert failed["status"] == "failed"
    assert {entry["job_id"] for entry in failed["chain_started"]} == {c, d}
    time.sleep(1.0)  # nothing else comes
    assert len(runs_of(api, b)) == 1 and len(runs_of(api, c)) == 1 and len(runs_of(api, d)) == 2


def test_a_script_s_result_reaches_the_next_script_s_environment(node):
    api = node.api
    admin = api.create_user(role="admin")
    consume = job(api, admin, "consume", job_class_string="jobs.custom.CustomScriptJob", pub_args=["consume.py"])
    produce = job(
        api,
        admin,
        "produce",
        job_class_string="jobs.custom.CustomScriptJob",
        pub_args=["produce.py"],
        on_success=[consume],
    )
    upstream = settled(api, run_now(api, produce))
    assert upstream["status"] == "completed" and upstream["result"] == {"rows": 42, "file": "/tmp/export.csv"}
    downstream = api.wait_execution(upstream["chain_started"][0]["execution_id"])
    assert downstream["status"] == "completed", downstream
    lines = dict(line.split("=", 1) for line in downstream["output"].splitlines() if "=" in line)
    assert json.loads(lines["TEXIUM_PARENT_RESULT"]) == {"rows": 42, "file": "/tmp/export.csv"}
    assert lines["TEXIUM_PARENT_EXECUTION_ID"] == upstream["_id"]
    assert lines["TEXIUM_TRIGGER"] == "chain"


def test_a_run_now_with_chain_false_starts_nothing(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B")
    a = job(api, owner, "A", on_success=[b])
    done = settled(api, run_now(api, a, chain=False))
    assert done["status"] == "completed" and not done.get("chain_started")
    time.sleep(1.0)
    assert runs_of(api, b) == []


def test_a_fan_in_starts_once_per_complete_set_and_never_for_a_partial_one(node):
    api = node.api
    owner = api.create_user()
    x, y, z = (job(api, owner, name) for name in "XYZ")
    d = job(api, owner, "D", depends_on={"jobs": [x, y, z], "within_seconds": 600})
    settled(api, run_now(api, x))
    settled(api, run_now(api, y))
    settled(api, run_now(api, x))  # a second run of x: still no z
    time.sleep(1.0)
    assert runs_of(api, d) == []
    last = settled(api, run_now(api, z))
    assert [entry["job_id"] for entry in last["chain_started"]] == [d]
    wait_for(lambda: len(runs_of(api, d)) == 1, timeout=10)
    fan_in = runs_of(api, d)[0]
    assert fan_in["trigger"] == "chain" and fan_in["parent_execution_id"] == last["_id"]
    assert {entry["job_id"] for entry in fan_in["triggered_by"]["fan_in"]} == {x, y, z}
    # the spare run of x waits for the next y and z: one more set, one more start
    settled(api, run_now(api, y))
    time.sleep(1.0)
    assert len(runs_of(api, d)) == 1
    settled(api, run_now(api, z))
    wait_for(lambda: len(runs_of(api, d)) == 2, timeout=10)
    time.sleep(1.0)
    assert len(runs_of(api, d)) == 2


def test_a_fan_in_requiring_success_ignores_failures(node):
    api = node.api
    owner = api.create_user()
    x = job(api, owner, "X", job_class_string=SLOW, pub_kwargs={"seconds": 0, "fail": True})
    y = job(api, owner, "Y")
    d = job(api, owner, "D", depends_on={"jobs": [x, y]})
    e = job(api, owner, "E", depends_on={"jobs": [x, y], "require": "finish"})
    settled(api, run_now(api, x))
    settled(api, run_now(api, y))
    wait_for(lambda: len(runs_of(api, e)) == 1, timeout=10)
    time.sleep(1.0)
    assert runs_of(api, d) == []


def test_cycles_are_refused_naming_them(node):
    api = node.api
    owner = api.create_user()
    a = job(api, owner, "A")
    b = job(api, owner, "B", on_success=[a])
    answer = api.put(f"/api/scheduler/jobs/{a}", json={"on_failure": [b]})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("Invalid field on_failure: a cycle 'A'")
    assert "'B'" in answer.json()["detail"]
    c = job(api, owner, "C", depends_on={"jobs": [a]})  # a -> c: fine
    answer = api.put(f"/api/scheduler/jobs/{b}", json={"depends_on": {"jobs": [c]}})  # b -> a -> c -> b
    assert answer.status_code == 400 and "a cycle" in answer.json()["detail"], answer.text
    for name in ("'A'", "'B'", "'C'"):
        assert name in answer.json()["detail"]
    answer = api.post(
        "/api/scheduler/jobs",
        json={"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "x", "on_success": ["0" * 24]},
    )
    assert answer.status_code == 400 and "not found" in answer.json()["detail"]
    answer = api.put(f"/api/scheduler/jobs/{a}", json={"on_success": [a]})
    assert answer.status_code == 400 and "itself" in answer.json()["detail"]
    assert api.get(f"/api/scheduler/jobs/{a}").json()["data"]["on_failure"] == []  # nothing written


def test_a_job_cannot_chain_to_another_user_s_job(node):
    api = node.api
    mine, theirs = api.create_user(), api.create_user()
    other = job(api, theirs, "theirs")
    answer = api.post(
        "/api/scheduler/jobs",
        json={"user_id": mine, "job_class_string": "jobs.echo.EchoJob", "name": "mine", "on_success": [other]},
    )
    assert answer.status_code == 400 and "not found" in answer.json()["detail"]


def test_deleting_a_job_others_name_is_a_409_unless_forced(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B")
    a = job(api, owner, "A", on_success=[b])
    d = job(api, owner, "D", depends_on={"jobs": [b, a]})
    answer = api.delete(f"/api/scheduler/jobs/{b}")
    assert answer.status_code == 409
    assert "'A'" in answer.json()["detail"] and "'D'" in answer.json()["detail"]
    assert api.delete(f"/api/scheduler/jobs/{b}?force=true").status_code == 200
    assert api.get(f"/api/scheduler/jobs/{a}").json()["data"]["on_success"] == []
    assert api.get(f"/api/scheduler/jobs/{d}").json()["data"]["depends_on"]["jobs"] == [a]
    audit = api.get(f"/api/scheduler/audit-logs?job_id={a}").json()["data"]
    assert any("Removed the deleted job" in entry.get("description", "") for entry in audit), audit
    graph = api.get("/api/scheduler/chains").json()
    assert {(e["from"], e["to"], e["kind"]) for e in graph["edges"] if a in (e["from"], e["to"])} == {
        (a, d, "depends_on")
    }


def test_a_chained_start_of_a_paused_job_is_skipped_with_the_reason(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B")
    a = job(api, owner, "A", on_success=[b])
    assert api.patch(f"/api/scheduler/jobs/{b}/pause").status_code == 200
    settled(api, run_now(api, a))
    wait_for(lambda: [r["status"] for r in runs_of(api, b)] == ["skipped"], timeout=10)
    assert "paused" in runs_of(api, b)[0]["error"]


def test_cancel_downstream_starts_nothing_and_plain_cancel_starts_on_failure(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B")
    a = job(api, owner, "A", job_class_string=SLOW, pub_kwargs={"seconds": 30}, on_failure=[b])
    first = run_now(api, a)
    wait_for(lambda: api.wait_execution(first, done=("running",))["status"] == "running", timeout=10)
    answer = api.post(f"/api/scheduler/executions/{first}/cancel?cancel_downstream=true")
    assert answer.status_code == 202 and answer.json()["cancelled_downstream"] == [], answer.text
    assert settled(api, first)["status"] == "cancelled"
    time.sleep(1.0)
    assert runs_of(api, b) == []
    second = run_now(api, a)
    wait_for(lambda: api.wait_execution(second, done=("running",))["status"] == "running", timeout=10)
    assert api.post(f"/api/scheduler/executions/{second}/cancel").status_code == 202
    wait_for(lambda: len(runs_of(api, b)) == 1, timeout=15)


def test_cancel_downstream_of_an_ended_run_cancels_what_it_started(node):
    api = node.api
    owner = api.create_user()
    b = job(api, owner, "B", job_class_string=SLOW, pub_kwargs={"seconds": 30})
    a = job(api, owner, "A", on_success=[b])
    ended = settled(api, run_now(api, a))
    started = ended["chain_started"][0]["execution_id"]
    wait_for(lambda: api.wait_execution(started, done=("running",))["status"] == "running", timeout=10)
    answer = api.post(f"/api/scheduler/executions/{ended['_id']}/cancel?cancel_downstream=true")
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Downstream runs cancelled" and answer.json()["cancelled_downstream"] == [
        started
    ]
    assert api.wait_execution(started, timeout=20)["status"] == "cancelled"
    assert api.post(f"/api/scheduler/executions/{ended['_id']}/cancel").status_code == 409


@pytest.mark.parametrize("delay_ms", [0, 5, 40])
def test_the_node_that_ran_the_upstream_killed_around_its_end_the_downstream_runs_exactly_once(
    start_server, tmp_path, delay_ms
):
    env = {**FAST, "TEXIUM_HEARTBEAT_SECONDS": "0.3", "TEXIUM_NODE_TIMEOUT_SECONDS": "2"}
    survivor = start_server("sqlite", tmp_path / "data", env=env)
    doomed = start_server("sqlite", tmp_path / "data", env=env)
    api = survivor.api
    owner = api.create_user()
    b = job(api, owner, "B")
    a = job(
        api,
        owner,
        "A",
        job_class_string="tests.sample_jobs.crash.CrashAfterJob",
        pub_kwargs={"delay_ms": delay_ms},
        on_finish=[b],
    )
    upstream = run_now(doomed.api, a)  # held by the doomed node: it runs it, then dies
    doomed.process.wait(timeout=20)
    ended = settled(api, upstream)
    assert ended["status"] in ("completed", "abandoned"), ended
    wait_for(lambda: [r["status"] for r in runs_of(api, b)] == ["completed"], timeout=30)
    time.sleep(2.0)  # nothing more comes
    runs = runs_of(api, b)
    assert len(runs) == 1 and runs[0]["parent_execution_id"] == upstream, runs
