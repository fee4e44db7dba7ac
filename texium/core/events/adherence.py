"""The `adherence_low` alert and the adherence figures /metrics shows.

A job with an `adherence_target` keeps `adherence_due_at` (indexed: when its adherence is
computed next), `adherence_low` (whether its 7-day ratio was below the target when last
computed) and `adherence_ratios` (`{"7d", "30d"}`, the last computed ratios). The periodic check
on every node reads the jobs whose `adherence_due_at` has passed, computes their figures
(records/adherence.py) and moves each by ONE conditional write on `adherence_due_at` and
`adherence_low`: only the node whose write applied may alert, so two nodes never both send.
`adherence_low` goes out when the ratio drops below the target, once: again only after it was
back at or above it. A job is computed at most every `every_seconds`.

/metrics reads the stored ratios (no record is read on a scrape): each node refreshes its gauge
from the jobs with a target, at most every `every_seconds`, on the checks thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from texium.core.datastore.base import Datastore
from texium.core.metrics import Metrics
from texium.core.records.adherence import job_figures
from texium.core.timeutil import as_utc

log = logging.getLogger("texium.alerts")

EVENT = "adherence_low"
BATCH = 10  # jobs computed per check at most (about 26 ms each: other checks wait no longer); the rest next time
EVERY_SECONDS = 60.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # every due time is later: "has a target"


def adherence_fields(job: dict, now: datetime) -> dict:
    """The state fields a new or changed `adherence_target` starts with: computed at once; none
    without a target."""
    if job.get("adherence_target") is None:
        return {"adherence_due_at": None, "adherence_low": None, "adherence_ratios": None}
    return {"adherence_due_at": now, "adherence_low": False}


class AdherenceCheck:
    """The periodic adherence check of one node (see the module's docstring)."""

    def __init__(
        self,
        datastore: Datastore,
        announce: Callable[[dict, str, dict], None],
        metrics: Metrics | None = None,
        every_seconds: float = EVERY_SECONDS,
        batch: int = BATCH,
    ):
        self._ds = datastore
        self._announce = announce  # Alerts.announce: queued on the alerts thread, sent like any alert
        self._metrics = metrics
        self._every = timedelta(seconds=every_seconds)
        self._batch = batch
        self._gauge_at: datetime | None = None

    def check(self, now: datetime) -> int:
        """Compute the jobs that are due; returns the alerts sent. Then refresh the gauge if due."""
        due = self._ds.jobs.find({"adherence_due_at": {"$lte": now}}, sort=[("adherence_due_at", 1)], limit=self._batch)
        sent = 0
        for job in due:
            try:
                sent += self._judge(job, now)
            except Exception:  # one job's failure must not stop the others
                log.exception("Adherence check of job %s failed", job.get("_id"))
        if self._metrics is not None and (self._gauge_at is None or now - self._gauge_at >= self._every):
            self._gauge_at = now
            self._metrics.adherence_ratios(self._ds.jobs.find({"adherence_due_at": {"$gte": EPOCH}}))
        return sent

    def _judge(self, job: dict, now: datetime) -> int:
        target = job.get("adherence_target")
        figures = job_figures(self._ds, job, now)
        ratio = figures["7d"]["ratio"]
        was_low = bool(job.get("adherence_low"))
        low = was_low if ratio is None else ratio < float(target if target is not None else 0)
        fields = {
            "adherence_due_at": now + self._every if target is not None else None,
            "adherence_low": low,
            "adherence_ratios": {name: values["ratio"] for name, values in figures.items()},
        }
        expected = {"_id": job["_id"], **{name: job.get(name) for name in ("adherence_due_at", "adherence_low")}}
        if self._ds.jobs.update_many(expected, fields) != 1:
            return 0  # another node computed it (or the job changed meanwhile: its new fields hold)
        if not low or was_low or not job.get("is_enabled", True):
            return 0
        week = figures["7d"]
        self._announce(
            job,
            EVENT,
            {
                "_id": None,
                "job_id": job["_id"],
                "status": "adherence low",
                "scheduled_at": as_utc(now),
                "error": (
                    f"Schedule adherence over 7 days is {week['ratio']:.2%} ({week['on_time']} of "
                    f"{week['occurrences']} occurrences started within {job.get('adherence_seconds') or 60} s), "
                    f"below the target {float(target):.2%}. 30 days: {_percent(figures['30d']['ratio'])}; "
                    f"success rate (7 days): {week['success_rate']} %."
                ),
            },
        )
        return 1


def _percent(ratio: float | None) -> str:
    return "no occurrences" if ratio is None else f"{ratio:.2%}"
