"""Firing benchmark: does every occurrence run once, and how late?

Starts its own Texium (embedded store, logging at WARNING) on loopback and measures:

1. 100 EchoJob jobs due every second for --seconds, without API load;
2. the same with 8 API clients reading and writing (lists, single reads, execution pages,
   stats; creates, updates, pauses, deletes, run-nows of other jobs);
3. 1,000 jobs due every minute at the same second (--minute-jobs), over one or two minutes.

For each: occurrences expected, run, recorded missed, lost (neither), duplicated, and the
firing lag (started_at - scheduled_at) p50 / p99 / max. Figures come from the store itself
after the server stopped. Usage: python benchmarks/firing_bench.py [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: str, settings: dict | None = None):
        """`settings`: extra TEXIUM_* environment variables for the server."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}
        env.update(TEXIUM_DATA_DIR=data_dir, TEXIUM_LOG_LEVEL="WARNING", PYTHONPATH=str(REPO), **(settings or {}))
        self.log = open(os.path.join(data_dir, "server.log"), "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "texium.server", "--port", str(self.port), "--address", "127.0.0.1"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(200):
            try:
                if requests.get(self.url + "/api/scheduler/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def create_jobs(session, url, user_id, count, **schedule) -> list[str]:
    ids = []
    for i in range(count):
        body = {
            "user_id": user_id,
            "job_class_string": "jobs.echo.EchoJob",
            "name": f"bench-{i}",
            "pub_args": ["x"],
            **schedule,
        }
        ids.append(session.post(url + "/api/scheduler/jobs", json=body).json()["job_id"])
    return ids


def api_load(url: str, user_id: str, stop: threading.Event, counter: Counter) -> None:
    session = requests.Session()
    own = []
    while not stop.is_set():
        choice = random.random()
        try:
            if choice < 0.2:
                session.get(url + "/api/scheduler/jobs")
            elif choice < 0.35:
                session.get(url + "/api/scheduler/executions", params={"limit": 50})
            elif choice < 0.45:
                session.get(url + "/api/scheduler/stats")
            elif choice < 0.55:
                session.get(url + "/api/users/")
            elif choice < 0.7 or not own:
                body = {
                    "user_id": user_id,
                    "job_class_string": "jobs.echo.EchoJob",
                    "name": "load",
                    "minute": "0",
                    "hour": "3",
                }
                own.append(session.post(url + "/api/scheduler/jobs", json=body).json()["job_id"])
            elif choice < 0.8:
                session.put(url + f"/api/scheduler/jobs/{random.choice(own)}", json={"description": "edited"})
            elif choice < 0.87:
                session.patch(url + f"/api/scheduler/jobs/{random.choice(own)}/pause")
            elif choice < 0.94:
                session.post(url + f"/api/scheduler/jobs/{random.choice(own)}/run")
            else:
                session.delete(url + f"/api/scheduler/jobs/{own.pop()}")
            counter["requests"] += 1
        except requests.RequestException:
            counter["errors"] += 1


def measure(db_path: str, job_ids: list[str], start: datetime, end: datetime, period: float) -> dict:
    """Occurrences in [start, end) per job, from the store: run, missed, lost, duplicated, lag."""
    db = sqlite3.connect(db_path)
    marks = ",".join("?" * len(job_ids))
    rows = db.execute(
        f"SELECT doc FROM scheduler_executions WHERE json_extract(doc, '$.job_id') IN ({marks})", job_ids
    ).fetchall()
    db.close()
    accounted, lags, missed = Counter(), [], 0
    for (text,) in rows:
        doc = json.loads(text)
        scheduled = datetime.fromisoformat(doc["scheduled_at"])
        if doc["status"] == "missed":
            for i in range(doc.get("missed_count", 1)):
                moment = scheduled + timedelta(seconds=period * i)
                if start <= moment < end:
                    accounted[(doc["job_id"], moment)] += 1
                    missed += 1
            continue
        if not start <= scheduled < end:
            continue
        accounted[(doc["job_id"], scheduled)] += 1
        if doc.get("started_at"):
            lags.append((datetime.fromisoformat(doc["started_at"]) - scheduled).total_seconds() * 1000)
    expected = len(job_ids) * len(range(0, int((end - start).total_seconds()), int(period)))
    return {
        "expected": expected,
        "ran": len(lags),
        "missed": missed,
        "lost": expected - len(accounted),
        "duplicated": sum(n - 1 for n in accounted.values() if n > 1),
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags, default=0),
    }


def scenario(name: str, jobs: int, seconds: float, load: bool, schedule: dict, period: float) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(data_dir)
        session = requests.Session()
        user_id = session.post(server.url + "/api/users/", json={"name": "bench", "email": "b@bench.io"}).json()[
            "user_id"
        ]
        job_ids = create_jobs(session, server.url, user_id, jobs, **schedule)
        stop, counter = threading.Event(), Counter()
        clients = [
            threading.Thread(target=api_load, args=(server.url, user_id, stop, counter))
            for _ in range(8 if load else 0)
        ]
        for client in clients:
            client.start()
        time.sleep(2)  # settle: jobs created, first firings behind us
        start = datetime.now().astimezone().replace(microsecond=0) + timedelta(seconds=1)
        time.sleep(seconds + 1)
        end = datetime.now().astimezone().replace(microsecond=0) - timedelta(seconds=2)
        time.sleep(2.5)  # let the last runs in the window finish and be written
        stop.set()
        for client in clients:
            client.join()
        server.stop()
        if period >= 60:  # the window holds each minute boundary it covers
            start = start.replace(second=0) + timedelta(minutes=1) if start.second else start
            end = end.replace(second=0) + timedelta(seconds=1)
        figures = measure(os.path.join(data_dir, "texium.db"), job_ids, start, end, period)
        figures.update(name=name, api_requests=counter["requests"])
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--minute-jobs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="15 s runs, one minute of the 1,000-job case")
    args = parser.parse_args()
    seconds = 15 if args.quick else args.seconds
    results = [
        scenario("100 jobs/s, no API load", 100, seconds, False, {"second": "*/1", "minute": "*"}, 1),
        scenario("100 jobs/s, 8 API clients", 100, seconds, True, {"second": "*/1", "minute": "*"}, 1),
        scenario(
            f"{args.minute_jobs} jobs at second 0 of every minute",
            args.minute_jobs,
            75 if args.quick else 135,
            False,
            {"second": "0", "minute": "*"},
            60,
        ),
    ]
    print(f"\nFiring benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}, embedded store\n")
    print(
        "| scenario | expected | ran | missed (recorded) | lost | duplicated | lag p50 / p99 / max ms | API requests |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['expected']} | {r['ran']} | {r['missed']} | {r['lost']} | {r['duplicated']} | "
            f"{r['lag_p50']:.0f} / {r['lag_p99']:.0f} / {r['lag_max']:.0f} | {r['api_requests']} |"
        )


if __name__ == "__main__":
    main()
