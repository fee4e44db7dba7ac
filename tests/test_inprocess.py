"""In-process checks with pytest-tornado: faults that a live process cannot be pushed into.

The application is built exactly as the server builds it, over mongomock, and then its
datastore is made to fail the way an unreachable MongoDB does.
"""

import json

import pytest

from texium.config import load_settings
from texium.core.datastore import open_datastore
from texium.core.errors import DatastoreUnavailable
from texium.server import context as context_module
from texium.server.app import make_app
from texium.server.context import build_context


class Outage:
    """Wraps a Collection; while `down` is set every call fails like a lost database."""

    def __init__(self, inner, state):
        self._inner, self._state = inner, state

    def __getattr__(self, name):
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if self._state["down"]:
                raise DatastoreUnavailable("MongoDB did not answer within 5 s")
            return attribute(*args, **kwargs)

        return call


@pytest.fixture
def outage():
    return {"down": False}


@pytest.fixture
def context(tmp_path, outage, monkeypatch):
    def open_failing_datastore(*args):
        datastore = open_datastore(*args)
        real_collection, real_ping = datastore.collection, datastore.ping
        datastore.collection = lambda name: Outage(real_collection(name), outage)
        datastore.ping = lambda: Outage(datastore, outage).ping() if outage["down"] else real_ping()
        return datastore

    monkeypatch.setattr(context_module, "open_datastore", open_failing_datastore)
    settings = load_settings({"MONGO_URI": "mongomock://", "DATA_DIR": str(tmp_path)}, environ={}, cwd=str(tmp_path))
    ctx = build_context(settings)
    ctx.scheduler.start()
    yield ctx
    ctx.close(1)


@pytest.fixture
def app(context):
    return make_app(context)


async def fetch(http_client, base_url, path, method="GET", body=None):
    response = await http_client.fetch(base_url + path, method=method, body=body, raise_error=False)
    return response.code, json.loads(response.body)


@pytest.mark.gen_test
async def test_datastore_outage_is_503_and_recovers(http_client, base_url, outage):
    code, body = await fetch(http_client, base_url, "/api/users/", "POST", json.dumps({"name": "A", "email": "a@b.io"}))
    assert code == 201
    outage["down"] = True
    for path in ("/api/users/", f"/api/users/{body['user_id']}", "/api/scheduler/jobs", "/api/scheduler/stats"):
        code, error = await fetch(http_client, base_url, path)
        assert code == 503 and error == {"detail": "MongoDB did not answer within 5 s"}
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 503 and health["status"] == "unhealthy" and "Datastore" in health["message"]
    outage["down"] = False
    code, users = await fetch(http_client, base_url, "/api/users/")
    assert code == 200 and users["total"] == 1
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 200 and health["status"] == "healthy"


@pytest.mark.gen_test
async def test_health_is_503_when_the_scheduler_stops(http_client, base_url, context):
    context.scheduler.shutdown(0)
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 503 and health["status"] == "unhealthy" and health["message"] == "Scheduler is not running"


@pytest.mark.gen_test
async def test_a_bug_is_a_short_500_without_traceback(http_client, base_url, context):
    def broken(*args):
        raise RuntimeError("secret internals")

    context.users.list = broken
    response = await http_client.fetch(base_url + "/api/users/", raise_error=False)
    assert response.code == 500
    assert json.loads(response.body) == {"detail": "Internal server error"}


@pytest.mark.gen_test(timeout=30)
async def test_scheduler_keeps_firing_through_an_outage(http_client, base_url, context, outage):
    import asyncio

    _, created = await fetch(http_client, base_url, "/api/users/", "POST", json.dumps({"name": "A", "email": "o@b.io"}))
    body = {
        "user_id": created["user_id"],
        "job_class_string": "jobs.echo.EchoJob",
        "name": "tick",
        "second": "*/1",
        "minute": "*",
    }
    _, job = await fetch(http_client, base_url, "/api/scheduler/jobs", "POST", json.dumps(body))
    await asyncio.sleep(1.5)
    outage["down"] = True
    await asyncio.sleep(2.5)
    outage["down"] = False
    _, before = await fetch(http_client, base_url, f"/api/scheduler/executions?job_id={job['job_id']}&status=completed")
    await asyncio.sleep(4)
    _, after = await fetch(http_client, base_url, f"/api/scheduler/executions?job_id={job['job_id']}&status=completed")
    assert context.scheduler.running
    assert after["total"] >= before["total"] + 2


