"""What an alert says, whatever carries it: the title of each event, the plain-text message, the
JSON payload of the signed webhook and the bounded error excerpt. Shared by the per-job e-mail and
webhook (alerts.py) and the channels (channels.py), so every channel tells the same story."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from texium.core.events.noise import duration_words
from texium.core.timeutil import to_iso, utcnow

TITLES = {
    "failure": "Job failing",
    "recovery": "Job recovered",
    "timeout": "Run timed out",
    "missed": "Runs missed",
    "paused": "Job paused itself",
    "test": "Test message",
    "skipped": "Run skipped",
    "long_running": "Run running long",
    "too_short": "Run ended too soon",
    "still_failing": "Job still failing",
    "flapping": "Job flapping",
    "deadline_missed": "Deadline missed",
    "adherence_low": "Schedule adherence low",
    "late": "Monitor late",
}
NOISE_KEYS = ("failure_streak", "failing_for_seconds", "alert_note")  # what the noise rules add to a message
ERROR_LINES, ERROR_CHARS = 20, 4000  # how much of the execution's error an alert carries


def iso(value: Any) -> str | None:
    return to_iso(value) if isinstance(value, datetime) else value


def error_excerpt(error: Any) -> str:
    """The first lines of the (already masked) error: enough to triage, bounded in size."""
    text = "\n".join(str(error or "").splitlines()[:ERROR_LINES])
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def link(base: str, execution: dict) -> str:
    """The execution's page in the dashboard (base: PUBLIC_URL without its last slash); a
    heartbeat monitor's page for its alerts; the dashboard itself for a message about no
    execution (a channel's test)."""
    if execution.get("monitor_id"):
        return f"{base}/#/monitors/{execution['monitor_id']}"
    if not execution.get("_id"):
        return f"{base}/"
    return f"{base}/#/executions/{execution.get('_id')}"


def title(job: dict, event: str) -> str:
    return " ".join(f"{TITLES[event]}: {job.get('name')}".split())[:200]


def facts(job: dict, event: str, execution: dict) -> list[tuple[str, str]]:
    """(label, value) pairs every message shows."""
    duration = execution.get("duration_ms")
    return [
        ("Job", f"{job.get('name')} (id {job.get('_id')})" if job.get("_id") else str(job.get("name"))),
        ("Event", event),
        ("Status", str(execution.get("status"))),
        ("Attempt", str(execution.get("attempt"))),
        ("Scheduled", iso(execution.get("scheduled_at")) or "-"),
        ("Started", iso(execution.get("started_at")) or "-"),
        ("Completed", iso(execution.get("completed_at")) or "-"),
        ("Duration", "-" if duration is None else f"{duration} ms"),
        *noise_facts(execution),
    ]


def noise_facts(execution: dict) -> list[tuple[str, str]]:
    """The lines the noise rules add when they have something to say (events/noise.py): the
    failure streak, how long the job has been failing, why the message is sent."""
    lines = []
    if execution.get("failure_streak"):
        lines.append(("Failed runs", f"{execution['failure_streak']} in a row"))
    if execution.get("failing_for_seconds") is not None:
        lines.append(("Failing for", duration_words(execution["failing_for_seconds"])))
    if execution.get("alert_note"):
        lines.append(("Note", str(execution["alert_note"])))
    return lines


def text(job: dict, event: str, execution: dict, base: str) -> str:
    """The plain-text message (e-mail body, ntfy and Telegram text)."""
    lines = [f"{TITLES[event]}: {job.get('name')}", ""]
    lines += [f"{label + ':':<11} {value}" for label, value in facts(job, event, execution)]
    lines.append(f"{'Execution:':<11} {link(base, execution)}")
    error = error_excerpt(execution.get("error"))
    if error:
        lines += ["", f"Error (first {ERROR_LINES} lines):", error]
    return "\n".join(lines) + "\n"


def webhook_payload(job: dict, event: str, execution: dict, base: str) -> dict:
    """The JSON body of a signed alert webhook (X-Texium-Signature)."""
    return {
        "event": event,
        "job": {"id": job.get("_id"), "name": job.get("name"), "job_class_string": job.get("job_class_string")},
        "execution": {
            "id": execution.get("_id"),
            "status": execution.get("status"),
            "attempt": execution.get("attempt"),
            "scheduled_at": iso(execution.get("scheduled_at")),
            "started_at": iso(execution.get("started_at")),
            "completed_at": iso(execution.get("completed_at")),
            "duration_ms": execution.get("duration_ms"),
            "error": error_excerpt(execution.get("error")),
        },
        "link": link(base, execution),
        "timestamp": to_iso(utcnow()),
        **{k: execution[k] for k in NOISE_KEYS if execution.get(k) is not None},
    }
