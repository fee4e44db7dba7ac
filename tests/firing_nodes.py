"""Nodes of the firing core in one process, over one datastore, for forced interleavings.

Each Node is wired as texium/server/context.py wires a server (claims, dispatcher, recorder,
nodes, scheduler manager), with a real dispatcher thread and real job threads; the tests drive
the scheduler's passes and the nodes' sweeps themselves, so they choose every interleaving.
"""

from __future__ import annotations

import time

from texium.core.records.audit import AuditLog
from texium.core.registry import JobRegistry
from texium.core.scheduler_manager import SchedulerManager
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.nodes import NodeIdentity, NodeRegistry
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import JobRunner
from texium.core.timeutil import utcnow

FINAL = ("completed", "failed", "skipped", "missed", "abandoned", "timeout", "cancelled", "retried")


class Node:
    def __init__(self, datastore, pool: int = 2, max_instances: int = 1, grace: float = 3600, timeout: float = 30):
        self.ds = datastore
        self.identity = NodeIdentity()
        self.recorder = Recorder(datastore)
        self.claims = Claims(datastore, self.identity)
        registry = JobRegistry(["tests.sample_jobs"])
        self.runner = JobRunner(datastore, registry)
        self.dispatcher = Dispatcher(
            datastore,
            self.claims,
            self.runner,
            self.recorder,
            pool,
            max_instances=max_instances,
            misfire_grace_time=grace,
            stop_grace=1.0,
        )
        self.nodes = NodeRegistry(datastore, self.identity, "test", timeout_seconds=timeout)
        self.manager = SchedulerManager(
            datastore,
            registry,
            self.dispatcher,
            AuditLog(datastore),
            self.recorder,
            self.nodes,
            misfire_grace_time=grace,
        )
        self.scheduler = self.manager._scheduler

    def start(self) -> Node:
        """Registered and dispatching; no heartbeat thread and no scheduler thread (the test
        calls `claim` and `sweep`)."""
        self.nodes._register(utcnow())
        self.dispatcher.start()
        return self

    def claim(self, now=None, lead: float = 0.0):
        from datetime import timedelta

        now = now or utcnow()
        return self.scheduler.claim_due(now, now + timedelta(seconds=lead))

    def close(self) -> None:
        self.dispatcher.close(1.0)
        self.recorder.stop(2.0)


def make_job(node: Node, **fields) -> str:
    """A job created through the scheduler manager (a yearly schedule unless given)."""
    user_id = node.ds.users.insert({"name": "Owner", "email": f"o{time.time_ns()}@example.com", "created_at": utcnow()})
    body = {
        "user_id": user_id,
        "name": "edge",
        "job_class_string": "tests.sample_jobs.slow.SlowJob",
        "pub_kwargs": {"seconds": 0.01},
        "minute": "0",
        "hour": "0",
        "day_of_month": "1",
        "month": "1",
        **fields,
    }
    return node.manager.create(body, "tester")[0]


def wait_status(datastore, execution_id: str, statuses=FINAL, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = datastore.executions.get(execution_id)
        if record is not None and record["status"] in statuses or time.monotonic() > deadline:
            return record
        time.sleep(0.02)