@pytest.mark.gen_test(timeout=30)
async def test_health_says_why_while_the_scheduler_cannot_read_its_store(http_client, base_url, context, outage):
    import asyncio

    outage["down"] = True
    context.scheduler._scheduler.wakeup()
    await asyncio.sleep(0.5)
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 503 and "Scheduler cannot read its store" in health["message"]
    outage["down"] = False
    await asyncio.sleep(1.5)  # JOBSTORE_RETRY_SECONDS: the next pass succeeds on its own
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 200 and health["status"] == "healthy" and health["last_pass_at"]


@pytest.mark.gen_test(timeout=30)
async def test_a_failing_counter_write_never_leaves_a_run_running(http_client, base_url, context, outage):
    import asyncio

    _, user = await fetch(http_client, base_url, "/api/users/", "POST", json.dumps({"name": "C", "email": "c@b.io"}))
    body = {
        "user_id": user["user_id"],
        "job_class_string": "jobs.echo.EchoJob",
        "name": "counted",
        "minute": "0",
        "hour": "0",
    }
    _, job = await fetch(http_client, base_url, "/api/scheduler/jobs", "POST", json.dumps(body))
    jobs = context.datastore.jobs._inner  # the shared collection behind the outage wrapper
    real_update = jobs.update

    def failing_update(*args, **kwargs):
        raise DatastoreUnavailable("disk full")

    jobs.update = failing_update  # the job's counter cannot be written
    try:
        _, run = await fetch(http_client, base_url, f"/api/scheduler/jobs/{job['job_id']}/run", "POST", "")
        for _ in range(40):
            _, execution = await fetch(http_client, base_url, f"/api/scheduler/executions/{run['execution_id']}")
            if execution["data"]["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        assert execution["data"]["status"] == "completed"
    finally:
        jobs.update = real_update
    for _ in range(60):  # the counter is written once the store takes it again
        _, doc = await fetch(http_client, base_url, f"/api/scheduler/jobs/{job['job_id']}")
        if doc["data"]["total_executions"] == 1:
            break
        await asyncio.sleep(0.1)
    assert doc["data"]["total_executions"] == 1


@pytest.mark.gen_test
async def test_a_503_logs_one_line_not_a_traceback(http_client, base_url, outage, caplog):
    outage["down"] = True
    code, _ = await fetch(http_client, base_url, "/api/users/")
    assert code == 503
    lines = [r for r in caplog.records if r.name == "texium.server"]
    assert len(lines) == 1 and "answered 503: MongoDB did not answer within 5 s" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_a_job_created_while_its_owner_is_deleted_does_not_outlive_it(context):
    """Forced interleaving: the owner check passes, then the owner is deleted (with cascade)
    before the job is written. The job must not survive its owner."""
    from texium.core.errors import ValidationError

    user_id = context.users.create({"name": "Racer", "email": "racer@example.com"})
    manager = context.scheduler
    real_check = manager._check_user

    def check_then_lose_the_owner(owner_id):
        real_check(owner_id)
        context.users.delete(owner_id, cascade=True)

    manager._check_user = check_then_lose_the_owner
    body = {"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "orphan?", "minute": "0"}
    with pytest.raises(ValidationError):
        manager.create(body, "test")
    assert context.datastore.jobs.find({"user_id": user_id}) == []


@pytest.mark.gen_test(timeout=30)
async def test_health_is_503_when_a_job_is_overdue_and_nothing_fires(http_client, base_url, context):
    import asyncio

    _, user = await fetch(http_client, base_url, "/api/users/", "POST", json.dumps({"name": "O", "email": "o@d.io"}))
    body = {
        "user_id": user["user_id"],
        "job_class_string": "jobs.echo.EchoJob",
        "name": "tick",
        "second": "*/1",
        "minute": "*",
    }
    await fetch(http_client, base_url, "/api/scheduler/jobs", "POST", json.dumps(body))
    context.scheduler._scheduler.pause()  # the thread lives on, but no pass runs: a silent stall
    await asyncio.sleep(6.5)
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 503 and "Scheduler has not completed a pass since" in health["message"]
    context.scheduler._scheduler.resume()
    await asyncio.sleep(1.5)
    code, health = await fetch(http_client, base_url, "/api/scheduler/health")
    assert code == 200
