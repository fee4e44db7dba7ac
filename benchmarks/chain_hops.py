"""The hop delay of a chain: A1 -> A2 -> ... -> A100 (each `on_success` the next), started by one
run-now, on a real server (SQLite in a temp dir). A hop is the time from one run's end
(`completed_at`) to the next one's start (`started_at`): the end written, the chained start
settled (its record made by key, the upstream marked), queued and started. Goal: p50 < 20 ms.

    python benchmarks/chain_hops.py [--length 100] [--rounds 3] [--provider sqlite|mongomock]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from firing_bench import Server, percentile  # noqa: E402

YEARLY = {"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}


def make_chain(session, url: str, user_id: str, length: int) -> list[str]:
    """The jobs from last to first, so each names one that exists."""
    ids: list[str] = []
    for n in range(length, 0, -1):
        body = {"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": f"A{n}", **YEARLY}
        if ids:
            body["on_success"] = [ids[-1]]
        answer = session.post(f"{url}/api/scheduler/jobs", json=body)
        answer.raise_for_status()
        ids.append(answer.json()["job_id"])
    return ids[::-1]


def completed_runs(session, url: str, job_id: str) -> int:
    query = {"job_id": job_id, "status": "completed", "limit": 1}
    return session.get(f"{url}/api/scheduler/executions", params=query).json()["total"]


def one_round(session, url: str, chain: list[str], round_number: int, timeout: float = 120) -> list[dict]:
    started = session.post(f"{url}/api/scheduler/jobs/{chain[0]}/run").json()["execution_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if completed_runs(session, url, chain[-1]) >= round_number:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("the chain did not reach its end in time")
    runs, execution_id = [], started
    for job_id in chain:
        run = session.get(f"{url}/api/scheduler/executions/{execution_id}").json()["data"]
        assert run["job_id"] == job_id and run["status"] == "completed", run
        runs.append(run)
        following = (run.get("chain_started") or [{}])[0].get("execution_id")
        if following is None:
            break
        execution_id = following
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--provider", choices=("sqlite", "mongomock"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"TEXIUM_MONGO_URI": "mongomock://"} if args.provider == "mongomock" else {}
        server = Server(data_dir, settings)
        try:
            session = requests.Session()
            user = session.post(f"{server.url}/api/users", json={"name": "bench", "email": "bench@example.com"})
            chain = make_chain(session, server.url, user.json()["user_id"], args.length)
            hops: list[float] = []
            for round_number in range(1, args.rounds + 1):
                runs = one_round(session, server.url, chain, round_number)
                ends = [datetime.fromisoformat(run["completed_at"]) for run in runs]
                starts = [datetime.fromisoformat(run["started_at"]) for run in runs]
                assert all(b >= a for a, b in zip(ends, starts[1:])), "a job started before its upstream ended"
                these = [(start - end).total_seconds() * 1000 for end, start in zip(ends, starts[1:])]
                hops += these
                total = (ends[-1] - starts[0]).total_seconds()
                print(f"round {round_number}: {len(runs)} runs in order, first start to last end {total:.2f} s")
            print(
                f"{args.provider}, chain of {args.length}, {len(hops)} hops: p50 {percentile(hops, 50):.1f} ms, "
                f"p95 {percentile(hops, 95):.1f} ms, p99 {percentile(hops, 99):.1f} ms, max {max(hops):.1f} ms"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
