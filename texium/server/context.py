"""The composition root: settings in, wired core services out. Only the server reads settings."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from texium import __version__
from texium.core import caches
from texium.core.audit import AuditLog
from texium.core.datastore import Datastore, open_datastore
from texium.core.executions import ExecutionHistory
from texium.core.nodes import NodeIdentity, NodeRegistry
from texium.core.processes import ProcessRegistry
from texium.core.recorder import Recorder
from texium.core.records import JobRecords
from texium.core.registry import JobRegistry
from texium.core.runner import ExecutionRunner
from texium.core.scheduler_manager import SchedulerManager
from texium.core.secrets import SecretBox, load_or_create_key
from texium.core.servers import ServerService
from texium.core.users import UserService

log = logging.getLogger("texium.server")
# Settings the built-in jobs read through JobContext.config.
JOB_SETTINGS = (
    "DATA_DIR",
    "BACKUP_DIR",
    "REPORT_DIR",
    "SCRIPTS_DIR",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_STARTTLS",
    "SMTP_FROM",
    "SMTP_TIMEOUT",
)


@dataclass
class AppContext:
    datastore: Datastore
    users: UserService
    servers: ServerService
    scheduler: SchedulerManager
    history: ExecutionHistory
    audit: AuditLog
    records: JobRecords
    registry: JobRegistry
    executor: ThreadPoolExecutor
    max_body_bytes: int

    def close(self, grace_seconds: float) -> int:
        """Stop firing, wait for runs, close the store; returns how many runs never finished."""
        unfinished = self.scheduler.shutdown(grace_seconds)
        self.executor.shutdown(wait=True)
        self.datastore.close()
        return unfinished


def build_context(settings: dict[str, Any]) -> AppContext:
    """Raises ValueError with a one-line reason when the settings cannot be used."""
    datastore = open_datastore(settings["MONGO_URI"] or None, settings["DB_NAME"], settings["DATA_DIR"])
    datastore.ensure_indexes()
    secrets = SecretBox(load_or_create_key(settings["SECRET_KEY"], settings["DATA_DIR"]))
    registry = JobRegistry(settings["JOB_CLASS_PACKAGES"])
    audit = AuditLog(datastore)
    identity = NodeIdentity()
    nodes = NodeRegistry(
        datastore,
        identity,
        __version__,
        heartbeat_seconds=settings["HEARTBEAT_SECONDS"],
        timeout_seconds=settings["NODE_TIMEOUT_SECONDS"],
    )
    recorder = Recorder(datastore)
    runner = ExecutionRunner(
        datastore,
        registry,
        recorder,
        identity,
        settings["THREAD_POOL_SIZE"],
        max_instances=settings["JOB_MAX_INSTANCES"],
        job_config={name: settings[name] for name in JOB_SETTINGS},
        hooks={"clear_cache": caches.clear_all},
        processes=ProcessRegistry(os.path.join(settings["DATA_DIR"], "run", "processes"), node_id=identity.hostname),
        peers_alive=lambda: nodes.peers_alive,
    )
    scheduler = SchedulerManager(
        datastore,
        registry,
        runner,
        audit,
        recorder,
        nodes,
        timezone=settings["TIMEZONE"],
        misfire_grace_time=settings["MISFIRE_GRACE_TIME"],
        poll_seconds=settings["SCHEDULER_POLL_SECONDS"],
        retry_seconds=settings["JOBSTORE_RETRY_SECONDS"],
    )
    return AppContext(
        datastore=datastore,
        users=UserService(datastore, delete_jobs=lambda jobs: scheduler.delete_many(jobs, "cascade")),
        servers=ServerService(datastore, secrets),
        scheduler=scheduler,
        history=ExecutionHistory(datastore),
        audit=audit,
        records=JobRecords(datastore),
        registry=registry,
        executor=ThreadPoolExecutor(settings["DATASTORE_THREADS"], thread_name_prefix="texium-io"),
        max_body_bytes=settings["MAX_BODY_BYTES"],
    )
