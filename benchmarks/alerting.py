"""Alerting benchmark: does a flood of alerts to channels that are down slow firing down?

Starts its own Texium (embedded store, logging at WARNING) on loopback, twice, and measures the
firing lag (started_at - scheduled_at, p50 / p99 / max, from the store after the server
stopped; the helpers of firing_bench.py) of 100 jobs due every second, each naming the same two
webhook channels that are down: one refuses connections (a closed port), one accepts and never
answers (each attempt waits out the 10 s timeout).

1. every run succeeds (EchoJob): no alert is sent;
2. every run fails (FailJob) and names no channel: what failing itself costs (the baseline of 3);
3. every run fails and names both channels, the issue's case: each job's first failure alerts;
4. every run changes its job's alert state (FlipJob fails in odd seconds and succeeds in even
   ones), so every run sends an alert (`failure` or `recovery`) to both channels: 100 alerts a
   second, each to two channels that fail. Harsher than "all failing", which alerts once per job.

Usage: python benchmarks/alerting.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firing_bench import Server, create_jobs, measure  # noqa: E402

SETTINGS = {
    "TEXIUM_JOB_CLASS_PACKAGES": "benchmarks.alerting_jobs",
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",  # the channels' loopback peers
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def hanging_peer():
    """A port that accepts connections and never answers; yields the port."""
    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    held = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in held:
            conn.close()


def deliveries(db_path: str) -> Counter:
    db = sqlite3.connect(db_path)
    rows = db.execute(
        "SELECT json_extract(doc, '$.ok'), COUNT(*) FROM scheduler_channel_deliveries GROUP BY 1"
    ).fetchall()
    db.close()
    return Counter({("sent" if ok else "failed"): n for ok, n in rows})


def scenario(name: str, job_class: str, seconds: float, refusing: int, hanging: int, alerting: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(data_dir, SETTINGS)
        session = requests.Session()
        user = session.post(server.url + "/api/users/", json={"name": "bench", "email": "b@bench.io"})
        user_id = user.json()["user_id"]
        channels = []
        for label, port in (("refusing", refusing), ("hanging", hanging)):
            body = {"user_id": user_id, "name": label, "kind": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
            channels.append(session.post(server.url + "/api/scheduler/channels", json=body).json()["channel_id"])
        notify = {"channels": [{"id": c, "events": ["failure", "recovery"]} for c in channels]}
        schedule = {"second": "*/1", "minute": "*", "job_class_string": job_class}
        schedule["notify"] = notify if alerting else None
        job_ids = create_jobs(session, server.url, user_id, 100, **schedule)
        time.sleep(2)  # settle: jobs created, first firings behind us
        start = datetime.now().astimezone().replace(microsecond=0) + timedelta(seconds=1)
        time.sleep(seconds + 1)
        end = datetime.now().astimezone().replace(microsecond=0) - timedelta(seconds=2)
        time.sleep(2.5)  # let the last runs in the window finish and be written
        alerts = session.get(server.url + "/api/scheduler/health").json().get("alerts") or {}
        server.stop()
        db_path = os.path.join(data_dir, "texium.db")
        figures = measure(db_path, job_ids, start, end, 1)
        figures.update(name=name, deliveries=deliveries(db_path), alerts=alerts)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with hanging_peer() as hanging:
        refusing = closed_port()
        results = [
            scenario("100 jobs/s, all succeeding (no alert)", "jobs.echo.EchoJob", args.seconds, refusing, hanging),
            scenario(
                "100 jobs/s, all failing, no channel",
                "benchmarks.alerting_jobs.FailJob",
                args.seconds,
                refusing,
                hanging,
                alerting=False,
            ),
            scenario(
                "100 jobs/s, all failing, 2 channels down",
                "benchmarks.alerting_jobs.FailJob",
                args.seconds,
                refusing,
                hanging,
            ),
            scenario(
                "100 jobs/s, every run alerting, 2 channels down",
                "benchmarks.alerting_jobs.FlipJob",
                args.seconds,
                refusing,
                hanging,
            ),
        ]
    print(f"\nAlerting benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}, embedded store\n")
    print("| scenario | expected | ran | missed | lost | duplicated | lag p50 / p99 / max ms | deliveries failed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['expected']} | {r['ran']} | {r['missed']} | {r['lost']} | {r['duplicated']} | "
            f"{r['lag_p50']:.0f} / {r['lag_p99']:.0f} / {r['lag_max']:.0f} | {r['deliveries']['failed']:,} |"
        )
    for r in results:
        print(f"{r['name']}: health alerts {r['alerts']}")


if __name__ == "__main__":
    main()
