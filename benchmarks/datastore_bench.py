"""How fast the datastore answers the server's hot queries at scale.

Fills scheduler_executions with N documents for ~200 jobs of 20 users (SQLite in a temp dir),
then times each query the API and scheduler issue and prints median / p95 milliseconds.

    python benchmarks/datastore_bench.py [--rows 100000] [--samples 200]
    python benchmarks/datastore_bench.py --mongomock [--mongomock-rows 5000]   # also mongomock
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from texium.core.datastore.base import Datastore  # noqa: E402
from texium.core.datastore.mongo import MongoDatastore  # noqa: E402
from texium.core.datastore.sqlite import SQLiteDatastore  # noqa: E402
from texium.core.timeutil import utcnow  # noqa: E402

USERS, JOBS, PAGE = 20, 200, 100
STATUSES = ["completed"] * 90 + ["failed"] * 7 + ["timeout", "cancelled", "running"]
NEWEST = [("created_at", -1)]


def fill(ds: Datastore, rows: int, rng: random.Random) -> tuple[list[str], list[str], list[str], list[float]]:
    """Users, jobs and `rows` executions; returns (user ids, job ids, execution ids, insert ms)."""
    now = utcnow()
    users = [
        ds.users.insert({"name": f"user {u}", "email": f"user{u}@example.com", "created_at": now}) for u in range(USERS)
    ]
    jobs, owner = [], {}
    for j in range(JOBS):
        paused = j % 10 == 0
        job_id = ds.jobs.insert(
            {
                "name": f"job {j}",
                "user_id": users[j % USERS],
                "job_class_string": "texium.jobs.echo.Echo",
                "minute": "*/5",
                "is_enabled": True,
                "is_paused": paused,
                "created_at": now,
                "next_run_time": None if paused else now + timedelta(seconds=rng.randint(-600, 3600)),
            }
        )
        jobs.append(job_id)
        owner[job_id] = users[j % USERS]
    start = now - timedelta(seconds=rows * 30)
    ids, insert_ms = [], []
    for i in range(rows):
        job_id = rng.choice(jobs)
        at = start + timedelta(seconds=i * 30)
        doc = {
            "job_id": job_id,
            "user_id": owner[job_id],
            "job_name": "job",
            "status": rng.choice(STATUSES),
            "job_class_string": "texium.jobs.echo.Echo",
            "occurrence_key": f"{job_id}@{at.isoformat()}",
            "output": "ok " * 20,
            "error": None,
            "hostname": "bench",
            "pid": 4242,
            "scheduled_at": at,
            "started_at": at,
            "completed_at": at + timedelta(seconds=2),
            "created_at": at,
        }
        t = time.perf_counter()
        ids.append(ds.executions.insert(doc))
        insert_ms.append((time.perf_counter() - t) * 1000)
    return users, jobs, ids, insert_ms


def timed(samples: int, query: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        query()
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(label: str, ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20)[-1] if len(ms) > 1 else ms[0]
    return f"  {label:<38} median {statistics.median(ms):8.3f} ms   p95 {p95:8.3f} ms"


def bench(ds: Datastore, rows: int, samples: int) -> None:
    rng = random.Random(7)
    print(f"{ds.describe()}: {rows:,} executions, {JOBS} jobs, {USERS} users, {samples} samples per query")
    t = time.perf_counter()
    users, jobs, ids, insert_ms = fill(ds, rows, rng)
    elapsed = time.perf_counter() - t
    print(f"  {'insert (one document per call)':<38} {rows / elapsed:,.0f} docs/s")
    print(line("insert latency", insert_ms))
    ex = ds.executions
    deep = max(rows - 10 * PAGE, 0)
    queries = {
        "get by id": lambda: ex.get(rng.choice(ids)),
        "newest page (limit 100)": lambda: ex.find(sort=NEWEST, limit=PAGE),
        "newest page by job_id": lambda: ex.find({"job_id": rng.choice(jobs)}, sort=NEWEST, limit=PAGE),
        "newest page by user_id": lambda: ex.find({"user_id": rng.choice(users)}, sort=NEWEST, limit=PAGE),
        "newest page by status (failed)": lambda: ex.find({"status": "failed"}, sort=NEWEST, limit=PAGE),
        "count by job_id": lambda: ex.count({"job_id": rng.choice(jobs)}),
        f"page at offset {deep:,}": lambda: ex.find(sort=NEWEST, limit=PAGE, offset=deep),
        "due jobs (next_run_time <= now)": lambda: ds.jobs.find(
            {"next_run_time": {"$lte": utcnow()}}, sort=[("next_run_time", 1)]
        ),
    }
    for label, query in queries.items():
        print(line(label, timed(samples, query)))
    size = ds.size_bytes()
    if size:
        print(f"  size on disk: {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="executions for SQLite (default 100000)")
    parser.add_argument("--samples", type=int, default=200, help="timed runs per query (default 200)")
    parser.add_argument("--mongomock", action="store_true", help="also run on mongomock, smaller")
    parser.add_argument("--mongomock-rows", type=int, default=5_000, help="executions for mongomock")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="texium-bench-") as data_dir:
        ds = SQLiteDatastore(data_dir)
        try:
            bench(ds, args.rows, args.samples)
        finally:
            ds.close()
    if args.mongomock:
        print()
        ds = MongoDatastore("mongomock://", "texium_bench")
        try:
            bench(ds, args.mongomock_rows, max(args.samples // 10, 5))
        finally:
            ds.close()


if __name__ == "__main__":
    main()
