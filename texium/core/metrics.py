"""This node's Prometheus metrics: what the scheduler, the runner, the recorder and the HTTP
server did since the process started.

One `Metrics` object per server, with a `CollectorRegistry` of its own (not the library's
global one), so several servers or tests in one process never mix their figures. It is
created by the composition root (texium/server/context.py) and handed to the components
through their constructors; each calls a few small methods here and never touches
prometheus_client itself. `GET /metrics` serves `exposition()`.

Counters count events seen by this process (monotonic, as Prometheus expects), never rows of
the store: `texium_executions_total` is the executions this node ended, by job class and
status. Labels are bounded: job classes, statuses, route templates (never a path with an id
in it), HTTP methods and statuses, store operations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from texium.core.timeutil import utcnow

# Buckets, in seconds.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
HTTP_BUCKETS = (0.005, 0.025, 0.1, 0.5, 2.5, 10)
UNKNOWN = "unknown"  # the job class of a record that names none


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _unless_failing(read: Callable[[], float]) -> Callable[[], float]:
    """A gauge reading the store: NaN while the store fails, so the scrape still answers."""

    def reading() -> float:
        try:
            return float(read())
        except Exception:
            return float("nan")

    return reading


class _WithoutCreated:
    """The registry's families without the `*_created` samples prometheus_client adds to every
    counter and histogram series: in the text format Prometheus stores them as series of their
    own, doubling the count for nothing an alert uses."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self):
        for family in self._registry.collect():
            if family.type in ("counter", "histogram", "summary"):
                family.samples = [s for s in family.samples if s.name != family.name + "_created"]
            yield family


