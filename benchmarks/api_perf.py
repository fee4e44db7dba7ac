"""API performance, side by side with a bare Tornado server serving the same bytes.

Starts its own Texium (embedded store, logging at WARNING) on a seeded data dir, captures
Texium's body for each URL, starts a bare Tornado server that answers those exact bytes, and
loads both with the same client in one run (wrk when installed, else a bundled asyncio load
generator). Then the write figures and the 10,000-job figures. Prints one table.

    python benchmarks/api_perf.py [--duration 10] [--executions 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from texium.core.datastore import new_id, open_datastore  # noqa: E402
from texium.core.scheduling import cron  # noqa: E402
from texium.core.timeutil import utcnow  # noqa: E402

BARE_SERVER = r"""
import json, sys
import tornado.ioloop, tornado.web
bodies = json.load(open(sys.argv[2]))
class Bare(tornado.web.RequestHandler):
    def get(self):
        body = bodies[self.request.uri]
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(body.encode("utf-8"))
tornado.web.Application([(r"/.*", Bare)]).listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return time.monotonic() - started
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still starting
            time.sleep(0.02)
    raise SystemExit("server did not start")


class Texium:
    def __init__(self, data_dir: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}
        env.update(TEXIUM_DATA_DIR=data_dir, TEXIUM_LOG_LEVEL="WARNING", PYTHONPATH=str(REPO))
        self.log = open(os.path.join(data_dir, "server.log"), "w")
        command = [sys.executable, "-m", "texium.server", "--port", str(self.port), "--address", "127.0.0.1"]
        clock = time.monotonic()
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_up(self.url + "/api/scheduler/health", self.process)
        self.startup_seconds = time.monotonic() - clock

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 1e6

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def seed(data_dir: str, jobs: int, executions: int) -> list[str]:
    """Jobs (paused, so they do not fire) and executions written straight into the store."""
    store = open_datastore(None, "bench", data_dir)
    now = utcnow()
    users = [
        store.users.insert(
            {"name": f"u{i}", "email": f"u{i}@bench.io", "role": "user", "created_at": now, "updated_at": now}
        )
        for i in range(20)
    ]
    schedule = cron.normalize({"minute": "0", "hour": "3"}, "UTC")
    job_docs = [
        {
            "_id": new_id(),
            "user_id": random.choice(users),
            "name": f"job {i}",
            "description": "benchmark job",
            "job_class_string": "jobs.echo.EchoJob",
            **schedule,
            "pub_args": ["hello"],
            "pub_kwargs": {"n": i},
            "is_enabled": True,
            "is_paused": i % 2 == 1,
            "next_run_time": None,
            "last_run_time": now,
            "total_executions": 0,
            "schedule_error": None,
            "secrets_encrypted": "",  # as stored today: nothing for the first start to seal
            "created_at": now,
            "updated_at": now,
        }
        for i in range(jobs)
    ]
    with store.batch():
        store.jobs.insert_many(job_docs)
    statuses = ["completed"] * 8 + ["failed", "skipped"]
    for start in range(0, executions, 10_000):
        batch = []
        for i in range(start, min(start + 10_000, executions)):
            job = random.choice(job_docs)
            at = now - timedelta(seconds=executions - i)
            batch.append(
                {
                    "_id": new_id(),
                    "job_id": job["_id"],
                    "user_id": job["user_id"],
                    "job_name": job["name"],
                    "job_class_string": job["job_class_string"],
                    "status": random.choice(statuses),
                    "output": "hello\n",
                    "error": "",
                    "scheduled_at": at,
                    "started_at": at,
                    "completed_at": at,
                    "created_at": at,
                    "duration_ms": 1,
                    "node_id": "bench",
                    "hostname": "bench",
                    "pid": 1,
                    "occurrence_key": f"{job['_id']}@{at.isoformat()}",
                }
            )
        with store.batch():
            store.executions.insert_many(batch)
    store.close()
    return [doc["_id"] for doc in job_docs]


# -- load generators ---------------------------------------------------------------------------


def wrk(url: str, duration: int, script: str | None = None) -> dict:
    command = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": ms("50"), "p99": ms("99"), "errors": int(non_2xx.group(1)) if non_2xx else 0}


async def _asyncio_load(host: str, port: int, path: str, duration: float, connections: int = 32) -> dict:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            clock = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - clock) * 1000)
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    latencies.sort()
    return {
        "rps": len(latencies) / duration,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": 0,
    }


def load(base: str, path: str, duration: int) -> dict:
    if shutil.which("wrk"):
        return wrk(base + path, duration)
    host, port = base.split("//")[1].split(":")
    return asyncio.run(_asyncio_load(host, int(port), path, duration))


