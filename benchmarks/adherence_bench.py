"""What schedule adherence costs at scale: JOBS jobs with an adherence_target, each with 30 days
of hourly records (a few late, a few missed), in SQLite in a temp dir.

Times (1) one job's figures (GET /stats?job_id: one indexed read of its 30 days), (2) a full
round of the adherence check over every job (each node's alert-checks thread, at most every
ADHERENCE_CHECK_SECONDS per job, 50 jobs a round), (3) the gauge refresh (one read of the jobs
with a target) and (4) a /metrics exposition (what a scrape costs: no record is read).

    python benchmarks/adherence_bench.py [--jobs 1000] [--days 30]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from texium.core.datastore.base import new_id  # noqa: E402
from texium.core.datastore.sqlite import SQLiteDatastore  # noqa: E402
from texium.core.events.adherence import AdherenceCheck  # noqa: E402
from texium.core.metrics import Metrics  # noqa: E402
from texium.core.records.adherence import job_figures  # noqa: E402
from texium.core.timeutil import utcnow  # noqa: E402


def fill(ds, jobs: int, days: int, rng: random.Random) -> list[dict]:
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    docs = [
        {"_id": new_id(), "name": f"job {j}", "is_enabled": True, "adherence_seconds": 60, "adherence_target": 0.99,
         "adherence_due_at": now, "adherence_low": False}
        for j in range(jobs)
    ]  # fmt: skip
    with ds.batch():
        ds.jobs.insert_many(docs)
    for job in docs:
        records = []
        for hour in range(days * 24):
            at = now - timedelta(hours=hour)
            roll = rng.random()
            record = {"_id": new_id(), "job_id": job["_id"], "trigger": "schedule", "scheduled_at": at,
                      "created_at": at, "attempt": 1, "output": "x" * 200,
                      "occurrence_key": f"{job['_id']}@{at}"}  # fmt: skip
            if roll < 0.01:
                record.update(status="missed", missed_count=1, missed_until=at, started_at=None)
            else:
                late = 90 if roll < 0.03 else rng.random()
                record.update(status="completed", started_at=at + timedelta(seconds=late), completed_at=at)
            records.append(record)
        with ds.batch():
            ds.executions.insert_many(records)
    return docs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = SQLiteDatastore(os.path.join(tmp, "bench.db"))
        ds.ensure_indexes()
        started = time.perf_counter()
        jobs = fill(ds, args.jobs, args.days, random.Random(7))
        rows = args.jobs * args.days * 24
        print(f"{args.jobs} jobs, {rows} records: filled in {time.perf_counter() - started:.1f} s")

        samples = []
        for job in random.Random(1).sample(jobs, min(50, len(jobs))):
            t = time.perf_counter()
            job_figures(ds, job, utcnow())
            samples.append((time.perf_counter() - t) * 1000)
        samples.sort()
        print(f"one job's figures (stats): median {statistics.median(samples):.1f} ms, "
              f"p95 {samples[int(len(samples) * 0.95) - 1]:.1f} ms")  # fmt: skip

        metrics = Metrics()
        check = AdherenceCheck(ds, lambda *a: None, metrics, every_seconds=60)
        t, rounds = time.perf_counter(), 0
        while ds.jobs.count({"adherence_due_at": {"$lte": utcnow()}}):
            check.check(utcnow())
            rounds += 1
        spent = time.perf_counter() - t
        print(f"every job's check: {rounds} rounds, {spent:.1f} s ({spent / args.jobs * 1000:.1f} ms a job)")

        t = time.perf_counter()
        metrics.adherence_ratios(ds.jobs.find({"adherence_due_at": {"$ne": None}}))
        print(f"gauge refresh (read {args.jobs} jobs): {(time.perf_counter() - t) * 1000:.1f} ms")
        t = time.perf_counter()
        text = metrics.exposition()
        series = text.count(b"texium_job_schedule_adherence_ratio{")
        print(f"/metrics exposition: {(time.perf_counter() - t) * 1000:.1f} ms, {series} adherence series")
        ds.close()


if __name__ == "__main__":
    main()
