"""GET /metrics: parsed with prometheus_client's own parser, its figures match the API's.

A real server runs run-nows of EchoJob, a failing job and a job firing every second (each run
longer than a second, so some firings are skipped); then the scrape's executions by class and
status equal what GET /api/scheduler/executions lists, nothing is running, the firing-lag
histogram counted every scheduled firing that ran, and no label holds an id. Authentication
follows the API's rules (admin only), and METRICS_PUBLIC opens it on loopback only. In
process: a store outage shows in the store errors and in the overdue gauge, and goes away.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import PROVIDERS, SAMPLE_JOBS, wait_for
from tests.test_security import admin_key, call, client

SLOW = "tests.sample_jobs.slow.SlowJob"
ECHO = "jobs.echo.EchoJob"
ENDED = ("completed", "failed", "skipped", "missed", "abandoned")
HEX_ID = re.compile(r"[0-9a-f]{24}")
RARELY = {"minute": "0", "hour": "3"}  # never due during a test


def samples(text: str) -> dict[str, list[tuple[dict, float]]]:
    """{sample name: [(labels, value)]} of a scrape, read by prometheus_client's parser."""
    found: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(scrape: dict, name: str, **labels) -> float:
    return sum(v for found, v in scrape.get(name, []) if all(found.get(k) == w for k, w in labels.items()))


def scrape(api, **kwargs) -> dict:
    response = api.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_figures_match_the_api(provider, start_server):
    server = start_server(provider, env=SAMPLE_JOBS)
    api = server.api
    user = api.create_user()
    echo = api.create_job(user, name="echo", pub_args=["hi"], **RARELY)
    failing = api.create_job(
        user, name="fails", job_class_string=SLOW, pub_kwargs={"seconds": 0, "fail": True}, **RARELY
    )
    run_ids = [api.post(f"/api/scheduler/jobs/{echo}/run").json()["execution_id"] for _ in range(3)]
    run_ids.append(api.post(f"/api/scheduler/jobs/{failing}/run").json()["execution_id"])
    assert [api.wait_execution(i)["status"] for i in run_ids] == ["completed"] * 3 + ["failed"]

    # Every second, each run 1.2 s: the firing that comes while one runs is skipped.
    ticking = api.create_job(
        user, name="ticks", job_class_string=SLOW, pub_kwargs={"seconds": 1.2}, second="*", minute="*"
    )
    time.sleep(3.5)
    assert api.patch(f"/api/scheduler/jobs/{ticking}/pause").status_code == 200

    def executions() -> list[dict]:
        listed = api.get("/api/scheduler/executions", params={"limit": 1000}).json()["data"]
        return listed if not any(e["status"] in ("scheduled", "running") for e in listed) else []

    listed = wait_for(executions, timeout=20)
    assert listed, "executions still scheduled or running"
    by_api = Counter((e["job_class_string"], e["status"]) for e in listed if e["status"] in ENDED)

    def by_metrics(figures: dict) -> dict:
        return {(k["job_class"], k["status"]): v for k, v in figures["texium_executions_total"] if v}

    # Executions by class and status: what the API lists; nothing running at rest.
    figures = wait_for(lambda: (s := scrape(api)) and by_metrics(s) == by_api and s, timeout=5)
    figures = figures or scrape(api)
    assert by_metrics(figures) == dict(by_api)
    running = figures["texium_executions_running"]
    assert {k["job_class"] for k, _ in running} == {ECHO, SLOW} and all(v == 0 for _, v in running), running
    assert by_api[(ECHO, "completed")] == 3 and by_api[(SLOW, "failed")] == 1
    ticks = [e for e in listed if e["job_id"] == ticking]
    ran = [e for e in ticks if e["status"] in ("completed", "failed")]
    skipped = [e for e in ticks if e["status"] == "skipped"]
    assert ran and skipped, Counter(e["status"] for e in ticks)
    busy = [e for e in skipped if "still in progress" in e["error"]]  # the pause may skip one claimed ahead
    assert total(figures, "texium_skipped_occurrences_total", reason="max_instances") == len(busy)
    assert total(figures, "texium_skipped_occurrences_total") == len(skipped)
    assert total(figures, "texium_missed_occurrences_total") == 0

    # The lag histogram counted each scheduled firing that ran (run-nows have no lag).
    assert total(figures, "texium_firing_lag_seconds_count") == len(ran)
    buckets = [v for labels, v in figures["texium_firing_lag_seconds_bucket"]]
    assert buckets == sorted(buckets) and buckets[-1] == len(ran)
    assert total(figures, "texium_execution_duration_seconds_count", job_class=ECHO) == 3

    # HTTP requests by route template: the four run-nows, and no id anywhere in a label.
    assert total(figures, "texium_http_requests_total", route="/api/scheduler/jobs/{id}/run", status="200") == 4
    assert total(figures, "texium_http_requests_total", route="/api/scheduler/jobs/{id}/pause", method="PATCH") == 1
    for name in ("texium_http_requests_total", "texium_http_request_duration_seconds_bucket"):
        for labels, _ in figures[name]:
            assert not any(HEX_ID.search(value) for value in labels.values()), labels

    # The scheduler, the store and the nodes.
    assert total(figures, "texium_scheduler_pass_duration_seconds_count") >= 3
    assert total(figures, "texium_scheduler_pass_duration_seconds_sum") > 0
    assert total(figures, "texium_store_call_duration_seconds_count", operation="scheduler_claim") >= 3
    assert total(figures, "texium_store_call_duration_seconds_count", operation="recorder_write") >= 1
    assert total(figures, "texium_store_errors_total") == 0
    assert total(figures, "texium_scheduler_overdue_seconds") < 5
    alive = [n for n in api.get("/api/scheduler/nodes").json()["data"] if n["state"] == "alive"]
    assert total(figures, "texium_nodes_alive") == len(alive) == 1
    assert figures["texium_build_info"][0][0]["version"]

    # Counters only go up: a second scrape has at least the figures of the first.
    again = scrape(api)
    for name in (
        "texium_executions_total",
        "texium_http_requests_total",
        "texium_scheduler_pass_duration_seconds_count",
    ):
        assert total(again, name) >= total(figures, name), name


