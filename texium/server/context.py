"""The composition root: settings in, wired core services out. Only the server reads settings."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from texium import __version__
from texium.core import caches
from texium.core.datastore import Datastore, open_datastore
from texium.core.events.adherence import AdherenceCheck
from texium.core.events.alerts import Alerts
from texium.core.events.channels import Deliveries, Sender
from texium.core.events.checks import PeriodicChecks
from texium.core.events.deadlines import Deadlines
from texium.core.events.digests import Digests
from texium.core.inflight import InFlight
from texium.core.metrics import Metrics
from texium.core.records.apikeys import ApiKeys
from texium.core.records.audit import AuditLog
from texium.core.records.calendars import CalendarService
from texium.core.records.channels import SECRET_FIELD, ChannelService
from texium.core.records.executions import ExecutionHistory
from texium.core.records.job_records import JobRecords
from texium.core.records.legacy_notify import LegacyNotify
from texium.core.records.monitors import MonitorService
from texium.core.records.servers import ServerService
from texium.core.records.sessions import Sessions
from texium.core.records.triggers import TriggerService
from texium.core.records.users import UserService
from texium.core.registry import JobRegistry
from texium.core.scheduler_manager import SchedulerManager
from texium.core.scheduling.backlog import Backlog
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher, runs_per_user
from texium.core.scheduling.nodes import NodeIdentity, NodeRegistry
from texium.core.scheduling.pausing import Pauses
from texium.core.scheduling.processes import ProcessRegistry
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import JobRunner
from texium.core.scheduling.windows import CalendarReader
from texium.core.security.outbound import OutboundPolicy, parse_networks
from texium.core.security.secrets import SecretBox, load_or_create_key
from texium.core.views.forecast import Forecasts
from texium.server.access import AccessPolicy, FailureLimiter, auth_required, https_hosts, metrics_public

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
    "SMTP_ALLOW_PLAINTEXT_LOGIN",
    "SMTP_FROM",
    "SMTP_TIMEOUT",
    "EMAIL_ALLOWED_DOMAINS",
    "EMAIL_MAX_PER_HOUR",
    "OUTBOUND_ALLOW",
    "OUTBOUND_DENY_PRIVATE",
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
    keys: ApiKeys
    access: AccessPolicy
    metrics: Metrics
    calendars: CalendarService | None = None
    channels: ChannelService | None = None
    monitors: MonitorService | None = None
    triggers: TriggerService | None = None
    public_url: str = ""  # PUBLIC_URL as set (empty: ping URLs use the request's own host)
    hsts_seconds: int = 0
    forecasts: Forecasts | None = None
    forecasts_in_flight: InFlight = field(default_factory=InFlight)  # identical forecast requests share one

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
    secret_key = load_or_create_key(settings["SECRET_KEY"], settings["DATA_DIR"])
    secrets = SecretBox(secret_key)
    registry = JobRegistry(settings["JOB_CLASS_PACKAGES"])
    servers = ServerService(datastore, secrets)
    servers.seal_stored_urls()  # records saved before instance_url passwords were sealed
    audit = AuditLog(datastore)
    pauses = Pauses(datastore, audit.record)
    identity = NodeIdentity()
    nodes = NodeRegistry(
        datastore,
        identity,
        __version__,
        heartbeat_seconds=settings["HEARTBEAT_SECONDS"],
        timeout_seconds=settings["NODE_TIMEOUT_SECONDS"],
    )
    metrics = Metrics(__version__)  # this server's own registry (GET /metrics)
    recorder = Recorder(datastore, metrics)
    job_config = {name: settings[name] for name in JOB_SETTINGS}
    public_url = settings["PUBLIC_URL"] or f"http://{settings['HTTP_ADDRESS']}:{settings['HTTP_PORT']}"
    outbound = OutboundPolicy.from_settings(settings["OUTBOUND_ALLOW"], settings["OUTBOUND_DENY_PRIVATE"])
    deliveries = Deliveries(
        datastore,
        Sender(job_config, outbound, webhook_secret=settings["ALERT_WEBHOOK_SECRET"] or None),
        lambda channel: secrets.decrypt(channel[SECRET_FIELD]) if channel.get(SECRET_FIELD) else None,
        link_base=public_url.rstrip("/"),
        metrics=metrics,
        digests=Digests(
            datastore, settings["ALERT_DIGEST_SECONDS"], settings["ALERT_DIGEST_AFTER"], public_url.rstrip("/")
        )
        if settings["ALERT_DIGEST_SECONDS"]
        else None,
    )
    legacy_notify = LegacyNotify(datastore, settings["EMAIL_ALLOWED_DOMAINS"])
    alerts = Alerts(
        datastore,
        recorder.execution,
        metrics,
        keep=lambda job_id, fields: recorder.job(job_id, fields=fields),
        pauses=pauses,
        channels=deliveries,
        default_channels=settings["ALERT_CHANNELS"],
        calendars=CalendarReader(datastore),
        legacy=lambda job: legacy_notify.convert(job.get("notify"), job.get("user_id") or "", enforce=False).notify,
    )
    processes = ProcessRegistry(os.path.join(settings["DATA_DIR"], "run", "processes"), node_id=identity.hostname)
    runner = JobRunner(
        datastore,
        registry,
        job_config=job_config,
        hooks={"clear_cache": caches.clear_all, "server_instance_url": servers.instance_url},
        processes=processes,
        secrets=secrets,
        default_timeout=settings["DEFAULT_JOB_TIMEOUT"] or None,
    )
    dispatcher = Dispatcher(
        datastore,
        Claims(datastore, identity),
        runner,
        recorder,
        settings["THREAD_POOL_SIZE"],
        max_instances=settings["JOB_MAX_INSTANCES"],
        misfire_grace_time=settings["MISFIRE_GRACE_TIME"],
        stop_grace=settings["STOP_GRACE_SECONDS"],
        metrics=metrics,
        alerts=alerts,
        processes=processes,
        max_runs_per_user=settings["MAX_RUNS_PER_USER"] or runs_per_user(settings["THREAD_POOL_SIZE"]),
    )
    monitors = MonitorService(
        datastore,
        settings["TIMEZONE"],
        announce=lambda monitor, event, execution: alerts.announce(monitor, event, execution, reread=False),
        pings_per_minute=settings["MONITOR_PINGS_PER_MINUTE"],
        pings_per_address_per_minute=settings["MONITOR_PINGS_PER_ADDRESS_PER_MINUTE"],
    )
    backlog = Backlog(datastore)
    metrics.watch(
        nodes_alive=lambda: nodes.peers_alive + 1,
        pending_records=lambda: recorder.pending,
        lingering=lambda: dispatcher.lingering,
        queued=backlog.queued,
        excluded=backlog.excluded,
    )
    adherence_check = AdherenceCheck(datastore, alerts.announce, metrics, settings["ADHERENCE_CHECK_SECONDS"])
    scheduler = SchedulerManager(
        datastore,
        registry,
        dispatcher,
        audit,
        recorder,
        nodes,
        timezone=settings["TIMEZONE"],
        misfire_grace_time=settings["MISFIRE_GRACE_TIME"],
        poll_seconds=settings["SCHEDULER_POLL_SECONDS"],
        retry_seconds=settings["JOBSTORE_RETRY_SECONDS"],
        metrics=metrics,
        busy_warning_seconds=settings["BUSY_WARNING_SECONDS"],
        busy_unhealthy_seconds=settings["BUSY_UNHEALTHY_SECONDS"],
        pauses=pauses,
        legacy_notify=legacy_notify,
        checks=PeriodicChecks(
            [
                ("deadline", Deadlines(datastore, alerts.announce).check),
                ("adherence", adherence_check.check),
                ("re-alert", alerts.check_due),
                ("monitor", monitors.check_due),
                ("digest", lambda now: deliveries.sweep_digests()),
            ],
            interval=settings["ALERT_CHECK_SECONDS"],
        ),
    )
    if settings["METRICS_PUBLIC"] and not metrics_public(True, settings["HTTP_ADDRESS"]):
        log.warning(
            "METRICS_PUBLIC is ignored on %s (not loopback): GET /metrics still needs an admin key",
            settings["HTTP_ADDRESS"],
        )
    return AppContext(
        datastore=datastore,
        users=UserService(datastore, delete_jobs=lambda jobs: scheduler.delete_many(jobs, "cascade")),
        servers=servers,
        scheduler=scheduler,
        history=ExecutionHistory(datastore),
        audit=audit,
        records=JobRecords(datastore),
        registry=registry,
        executor=ThreadPoolExecutor(settings["DATASTORE_THREADS"], thread_name_prefix="texium-io"),
        max_body_bytes=settings["MAX_BODY_BYTES"],
        keys=ApiKeys(datastore, Sessions(datastore, settings["SESSION_LIFETIME_SECONDS"])),
        access=AccessPolicy(
            required=auth_required(settings["AUTH_MODE"], settings["HTTP_ADDRESS"]),
            listen_address=settings["HTTP_ADDRESS"],
            allowed_hosts=tuple(settings["ALLOWED_HOSTS"]),
            cors_origins=tuple(settings["CORS_ORIGINS"]),
            trusted_proxies=parse_networks(settings["TRUSTED_PROXIES"], "TRUSTED_PROXIES"),
            failures=FailureLimiter(settings["AUTH_FAILURES_PER_MINUTE"]),
            metrics_public=metrics_public(settings["METRICS_PUBLIC"], settings["HTTP_ADDRESS"]),
            https_hosts=https_hosts(settings["PUBLIC_URL"]),
        ),
        metrics=metrics,
        forecasts=Forecasts(datastore),
        forecasts_in_flight=InFlight(started=metrics.forecast_computed),
        calendars=CalendarService(datastore, settings["TIMEZONE"], on_changed=scheduler.calendar_changed),
        channels=ChannelService(
            datastore, secrets, settings["CHANNEL_HTTPS_ONLY"], deliveries.send_test, settings["EMAIL_ALLOWED_DOMAINS"]
        ),
        monitors=monitors,
        triggers=TriggerService(datastore, audit, scheduler.run_now, settings["TRIGGER_RUNS_PER_MINUTE"]),
        public_url=(settings["PUBLIC_URL"] or "").rstrip("/"),
        hsts_seconds=settings["HSTS_SECONDS"],
    )
