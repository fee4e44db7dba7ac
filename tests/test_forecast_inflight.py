"""Identical forecast requests arriving while one is computed share that computation
(texium/core/inflight.py), counted in /metrics as texium_forecast_computations_total."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime

from tests.test_metrics import scrape, total
from texium.core.datastore import open_datastore

JOBS = 3000
REQUESTS = 10
COMPUTATIONS = "texium_forecast_computations_total"


def add_copies(data_dir, template_id: str, count: int) -> None:
    """`count` copies of a job, each daily at its own time, written straight to the server's store
    (fast; their next_run_time stays the template's, so none fires before it)."""
    busy = {(datetime.now(UTC).hour + k) % 24 for k in range(3)}  # none runs while the test looks
    hours = [h for h in range(24) if h not in busy]
    store = open_datastore(None, "texium_db", str(data_dir))
    try:
        template = store.jobs.get(template_id)
        copies = [
            template
            | {"_id": secrets.token_hex(12), "name": f"copy {i}", "minute": str(i % 60), "hour": str(hours[i % 21])}
            | {"day_of_month": "*", "month": "*"}
            for i in range(count)
        ]
        store.jobs.insert_many(copies)
    finally:
        store.close()


def test_concurrent_identical_forecasts_share_one_computation(start_server, tmp_path):
    server = start_server("sqlite", data_dir=tmp_path / "data")
    api = server.api
    user = api.create_user()
    # A job whose next run is far away (1 January), so none of its copies fires during the test.
    template = api.create_job(user, name="template", minute="0", hour="0", day_of_month="1", month="1")
    add_copies(tmp_path / "data", template, JOBS)
    params = {"hours": 168, "user_id": user}
    assert api.get("/api/scheduler/forecast", params=params).json()["hours"] == 168
    before = total(scrape(api), COMPUTATIONS)
    assert before == 1  # that one request computed once

    barrier, answers = threading.Barrier(REQUESTS), [None] * REQUESTS

    def ask(i: int) -> None:
        client = server.api  # a session per thread
        barrier.wait()
        answers[i] = client.get("/api/scheduler/forecast", params=params, timeout=120)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    computations = total(scrape(api), COMPUTATIONS) - before
    assert 1 <= computations < REQUESTS, computations
    bodies = [a.json() for a in answers]
    assert len(bodies[0]["jobs"]) == JOBS and bodies[0]["total_runs"] >= 6 * JOBS  # every copy, daily
    assert all(body == bodies[0] for body in bodies)
    # Done is done: the next request computes afresh (no stale answer kept).
    assert api.get("/api/scheduler/forecast", params=params).status_code == 200
    assert total(scrape(api), COMPUTATIONS) == before + computations + 1
