"""Duration rules: when a run is too long while it still runs, or too short once it succeeded.

A state change never says that last night's backup ran for nine hours, or "succeeded" in two
seconds. Three job fields do:

- `max_duration_seconds`: a run still running past it is `long_running` (once per run; the
  job's `timeout_seconds` still stops it, later or never).
- `duration_anomaly_factor` (k): a run still running past k times the p95 of the job's last
  ANOMALY_SAMPLE successful runs is `long_running` too, once ANOMALY_MIN_RUNS of them exist.
  The p95 is kept on the job (`duration_p95_ms`, `duration_p95_runs`) by the alerts thread
  when a run of the job succeeds, so the check itself reads nothing.
- `min_duration_seconds`: a successful run that took less is `too_short`, when it ends.

The check of running runs is the holder's watchdog (scheduling/watchdog.py): it already looks
at each run of its node ten times a second, so no thread polls the store for it. The alert is
claimed by one conditional write on the execution (`duration_alerted_at` from null), so one
alert per run whoever asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from texium.core.scheduling.horizon import p95

ANOMALY_SAMPLE = 50  # the last successful runs whose durations give the p95
ANOMALY_MIN_RUNS = 5  # fewer successful runs than this judge nothing
ALERTED_FIELD = "duration_alerted_at"  # on the execution: when its long_running alert was claimed


def long_running_limit(job: Mapping[str, Any]) -> tuple[float, str] | None:
    """(seconds, why) after which a run of `job` is long-running; the nearest of its limits, or None."""
    limits = []
    most = job.get("max_duration_seconds")
    if most:
        limits.append((float(most), f"over the job's max_duration_seconds ({most:g} s)"))
    factor, p95_ms, runs = job.get("duration_anomaly_factor"), job.get("duration_p95_ms"), job.get("duration_p95_runs")
    if factor and p95_ms is not None and (runs or 0) >= ANOMALY_MIN_RUNS:
        seconds = float(factor) * p95_ms / 1000
        limits.append(
            (
                seconds,
                f"over {factor:g} x the p95 ({p95_ms / 1000:g} s) of its last {runs} successful runs "
                f"(duration_anomaly_factor {factor:g})",
            )
        )
    return min(limits) if limits else None


def long_running_note(elapsed: float, why: str) -> str:
    return f"Still running after {elapsed:.1f} s: {why}."


def too_short(job: Mapping[str, Any], execution: Mapping[str, Any]) -> str | None:
    """Why a completed run was too short for the job's `min_duration_seconds`, or None."""
    least, took = job.get("min_duration_seconds"), execution.get("duration_ms")
    if not least or execution.get("status") != "completed" or not isinstance(took, (int, float)):
        return None
    if took >= least * 1000:
        return None
    return f"Succeeded in {took / 1000:g} s, under the job's min_duration_seconds ({least:g} s)."


def durations_p95(datastore, job_id: str) -> tuple[int | None, int]:
    """(p95 in ms, how many runs it is of) over the job's last ANOMALY_SAMPLE successful runs:
    one indexed query (job_id, status), newest first."""
    found = datastore.executions.find(
        {"job_id": job_id, "status": "completed"}, sort=[("created_at", -1)], limit=ANOMALY_SAMPLE
    )
    took = [e["duration_ms"] for e in found if isinstance(e.get("duration_ms"), (int, float))]
    value = p95(took)
    return (None if value is None else int(value)), len(took)
