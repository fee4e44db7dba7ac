"""Retention benchmark: prune old execution records while jobs fire every second.

Writes --records execution records 200 days old straight into a new embedded store (in batches),
starts its own Texium on it (EXECUTION_RETENTION_DAYS 90, RETENTION_CHECK_SECONDS 1, a batch of
--batch, 500 by default) with --jobs EchoJob jobs due every second, and waits until every old record is
pruned (texium_executions_pruned_total). Prints the firing lag (started_at - scheduled_at) p50 /
p99 / max of the occurrences due while it pruned, any lost or doubled, the records pruned per
second, and the database file before and after.
Usage: python benchmarks/retention_bench.py [--records 1000000] [--jobs 100] [--baseline SECONDS]
(--baseline: the same firing for that long with nothing pruned, to compare).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from firing_bench import REPO, Server, create_jobs, measure  # noqa: E402

sys.path.insert(0, str(REPO))
from texium.core.datastore import open_datastore  # noqa: E402
from texium.core.datastore.base import new_id  # noqa: E402

BATCH = 10_000  # records written per transaction while setting up
OLD_JOBS = 1000  # the old records belong to this many (gone) jobs


def old_records(count: int, jobs: int) -> list[dict]:
    """`count` ended records 200 days old, of `jobs` jobs, each tenth failed."""
    now = datetime.now().astimezone()
    found = []
    for i in range(count):
        created = now - timedelta(days=200, seconds=i)
        doc_id = new_id()
        found.append(
            {
                "_id": doc_id,
                "job_id": f"old-job-{i % jobs}",
                "user_id": "bench",
                "job_name": "old",
                "status": "completed" if i % 10 else "failed",
                "trigger": "schedule",
                "output": "old output line\n" * 8,
                "error": "",
                "created_at": created,
                "scheduled_at": created,
                "started_at": created,
                "completed_at": created,
                "duration_ms": 12,
                "attempt": 1,
                "retry_of": None,
                "occurrence_key": f"old:{doc_id}",
            }
        )
    return found


def kept(count: int, jobs: int) -> int:
    """Records retention keeps of old_records(count, jobs): the newest of each status per job."""
    return len({(i % jobs, "completed" if i % 10 else "failed") for i in range(count)})


def pruned(url: str) -> float:
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("texium_executions_pruned_total "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds of pruning")
    parser.add_argument("--batch", type=int, default=500, help="RETENTION_BATCH_SIZE")
    parser.add_argument(
        "--baseline", type=float, default=0, help="no pruning (retention 0 days): fire for this many seconds"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        store = open_datastore(None, "texium_db", data_dir)
        began = time.monotonic()
        for first in range(0, options.records, BATCH):
            store.executions.insert_many(old_records(min(BATCH, options.records - first), OLD_JOBS))
        store.close()
        path = os.path.join(data_dir, "texium.db")
        size_before = os.path.getsize(path)
        written = time.monotonic() - began
        print(f"{options.records:,} old records written in {written:.1f} s ({size_before / 1e6:.0f} MB)")
        server = Server(
            data_dir,
            {
                "TEXIUM_EXECUTION_RETENTION_DAYS": "0" if options.baseline else "90",
                "TEXIUM_RETENTION_CHECK_SECONDS": "1",
                "TEXIUM_RETENTION_BATCH_SIZE": str(options.batch),
                "TEXIUM_METRICS_PUBLIC": "true",
            },
        )
        session = requests.Session()
        user = session.post(server.url + "/api/users/", json={"name": "bench", "email": "b@bench.io"}).json()
        job_ids = create_jobs(session, server.url, user["user_id"], options.jobs, second="*")
        start = datetime.now().astimezone().replace(microsecond=0) + timedelta(seconds=1)
        began = time.monotonic()
        due = 0 if options.baseline else options.records - kept(options.records, OLD_JOBS)
        while pruned(server.url) < due and time.monotonic() - began < options.timeout:
            time.sleep(0.5)
        time.sleep(max(0.0, options.baseline - (time.monotonic() - began)))
        seconds = time.monotonic() - began
        done = pruned(server.url)
        end = datetime.now().astimezone().replace(microsecond=0) - timedelta(seconds=2)
        time.sleep(2.5)  # the last runs in the window end and are written
        server.stop()
        figures = measure(path, job_ids, start, end, 1)
        print(f"pruned {done:,.0f} of {due:,} due in {seconds:.1f} s: {done / seconds:,.0f} records/s")
        print(
            f"firing while pruning ({options.jobs} jobs every second, {figures['expected']:,} occurrences): "
            f"lost {figures['lost']}, duplicated {figures['duplicated']}, missed {figures['missed']}, "
            f"lag p50 / p99 / max {figures['lag_p50']:.0f} / {figures['lag_p99']:.0f} / {figures['lag_max']:.0f} ms"
        )
        print(f"database file: {size_before / 1e6:.0f} MB before, {os.path.getsize(path) / 1e6:.0f} MB after")


if __name__ == "__main__":
    main()