def test_admin_only_when_keys_are_required(start_server):
    server = start_server(env={"TEXIUM_AUTH_MODE": "on", **SAMPLE_JOBS})
    admin = client(server, admin_key(server))
    user_id = call(admin, "POST", "/api/users/", json={"name": "Uma", "email": "uma@example.com"}).json()["user_id"]
    user_key = call(admin, "POST", f"/api/users/{user_id}/api-keys", json={"label": "uma"}).json()["key"]
    assert call(client(server), "GET", "/metrics").status_code == 401
    assert call(client(server, "tx_wrong"), "GET", "/metrics").status_code == 401
    assert call(client(server, user_key), "GET", "/metrics").status_code == 403
    served = call(admin, "GET", "/metrics")
    assert served.status_code == 200 and "texium_executions_running" in served.text
    refused = samples(call(admin, "GET", "/metrics").text)
    assert total(refused, "texium_http_requests_total", route="/metrics", status="401") == 2
    assert total(refused, "texium_http_requests_total", route="/metrics", status="403") == 1


def test_metrics_public_opens_it_on_loopback(start_server):
    server = start_server(env={"TEXIUM_AUTH_MODE": "on", "TEXIUM_METRICS_PUBLIC": "true"})
    anonymous = client(server)
    assert call(anonymous, "GET", "/metrics").status_code == 200
    assert call(anonymous, "GET", "/api/users/").status_code == 401  # nothing else opens


def test_metrics_public_is_refused_as_not_a_boolean(tmp_path):
    from texium.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="METRICS_PUBLIC"):
        load_settings({"DATA_DIR": str(tmp_path)}, environ={"TEXIUM_METRICS_PUBLIC": "maybe"}, cwd=str(tmp_path))


# --------------------------------------------------------------------------- in process
@pytest.fixture
def public_address_context(tmp_path):
    """A server's context as for 0.0.0.0 (nothing listens): keys required, METRICS_PUBLIC set."""
    from texium.config import load_settings
    from texium.server.context import build_context

    flags = {"MONGO_URI": "mongomock://", "DATA_DIR": str(tmp_path), "HTTP_ADDRESS": "0.0.0.0"}
    settings = load_settings(flags, environ={"TEXIUM_METRICS_PUBLIC": "true"}, cwd=str(tmp_path))
    context = build_context(settings)
    yield context
    context.close(1)


@pytest.fixture
def app(public_address_context):
    from texium.server.app import make_app

    return make_app(public_address_context)


@pytest.mark.gen_test
async def test_metrics_public_is_ignored_on_a_public_address(http_client, base_url, public_address_context):
    assert public_address_context.access.required and not public_address_context.access.metrics_public
    response = await http_client.fetch(base_url + "/metrics", raise_error=False)
    assert response.code == 401


def test_a_store_outage_shows_in_store_errors_and_overdue_seconds(tmp_path, monkeypatch):
    from texium.config import load_settings
    from texium.core.datastore import open_datastore
    from texium.core.errors import DatastoreUnavailable
    from texium.server import context as context_module

    down = {"now": False}

    class Failing:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            attribute = getattr(self._inner, name)
            if not callable(attribute):
                return attribute

            def call_(*args, **kwargs):
                if down["now"]:
                    raise DatastoreUnavailable("MongoDB did not answer within 5 s")
                return attribute(*args, **kwargs)

            return call_

    def open_failing(*args):
        datastore = open_datastore(*args)
        real = datastore.collection
        datastore.collection = lambda name: Failing(real(name))
        return datastore

    monkeypatch.setattr(context_module, "open_datastore", open_failing)
    settings = load_settings({"MONGO_URI": "mongomock://", "DATA_DIR": str(tmp_path)}, environ={}, cwd=str(tmp_path))
    context = context_module.build_context(settings)
    context.scheduler.start()
    try:
        user = context.users.create({"name": "Ops", "email": "ops@example.com"})
        job = {"user_id": user, "job_class_string": ECHO, "name": "tick", "second": "*", "minute": "*"}
        context.scheduler.create(job, "test")
        time.sleep(1.5)
        before = samples(context.metrics.exposition().decode())
        assert total(before, "texium_store_errors_total") == 0
        assert total(before, "texium_scheduler_overdue_seconds") < 1
        down["now"] = True
        time.sleep(2.5)
        during = samples(context.metrics.exposition().decode())
        # the pass's first call fails, and the pass with it (a later call never runs)
        assert total(during, "texium_store_errors_total", operation="scheduler_pauses") >= 1
        assert total(during, "texium_scheduler_overdue_seconds") > 1  # nothing fires while the store is down
        down["now"] = False
        recovered = wait_for(
            lambda: (
                (s := samples(context.metrics.exposition().decode()))
                and total(s, "texium_scheduler_overdue_seconds") < 1
                and total(s, "texium_recorder_pending_changes") == 0
                and s
            ),
            timeout=10,
        )
        assert recovered, "overdue seconds or pending records stayed up after the store came back"
        assert total(recovered, "texium_store_errors_total") >= total(during, "texium_store_errors_total")
    finally:
        context.close(1)
