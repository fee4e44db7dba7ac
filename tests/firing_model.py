"""A seeded, fault-injecting model of the firing core, and the checker of its invariants.

Three server processes share one SQLite file and fire twenty jobs (every 1 s and 2 s, Python
jobs and scripts, some with retries, limits of 1 and 2 runs at once; a quarter start a chained
job `on_finish`). A client pauses, resumes, edits, deletes, runs now and cancels at random
(sometimes with `cancel_downstream`); a fault thread SIGSTOPs, SIGCONTs,
SIGKILLs, SIGTERMs and restarts nodes at random (one node is always left alone, so the jobs
keep firing). Afterwards the checker reads the store and the jobs' journal and returns every
broken invariant in words. `run_model(seed, ...)` is used by tests/test_firing_model.py (one
seed, about a minute) and benchmarks/firing_model.py (many seeds).
"""

from __future__ import annotations

import bisect
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from tests.server_process import SAMPLE_JOBS, ServerProcess
from texium.core.figures import is_run

HEARTBEAT, NODE_TIMEOUT = 0.5, 3.0
ENV = {
    **SAMPLE_JOBS,
    "TEXIUM_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "TEXIUM_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT),
    "TEXIUM_SCHEDULER_POLL_SECONDS": "0.5",
    "TEXIUM_THREAD_POOL_SIZE": "6",
    "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2",
    "TEXIUM_STOP_GRACE_SECONDS": "1",
    "TEXIUM_MISFIRE_GRACE_TIME": "30",
}
SCRIPT = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = "--journal" ] && journal="$2"; shift; done
echo "$TEXIUM_EXECUTION_ID $(date +%s.%N)" >> "$journal"
sleep 0.3
"""
ENDED_BY_HOLDER = ("completed", "failed", "timeout", "cancelled", "retried")
CHAINING = ("completed", "failed", "timeout", "cancelled", "abandoned")  # ends that start on_finish
SETTLED_WITHIN = 8.0  # seconds after its end by which any node's check has settled a run's chain


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class JobModel:
    job_id: str
    every: int  # seconds
    limit: int
    created: datetime
    deleted: datetime | None = None  # when the delete was answered
    paused: list[list] = field(default_factory=list)  # [pause sent, pause answered, resume sent, resume answered]


class Model:
    def __init__(self, seed: int, workdir: Path, seconds: float = 35.0, log=print):
        self.seed, self.rng = seed, random.Random(seed)
        self.workdir, self.seconds, self.log = workdir, seconds, log
        self.data = workdir / "data"
        self.journal = workdir / "journal"
        self.scripts = workdir / "scripts"
        self.nodes: list[ServerProcess] = []
        self.jobs: dict[str, JobModel] = {}
        self.chained: dict[str, str] = {}  # job id -> the job its runs start on_finish
        self.faulted: set[int] = set()  # indexes of nodes stopped or down right now
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.actions = Counter()

    # -- the cluster -------------------------------------------------------------------
    def _node(self) -> ServerProcess:
        env = {**ENV, "TEXIUM_SCRIPTS_DIR": str(self.scripts)}
        return ServerProcess("sqlite", self.data, env=env)

    def start(self) -> None:
        self.scripts.mkdir(parents=True)
        script = self.scripts / "journal.sh"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        self.nodes = [self._node().start() for _ in range(3)]

    def api(self, avoid_faulted: bool = True):
        with self.lock:
            healthy = [i for i in range(len(self.nodes)) if i not in self.faulted] if avoid_faulted else [0, 1, 2]
        return self.nodes[self.rng.choice(healthy or [0])].api

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)
        for node in self.nodes:
            node.stop(signal.SIGTERM, timeout=20)

    # -- set-up ------------------------------------------------------------------------
    def create_jobs(self, count: int = 20) -> None:
        api = self.nodes[0].api
        self.user = api.create_user(role="admin")
        targets = [  # started only by chains (a yearly schedule), never paused or deleted
            api.create_job(
                self.user,
                name=f"chained {n}",
                job_class_string="tests.sample_jobs.model.JournalJob",
                pub_kwargs={"journal": str(self.journal), "seconds": 0.05},
                **{"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"},
            )
            for n in range(3)
        ]
        self.targets = targets
        for n in range(count):
            self.create_job(api, n)

    def create_job(self, api, n: int) -> None:
        rng = self.rng
        every = rng.choice([1, 2])
        limit = rng.choice([1, 2])
        retries = rng.choice([0, 0, 1, 2])
        body = {
            "name": f"model {n}",
            "second": f"*/{every}",
            "max_instances": limit,
            "retries": retries,
            "retry_delay_seconds": 0.5,
            "retry_backoff": "fixed",
        }
        if n % 5 == 4:
            body.update(job_class_string="jobs.custom.CustomScriptJob", pub_args=["journal.sh"])
            body["pub_kwargs"] = {"journal": str(self.journal)}
        else:
            body["job_class_string"] = "tests.sample_jobs.model.JournalJob"
            body["pub_kwargs"] = {
                "journal": str(self.journal),
                "seconds": round(rng.choice([0.05, 0.3, 0.8, 2.5]), 2),
                "fail_one_in": 3 if retries else 0,
            }
        if n % 4 == 1:
            body["on_finish"] = [rng.choice(self.targets)]
        job_id = api.create_job(self.user, **body)
        self.jobs[job_id] = JobModel(job_id, every, limit, datetime.now(UTC))
        if body.get("on_finish"):
            self.chained[job_id] = body["on_finish"][0]

    # -- the client --------------------------------------------------------------------
    def client(self) -> None:
        while not self.done.wait(self.rng.uniform(0.1, 0.4)):
            try:
                self.act()
            except requests.RequestException:
                self.actions["unanswered"] += 1  # a node went down mid-request: fine

    def act(self) -> None:
        rng, api = self.rng, self.api()
        live = [job for job in self.jobs.values() if job.deleted is None]
        job = rng.choice(live)
        action = rng.choices(["pause", "resume", "edit", "delete", "run", "cancel"], [3, 3, 2, 1, 3, 3])[0]
        base = f"/api/scheduler/jobs/{job.job_id}"
        sent = datetime.now(UTC)
        if action == "pause" and (not job.paused or job.paused[-1][3] is not None):
            if api.patch(base + "/pause", timeout=10).status_code == 200:
                job.paused.append([sent, datetime.now(UTC), None, None])
        elif action == "resume" and job.paused and job.paused[-1][3] is None:
            if api.patch(base + "/resume", timeout=10).status_code == 200:
                job.paused[-1][2:] = [sent, datetime.now(UTC)]
        elif action == "edit":
            api.put(base, json={"name": f"edited {rng.random():.3f}"}, timeout=10)
        elif action == "delete" and len(live) > 12:
            if api.delete(base, timeout=10).status_code == 200:
                job.deleted = datetime.now(UTC)
                self.create_job(api, len(self.jobs))
        elif action == "run":
            api.post(base + "/run", timeout=10)
        elif action == "cancel":
            status = rng.choice(["scheduled", "running"])
            page = api.get("/api/scheduler/executions", params={"status": status, "limit": 20}, timeout=10)
            found = page.json().get("data") or []
            if found:
                downstream = "?cancel_downstream=true" if rng.random() < 0.3 else ""
                api.post(f"/api/scheduler/executions/{rng.choice(found)['_id']}/cancel{downstream}", timeout=10)
        else:
            return
        self.actions[action] += 1

    # -- the faults --------------------------------------------------------------------
    def faults(self) -> None:
        rng = self.rng
        spared = rng.randrange(3)  # always firing: the model needs the jobs to keep going
        while not self.done.wait(rng.uniform(1.0, 3.0)):
            index = rng.choice([i for i in range(3) if i != spared])
            with self.lock:
                if index in self.faulted:
                    continue
                self.faulted.add(index)
            node = self.nodes[index]
            fault = rng.choices(["stop", "kill", "term"], [3, 2, 2])[0]
            self.actions[fault] += 1
            try:
                if fault == "stop":
                    os.kill(node.process.pid, signal.SIGSTOP)
                    self.done.wait(rng.uniform(1.0, 2 * NODE_TIMEOUT))
                    os.kill(node.process.pid, signal.SIGCONT)
                else:
                    node.stop(signal.SIGKILL if fault == "kill" else signal.SIGTERM, timeout=20)
                    if not self.done.wait(rng.uniform(0.2, 1.5)):
                        self.nodes[index] = self._node().start()
            finally:
                with self.lock:
                    self.faulted.discard(index)
        for index, node in enumerate(self.nodes):
            if node.process is None or node.process.poll() is not None:
                self.nodes[index] = self._node().start()

    # -- a run -------------------------------------------------------------------------
    def run(self) -> list[str]:
        self.start()
        try:
            self.create_jobs()
            self.began = datetime.now(UTC)
            threads = [threading.Thread(target=self.client), threading.Thread(target=self.faults)]
            for thread in threads:
                thread.start()
            time.sleep(self.seconds)
            self.done.set()
            for thread in threads:
                thread.join()
            self.ended = datetime.now(UTC)
            time.sleep(max(NODE_TIMEOUT + 3, SETTLED_WITHIN))  # leases expire, retries run, chains settle
            problems = self.check_live()
        finally:
            self.stop()
        return problems + self.check_store()

    # -- the checker -------------------------------------------------------------------
    def check_live(self) -> list[str]:
        """With every node up and leases expired: nothing is held by a node that is gone."""
        api = self.nodes[0].api
        alive = {n["_id"] for n in api.get("/api/scheduler/nodes").json()["data"] if n["state"] == "alive"}
        problems = []
        for status in ("scheduled", "running"):
            page = api.get("/api/scheduler/executions", params={"status": status, "limit": 500}).json()["data"]
            for record in page:
                if record["node_id"] is not None and record["node_id"] not in alive:
                    problems.append(f"{status} record {record['_id']} is held by gone node {record['node_id']}")
        return problems

    def check_store(self) -> list[str]:
        from texium.core.datastore.sqlite import SQLiteDatastore

        store = SQLiteDatastore(str(self.data))
        try:
            records = store.executions.find({})
            jobs = {doc["_id"]: doc for doc in store.jobs.find({})}
        finally:
            store.close()
        problems = []
        self.actions.update(f"record {r['status']}" for r in records)
        by_job: dict[str, list[dict]] = {}
        for record in records:
            by_job.setdefault(record["job_id"], []).append(record)
        problems += self.check_occurrences(by_job)
        problems += self.check_starts(records)
        problems += self.check_limits(by_job)
        problems += self.check_pauses(by_job)
        problems += self.check_counters(by_job, jobs, records)
        problems += self.check_chains(records)
        return problems

    def check_occurrences(self, by_job: dict[str, list[dict]]) -> list[str]:
        """Every occurrence of an active job has exactly one record (a run, or a missed one)."""
        problems = []
        margin = timedelta(seconds=1.5)
        for job in self.jobs.values():
            records = by_job.get(job.job_id, [])
            spans = sorted(
                (r["scheduled_at"], r.get("missed_until") or r["scheduled_at"])
                for r in records
                if r.get("trigger") == "schedule"
            )
            starts = [start for start, _ in spans]
            first = max(job.created, self.began) + margin
            last = min(job.deleted or self.ended, self.ended) - margin
            t = first.replace(microsecond=0) + timedelta(seconds=1)
            while t <= last:
                if t.second % job.every == 0 and not self._near_pause(job, t, margin):
                    upto = bisect.bisect_right(starts, t)
                    covering = sum(1 for start, until in spans[:upto] if start <= t <= until)
                    self.actions["occurrences checked"] += 1
                    if covering != 1:
                        problems.append(f"job {job.job_id}: occurrence {t.isoformat()} has {covering} records")
                t += timedelta(seconds=1)
        return problems

    @staticmethod
    def _near_pause(job: JobModel, t: datetime, margin: timedelta) -> bool:
        for pause_sent, _, _, resumed in job.paused:
            if pause_sent - margin <= t and (resumed is None or t <= resumed + margin):
                return True
        return False

    def check_starts(self, records: list[dict]) -> list[str]:
        """No job body started twice for one record; no start without a record that ran."""
        lines = self.journal.read_text().split() if self.journal.exists() else []
        starts = Counter(lines[0::2])
        self.actions["body starts"] = len(lines) // 2
        problems = [f"execution {eid} started {n} times" for eid, n in starts.items() if n > 1]
        ran = {r["_id"] for r in records if r.get("started_at") is not None}
        problems += [f"execution {eid} started but its record never did" for eid in starts if eid not in ran]
        return problems

    def check_limits(self, by_job: dict[str, list[dict]]) -> list[str]:
        """No job ran more runs at once than its limit (runs ended by their own holder)."""
        problems = []
        for job in self.jobs.values():
            edges = []
            for r in by_job.get(job.job_id, []):
                if r["status"] in ENDED_BY_HOLDER and r.get("started_at") and r.get("completed_at"):
                    edges += [(r["started_at"], 1), (r["completed_at"], -1)]
            running = 0
            for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
                running += step
                if running > job.limit:
                    problems.append(f"job {job.job_id}: {running} runs at once, limit {job.limit}")
                    break
        return problems

    def check_pauses(self, by_job: dict[str, list[dict]]) -> list[str]:
        """No scheduled or retry run started after its job's pause or delete was answered."""
        problems = []
        for job in self.jobs.values():
            for r in by_job.get(job.job_id, []):
                started = r.get("started_at")
                if started is None:
                    continue
                if job.deleted is not None and started > job.deleted:
                    problems.append(f"execution {r['_id']} started {started} after its job was deleted")
                if r.get("trigger") == "run_now":
                    continue
                for _, answered, resume_sent, _ in job.paused:
                    if answered < started and (resume_sent is None or started < resume_sent):
                        problems.append(f"execution {r['_id']} started {started} while its job was paused")
        return problems

    def check_counters(self, by_job: dict[str, list[dict]], jobs: dict[str, dict], records: list[dict]) -> list[str]:
        """Every `retried` run has its next attempt; each job's counter equals its run records."""
        ids = {r["_id"] for r in records}
        problems = [
            f"retried execution {r['_id']} has no next attempt"
            for r in records
            if r["status"] == "retried" and r.get("next_attempt_id") not in ids
        ]
        for job_id, doc in jobs.items():
            runs = sum(1 for r in by_job.get(job_id, []) if is_run(r["status"]))
            if doc.get("total_executions") != runs:
                problems.append(f"job {job_id}: total_executions {doc.get('total_executions')} but {runs} run records")
        return problems

    def check_chains(self, records: list[dict]) -> list[str]:
        """Every run of a chaining job that ended (and whose job was never deleted) started its
        on_finish job exactly once (at most once when cancelled with cancel_downstream); no run
        started anything twice."""
        started = Counter(r["parent_execution_id"] for r in records if r.get("trigger") == "chain")
        problems = [f"execution {parent} started {n} chained runs" for parent, n in started.items() if n > 1]
        for r in records:
            job = self.jobs.get(r["job_id"])
            if r["job_id"] not in self.chained or job is None or job.deleted is not None:
                continue
            if r["status"] not in CHAINING or r.get("started_at") is None or r["completed_at"] > self.ended:
                continue
            self.actions["chained ends checked"] += 1
            n = started[r["_id"]]
            if r.get("chain_pending"):
                problems.append(f"execution {r['_id']} ended {r['status']} but its chained start was never settled")
            elif r.get("cancel_downstream") and n > 1 or not r.get("cancel_downstream") and n != 1:
                problems.append(f"execution {r['_id']} ended {r['status']} and started {n} runs of its on_finish job")
        return problems


def run_model(seed: int, workdir: Path, seconds: float = 35.0, log=print) -> tuple[list[str], Counter]:
    model = Model(seed, workdir, seconds, log)
    problems = model.run()
    return problems, model.actions