class Metrics:
    def __init__(self, version: str = ""):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.executions = Counter(
            "texium_executions_total",
            "Executions this node ended, by job class and final status "
            "(completed, failed, timeout, cancelled, retried, skipped, missed, abandoned).",
            ["job_class", "status"],
            registry=registry,
        )
        self.running = Gauge(
            "texium_executions_running",
            "Executions running on this node now, by job class.",
            ["job_class"],
            registry=registry,
        )
        self.started = Counter(
            "texium_runs_started_total",
            "Runs this node started, by job class and what started them "
            "(schedule, run_now, retry, backfill, chain, url).",
            ["job_class", "trigger"],
            registry=registry,
        )
        self.firing_lag = Histogram(
            "texium_firing_lag_seconds",
            "Scheduled firings: how long after the occurrence the run started (started_at - scheduled_at).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.run_duration = Histogram(
            "texium_execution_duration_seconds",
            "How long runs took on this node, by job class.",
            ["job_class"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.missed = Counter(
            "texium_missed_occurrences_total",
            "Occurrences this node recorded as missed (past the misfire grace time, or not the latest due).",
            ["job_class"],
            registry=registry,
        )
        self.skipped = Counter(
            "texium_skipped_occurrences_total",
            "Scheduled occurrences this node skipped, by job class and reason "
            "(max_instances: the previous run was still going; queue_full, queue_one: the overlap policy; "
            "paused, disabled, deleted: before the run started).",
            ["job_class", "reason"],
            registry=registry,
        )
        self.backfilled = Counter(
            "texium_backfilled_runs_total",
            "Runs of a backfill (POST /api/scheduler/jobs/{id}/backfill) this node started.",
            ["job_class"],
            registry=registry,
        )
        self.pass_duration = Histogram(
            "texium_scheduler_pass_duration_seconds",
            "Completed scheduler passes: read what is due, claim it, dispatch it.",
            buckets=PASS_BUCKETS,
            registry=registry,
        )
        self.store_latency = Histogram(
            "texium_store_call_duration_seconds",
            "Datastore calls of the scheduler pass and of the execution recorder's batch writes, by operation.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "texium_store_errors_total",
            "Datastore calls of the scheduler pass and of the recorder that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.overdue = Gauge(
            "texium_scheduler_overdue_seconds",
            "How far past its next_run_time the earliest due job is, as of this node's last completed pass "
            "(0 when nothing is due). Grows while nothing fires: no pass completes, or passes claim nothing.",
            registry=registry,
        )
        self.overdue.set_function(self._overdue_seconds)
        self.last_pass = Gauge(
            "texium_scheduler_last_pass_timestamp_seconds",
            "When this node's scheduler last completed a pass (Unix time; 0: not yet).",
            registry=registry,
        )
        self.nodes_alive = Gauge(
            "texium_nodes_alive", "Live nodes on this store, this one included (at the last sweep).", registry=registry
        )
        self.pending_records = Gauge(
            "texium_recorder_pending_changes",
            "Execution and job changes waiting to be written (grows while the store refuses writes).",
            registry=registry,
        )
        self.http_requests = Counter(
            "texium_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "texium_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.alerts = Counter(
            "texium_alerts_total",
            "Job alerts this node delivered, by channel (email, webhook), event and outcome "
            "(sent, failed, muted: recorded, not sent).",
            ["channel", "event", "outcome"],
            registry=registry,
        )
        self.lingering = Gauge(
            "texium_lingering_job_threads",
            "Job threads still running after their runs were recorded timeout or cancelled (the job ignored "
            "the stop request); each holds a worker.",
            registry=registry,
        )
        self.queued = Gauge(
            "texium_queued_occurrences",
            "Occurrences waiting for a slot of their job under its overlap policy (queue_one, queue_all), "
            "on every node of the store (read from the store at scrape time; NaN while it cannot be read).",
            registry=registry,
        )
        self.excluded = Gauge(
            "texium_excluded_occurrences",
            "Occurrences not run because they fell inside a blackout of a calendar their job excludes, "
            "summed over every job of the store (read at scrape time; NaN while the store cannot be read).",
            registry=registry,
        )
        self.forecast_computations = Counter(
            "texium_forecast_computations_total",
            "Forecasts (GET /api/scheduler/forecast) this node computed; identical requests arriving while "
            "one is computed share it and are not counted.",
            registry=registry,
        )
        self.adherence = Gauge(
            "texium_job_schedule_adherence_ratio",
            "Share of a job's scheduled occurrences that started within its adherence_seconds, over the "
            "last 7 or 30 days; only jobs with an adherence_target (as last computed, at most every 60 s).",
            ["job", "job_id", "window"],
            registry=registry,
        )
        if version:
            Info("texium_build", "Texium's version.", registry=registry).info({"version": version})
        self._next_due: datetime | None = None
        self._adherence_labels: set[tuple[str, str, str]] = set()  # the adherence series set last
        self._served = _WithoutCreated(registry)

    # -- wiring ------------------------------------------------------------------------
    def watch(
        self,
        nodes_alive: Callable[[], float],
        pending_records: Callable[[], float],
        lingering: Callable[[], float] = lambda: 0,
        queued: Callable[[], float] = lambda: 0,
        excluded: Callable[[], float] = lambda: 0,
    ) -> None:
        """Gauges read at scrape time from the components that know them."""
        self.nodes_alive.set_function(nodes_alive)
        self.pending_records.set_function(pending_records)
        self.lingering.set_function(lingering)
        self.queued.set_function(_unless_failing(queued))
        self.excluded.set_function(_unless_failing(excluded))

    def exposition(self) -> bytes:
        """Everything, in the Prometheus text format."""
        return generate_latest(self._served)

    # -- the runner ----------------------------------------------------------------------
    def run_started(self, job_class: str | None, lag: float | timedelta | None, trigger: str = UNKNOWN) -> None:
        """A run starts; `lag` (started_at - scheduled_at) for a scheduled firing, None for run-now;
        `trigger`: what started it (the record's)."""
        self.running.labels(job_class or UNKNOWN).inc()
        self.started.labels(job_class or UNKNOWN, trigger).inc()
        if lag is not None:
            self.firing_lag.observe(max(0.0, _seconds(lag)))

    def run_ended(self, job_class: str | None, status: str | None, seconds: float) -> None:
        """A run ends with `status` (None: its record was already ended otherwise, and counted)."""
        job_class = job_class or UNKNOWN
        self.running.labels(job_class).dec()
        self.run_duration.labels(job_class).observe(seconds)
        if status is not None:
            self.executions.labels(job_class, status).inc()

    def run_skipped(self, job_class: str | None, reason: str, count: int = 1) -> None:
        job_class = job_class or UNKNOWN
        self.executions.labels(job_class, "skipped").inc(count)
        self.skipped.labels(job_class, reason).inc(count)

    def run_backfilled(self, job_class: str | None) -> None:
        self.backfilled.labels(job_class or UNKNOWN).inc()

    def run_abandoned(self, job_class: str | None) -> None:
        self.executions.labels(job_class or UNKNOWN, "abandoned").inc()

    # -- the scheduler pass ------------------------------------------------------------
    def occurrences_missed(self, job_class: str | None, count: int) -> None:
        """One `missed` record standing for `count` occurrences."""
        job_class = job_class or UNKNOWN
        self.executions.labels(job_class, "missed").inc()
        self.missed.labels(job_class).inc(count)

    def pass_finished(self, seconds: float, next_run_time: datetime | None) -> None:
        """A pass completed; `next_run_time`: the earliest one it left in the store."""
        self.pass_duration.observe(seconds)
        self.last_pass.set_to_current_time()
        self._next_due = next_run_time

    def _overdue_seconds(self) -> float:
        due = self._next_due
        return max(0.0, (utcnow() - due).total_seconds()) if due is not None else 0.0

    @contextmanager
    def store_call(self, operation: str) -> Iterator[None]:
        """Time a datastore call (or batch) and count it as an error if it raises."""
        clock = time.perf_counter()
        try:
            yield
        except Exception:
            self.store_errors.labels(operation).inc()
            raise
        finally:
            self.store_latency.labels(operation).observe(time.perf_counter() - clock)

    # -- HTTP --------------------------------------------------------------------------
    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def forecast_computed(self) -> None:
        self.forecast_computations.inc()

    def alert_delivered(self, channel: str, event: str, ok: bool) -> None:
        self.alerts.labels(channel, event, "sent" if ok else "failed").inc()

    def adherence_ratios(self, jobs: list[dict]) -> None:
        """The adherence gauge set to these jobs' stored ratios (`adherence_ratios`); series of
        jobs no longer given are removed, so they stay those of jobs with a target. Never
        cleared as a whole: a scrape meanwhile sees every series."""
        wanted = {
            (str(job.get("name")), str(job["_id"]), window): ratio
            for job in jobs
            for window, ratio in (job.get("adherence_ratios") or {}).items()
            if ratio is not None
        }
        for labels in self._adherence_labels - wanted.keys():
            self.adherence.remove(*labels)
        for labels, ratio in wanted.items():
            self.adherence.labels(*labels).set(ratio)
        self._adherence_labels = set(wanted)

    def alert_muted(self, channel: str, event: str) -> None:
        """An alert recorded, not sent: its job was muted (mute_until, mute_calendars)."""
        self.alerts.labels(channel, event, "muted").inc()