def post_script(tmp: str, body: dict) -> str:
    path = os.path.join(tmp, f"post{time.monotonic_ns()}.lua")
    Path(path).write_text(
        f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


# -- scenarios ---------------------------------------------------------------------------------


def reads(args, tmp: str) -> list[tuple]:
    data_dir = os.path.join(tmp, "reads")
    job_ids = seed(data_dir, 100, args.executions)
    texium = Texium(data_dir)
    paths = ["/api/scheduler/jobs", f"/api/scheduler/jobs/{job_ids[0]}", "/api/scheduler/executions?limit=50"]
    bodies = {path: requests.get(texium.url + path).text for path in paths}
    bodies_file = os.path.join(tmp, "bodies.json")
    Path(bodies_file).write_text(json.dumps(bodies))
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port), bodies_file])
    bare_url = f"http://127.0.0.1:{bare_port}"
    wait_up(bare_url + paths[0], bare)
    assert all(requests.get(bare_url + p).text == bodies[p] for p in paths), "bare server must serve Texium's bytes"
    rows = []
    for path in paths:
        ours, theirs = load(texium.url, path, args.duration), load(bare_url, path, args.duration)
        name = f"GET {path.replace(job_ids[0], '{id}')} ({len(bodies[path].encode()) / 1000:.1f} KB)"
        rows.append((name, ours, theirs))
    # The same reads while 100 EchoJob jobs fire every second (the firing benchmark's load).
    session = requests.Session()
    owner = session.post(texium.url + "/api/users/", json={"name": "f", "email": "f@bench.io"}).json()["user_id"]
    for i in range(100):
        tick = {"user_id": owner, "name": f"tick {i}", "job_class_string": "jobs.echo.EchoJob", "second": "*/1"}
        session.post(texium.url + "/api/scheduler/jobs", json={**tick, "minute": "*"})
    time.sleep(2)
    for (name, _, theirs), path in zip(list(rows), paths):
        rows.append((name + ", 100 jobs firing every second", load(texium.url, path, args.duration), theirs))
    bare.terminate()
    texium.stop()
    return rows


def writes(args, tmp: str) -> list[str]:
    data_dir = os.path.join(tmp, "writes")
    os.makedirs(data_dir)
    texium = Texium(data_dir)
    session = requests.Session()
    user_id = session.post(texium.url + "/api/users/", json={"name": "w", "email": "w@bench.io"}).json()["user_id"]
    job = {"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "w", "minute": "0", "hour": "3"}
    job_id = session.post(texium.url + "/api/scheduler/jobs", json=job).json()["job_id"]
    created = wrk(texium.url + "/api/scheduler/jobs", args.duration, post_script(tmp, job))
    run_ids = [session.post(texium.url + "/api/scheduler/jobs", json=job).json()["job_id"] for _ in range(100)]
    accepted = wrk(texium.url + f"/api/scheduler/jobs/{job_id}/run", args.duration, post_script(tmp, {}))
    time.sleep(3)  # let the queued run-nows drain
    # Open loop: 100 run-nows per second spread over 100 jobs for 5 s; then completion latency.
    execution_ids, stop_at = [], time.monotonic() + 5

    def fire(i: int) -> None:
        reply = requests.post(texium.url + f"/api/scheduler/jobs/{run_ids[i % 100]}/run", timeout=10)
        execution_ids.append(reply.json()["execution_id"])

    with ThreadPoolExecutor(16) as pool:
        i = 0
        while time.monotonic() < stop_at:
            pool.submit(fire, i)
            i += 1
            time.sleep(0.01)
    time.sleep(2)
    latencies = []
    for execution_id in execution_ids:
        data = session.get(texium.url + f"/api/scheduler/executions/{execution_id}").json()["data"]
        if data["status"] == "completed":
            from datetime import datetime

            latencies.append(
                (
                    datetime.fromisoformat(data["completed_at"]) - datetime.fromisoformat(data["scheduled_at"])
                ).total_seconds()
                * 1000
            )
    texium.stop()
    latencies.sort()
    return [
        f"POST /api/scheduler/jobs: {created['rps']:.0f}/s (p50 {created['p50']:.1f} ms, p99 {created['p99']:.1f} ms)",
        f"POST /api/scheduler/jobs/{{id}}/run accepted: {accepted['rps']:.0f}/s (p99 {accepted['p99']:.1f} ms)",
        f"EchoJob run-now to completed at 100 run-nows/s: {len(latencies)}/{len(execution_ids)} completed, "
        f"p50 {statistics.median(latencies):.0f} ms, p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms",
    ]


def large(args, tmp: str) -> list[str]:
    data_dir = os.path.join(tmp, "large")
    seed(data_dir, 10_000, args.executions)
    texium = Texium(data_dir)
    time.sleep(1)
    rss = texium.rss_mb()
    session, timings = requests.Session(), []
    for _ in range(200):
        clock = time.perf_counter()
        session.get(texium.url + "/api/scheduler/stats").raise_for_status()
        timings.append((time.perf_counter() - clock) * 1000)
    texium.stop()
    timings.sort()
    return [
        f"10,000 jobs and {args.executions:,} executions: start-up {texium.startup_seconds:.2f} s, RSS {rss:.0f} MB",
        f"GET /api/scheduler/stats: p50 {timings[100]:.1f} ms, p99 {timings[197]:.1f} ms",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 20,000 executions")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.executions = 3, 20_000
    with tempfile.TemporaryDirectory() as tmp:
        rows = reads(args, tmp)
        write_lines = writes(args, tmp)
        large_lines = large(args, tmp)
    client = "wrk -t2 -c32" if shutil.which("wrk") else "asyncio load generator, 32 connections"
    print(
        f"\nAPI benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {client}, "
        f"{args.duration} s per run, {args.executions:,} executions in the store\n"
    )
    print("| request | Texium req/s | p50 / p99 ms | bare Tornado req/s | p50 / p99 ms | ratio |")
    print("|---|---|---|---|---|---|")
    for name, ours, theirs in rows:
        print(
            f"| {name} | {ours['rps']:.0f} | {ours['p50']:.1f} / {ours['p99']:.1f} | {theirs['rps']:.0f} | "
            f"{theirs['p50']:.1f} / {theirs['p99']:.1f} | {ours['rps'] / theirs['rps']:.2f} |"
        )
    print()
    for line in write_lines + large_lines:
        print(f"- {line}")


if __name__ == "__main__":
    main()
