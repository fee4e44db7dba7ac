"""HTTP benchmark of a live Texium server on the embedded store.

Seeds N executions straight into a fresh data dir, starts `python -m texium.server`, then
times typical client calls (sequential latency, and throughput with concurrent clients).

    python benchmarks/api_bench.py [--executions 100000] [--requests 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server_process import ServerProcess  # noqa: E402
from texium.core.datastore import new_id, open_datastore  # noqa: E402
from texium.core.timeutil import utcnow  # noqa: E402


def seed(data_dir: Path, executions: int) -> tuple[list[str], list[str]]:
    store = open_datastore(None, "bench", str(data_dir))
    store.ensure_indexes()
    now = utcnow()
    users = [
        store.users.insert(
            {"name": f"u{i}", "email": f"u{i}@bench.io", "role": "user", "created_at": now, "updated_at": now}
        )
        for i in range(20)
    ]
    jobs = [
        store.jobs.insert(
            {
                "user_id": random.choice(users),
                "name": f"j{i}",
                "job_class_string": "jobs.echo.EchoJob",
                "second": "0",
                "minute": "0",
                "hour": "0",
                "day_of_month": "*",
                "month": "*",
                "day_of_week": "*",
                "week": "*",
                "timezone": "UTC",
                "pub_args": [],
                "pub_kwargs": {},
                "is_enabled": False,
                "is_paused": False,
                "next_run_time": None,
                "last_run_time": None,
                "total_executions": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        for i in range(200)
    ]
    started = time.perf_counter()
    for i in range(executions):
        at = now - timedelta(seconds=executions - i)
        job = jobs[i % len(jobs)]
        store.executions.insert(
            {
                "_id": new_id(),
                "job_id": job,
                "user_id": users[i % len(users)],
                "job_name": "j",
                "job_class_string": "jobs.echo.EchoJob",
                "status": "completed" if i % 10 else "failed",
                "output": "x" * 80,
                "error": "",
                "scheduled_at": at,
                "started_at": at,
                "completed_at": at,
                "created_at": at,
                "duration_ms": 3,
                "hostname": "bench",
                "pid": 1,
                "occurrence_key": f"{job}@{i}",
            }
        )
    print(f"seeded {executions} executions in {time.perf_counter() - started:.1f}s")
    store.close()
    return users, jobs


def timed(call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code < 400, response.text
    return samples


def report(name: str, samples: list[float]) -> None:
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"{name:<44} median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        users, jobs = seed(data_dir, args.executions)
        server = ServerProcess("sqlite", data_dir, env={"TEXIUM_LOG_LEVEL": "WARNING"}).start()
        api = server.api
        try:
            execution_id = api.get("/api/scheduler/executions", params={"limit": 1}).json()["data"][0]["_id"]
            n = args.requests
            report("GET /api/scheduler/health", timed(lambda: api.get("/api/scheduler/health"), n))
            report(
                "POST /api/users/",
                timed(lambda: api.post("/api/users/", json={"name": "b", "email": f"{time.time_ns()}@b.io"}), n),
            )
            report("GET /api/users/{id}", timed(lambda: api.get(f"/api/users/{random.choice(users)}"), n))
            report(
                "GET /api/scheduler/executions/{id}",
                timed(lambda: api.get(f"/api/scheduler/executions/{execution_id}"), n),
            )
            report("GET executions?limit=100 (newest page)", timed(lambda: api.get("/api/scheduler/executions"), n))
            report(
                "GET executions?job_id=..&limit=100",
                timed(lambda: api.get("/api/scheduler/executions", params={"job_id": random.choice(jobs)}), n),
            )
            report(
                "GET executions?user_id=..&limit=100",
                timed(lambda: api.get("/api/scheduler/executions", params={"user_id": random.choice(users)}), n),
            )
            report(
                "GET executions?status=failed&limit=100",
                timed(lambda: api.get("/api/scheduler/executions", params={"status": "failed"}), n // 3),
            )
            report("GET /api/scheduler/stats", timed(lambda: api.get("/api/scheduler/stats"), n // 3))
            report(
                "GET /api/scheduler/stats?user_id=..",
                timed(lambda: api.get("/api/scheduler/stats", params={"user_id": random.choice(users)}), n // 3),
            )

            def burst(_):
                return timed(lambda: api.get(f"/api/users/{random.choice(users)}"), n // args.clients)

            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                total = sum(len(s) for s in pool.map(burst, range(args.clients)))
            rate = total / (time.perf_counter() - started)
            print(f"GET /api/users/{{id}} with {args.clients} clients: {rate:.0f} requests/s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
