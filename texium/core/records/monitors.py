"""Heartbeat monitors: jobs that run elsewhere (a crontab, a Kubernetes CronJob, a CI pipeline)
ping Texium, and Texium alerts when the pings stop or report a failure (a dead-man's switch).

A monitor expects a ping on a schedule: every `period_seconds` after the last one, or at the
next instant of its cron fields (+ timezone) after the last one. Its `state`:

    new ──ping──> up ──expected time passes──> late ──grace over──> down
     │             ^  <──────── success ping ───────────────────────┘ (recovery)
     │             └── /start ──> running ── success / failure ping ──> up / down
    paused (is_paused): pings are recorded, nothing is checked or sent.

A failure ping (`/fail`, a non-zero exit code) makes it `down` at once. A `new` monitor is not
checked until its first ping. Alerts (`late`, `failure` on down, `recovery` when a success
follows down) go through the alert channels of the monitor's `notify`, like a job's.

Every move of the state is one conditional write on the monitor document (its `generation` as
read), so on several nodes sharing a store exactly one node moves it, and only that node
sends the alert. The periodic check (`check_due`, one of each node's alert checks, events/checks.py) reads only
the monitors whose `next_check_at` has passed (an indexed query); a node killed between the
write and the alert loses that alert, never doubles it.

The ping token (128 random bits) is stored as its SHA-256 only, so a reader of the database
cannot ping; the ping URL is therefore shown once, in the answer to create and rotate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import NotFound, TooManyRequests, ValidationError
from texium.core.records.channels import channel_ids
from texium.core.records.listing import Page, list_page
from texium.core.records.users import owned_by
from texium.core.scheduling.cron import CRON_FIELDS, normalize, schedule_for
from texium.core.security.tokens import RateLimiter, new_token, token_hash
from texium.core.timeutil import as_utc, to_iso, utcnow
from texium.core.validation import request_schema, require_id, validate_body

log = logging.getLogger("texium.monitors")
MONITOR_CREATE, MONITOR_UPDATE = request_schema("MonitorCreate"), request_schema("MonitorUpdate")
OUTPUT_LIMIT = 10 * 1024  # bytes of a ping's body kept as the execution's output
CAS_TRIES = 10  # conditional writes tried on one ping before giving up (each lost to another node's move)
DEFAULT_PERIOD = 86400  # seconds: a monitor given neither a period nor cron fields expects a daily ping
CHECK_BATCH = 200  # due monitors read per check
HIDDEN = ("token_hash",)
SUCCESS, FAILURE, START = "success", "failure", "start"


def _schedule_of(doc: dict, default_timezone: str) -> dict | None:
    """The cron fields (+ timezone) of a monitor without a period, validated; None with a period."""
    if doc.get("period_seconds") is not None:
        return None
    return normalize(doc, doc.get("timezone") or default_timezone)


def expected_after(doc: dict, moment: datetime) -> datetime | None:
    """When the next ping is due after `moment` (the last ping, or when checking started)."""
    if doc.get("period_seconds"):
        return moment + timedelta(seconds=int(doc["period_seconds"]))
    fields = {name: doc[name] for name in (*CRON_FIELDS, "timezone") if name in doc}
    return schedule_for(fields, doc.get("_id")).next_after(moment)


def check_after(doc: dict, state: str) -> datetime | None:
    """When the check must look at a monitor in `state` next (None: not until a ping)."""
    expected = doc.get("next_expected_at")
    if expected is None or state in ("new", "down", "paused"):
        return None
    if state == "late":
        return as_utc(expected) + timedelta(seconds=int(doc.get("grace_seconds") or 0))
    return as_utc(expected)


def present(doc: dict, ping_base: str | None = None, token: str | None = None) -> dict:
    view = {k: v for k, v in doc.items() if k not in HIDDEN}
    for name in ("last_ping_at", "last_exit_code", "next_expected_at", "period_seconds", "notify", "timezone"):
        view.setdefault(name, None)
    view["ping_url"] = f"{ping_base}/ping/{token}" if ping_base and token else None
    return view


class MonitorService:
    """CRUD, pings and the periodic check of heartbeat monitors.

    `announce(subject, event, execution)` hands an alert to the alert channels (Alerts.announce);
    `default_timezone` is the server's TIMEZONE; the limits are pings per minute per token and
    per client address (MONITOR_PINGS_PER_MINUTE, MONITOR_PINGS_PER_ADDRESS_PER_MINUTE)."""

    def __init__(
        self,
        datastore: Datastore,
        default_timezone: str = "UTC",
        announce: Callable[[dict, str, dict], None] | None = None,
        pings_per_minute: int = 60,
        pings_per_address_per_minute: int = 600,
    ):
        self._ds = datastore
        self._timezone = default_timezone
        self._announce = announce
        self._per_token = RateLimiter(pings_per_minute)
        self._per_address = RateLimiter(pings_per_address_per_minute)

    # -- the rules a schema cannot say -------------------------------------------------
    def _check(self, doc: dict) -> dict:
        """One schedule (a period or cron fields), the channels the owner's; the doc completed."""
        has_cron = any(doc.get(name) is not None for name in (*CRON_FIELDS, "timezone"))
        if doc.get("period_seconds") is not None and has_cron:
            raise ValidationError("Invalid field period_seconds: give a period or cron fields, not both")
        if doc.get("period_seconds") is None and not has_cron:
            doc["period_seconds"] = DEFAULT_PERIOD
        schedule = _schedule_of(doc, self._timezone)
        if schedule is not None:
            doc.update(schedule)
        else:
            for name in (*CRON_FIELDS, "timezone"):
                doc.pop(name, None)
        owner = self._ds.users.get(doc["user_id"])
        if owner is None:
            raise ValidationError(f"Invalid field user_id: no user with id {doc['user_id']}")
        for index, channel_id in enumerate(channel_ids(doc.get("notify"))):
            channel = self._ds.channels.get(channel_id)
            if channel is None or (owner.get("role") != "admin" and channel.get("user_id") != owner["_id"]):
                raise ValidationError(f"Invalid field notify.channels[{index}].id: no channel with id {channel_id}")
        return doc

    def _schedule_fields(self, doc: dict, now: datetime) -> dict:
        """state, next_expected_at and next_check_at for a monitor (re)configured now."""
        if doc.get("is_paused"):
            state = "paused"
        elif doc.get("last_ping_at") is None:
            state = "new"
        else:
            state = "up" if doc.get("state") in (None, "paused", "new", "late") else doc["state"]
        expected = expected_after(doc, as_utc(doc.get("last_ping_at") or now))
        if expected is not None and expected < now and state not in ("new", "paused"):
            expected = expected_after(doc, now)  # a new schedule: count from now, not from the past
        fields = {"state": state, "next_expected_at": expected}
        fields["next_check_at"] = check_after({**doc, **fields}, state)
        return fields

    # -- CRUD --------------------------------------------------------------------------
    def create(self, body: dict) -> tuple[str, str, str]:
        """(id, name, token): the token is shown this once."""
        doc = self._check(validate_body(body, MONITOR_CREATE))
        token = new_token()
        now = utcnow()
        doc["_id"] = new_id()
        doc.update(token_hash=token_hash(token), generation=0, last_ping_at=None, last_exit_code=None)
        doc.update(running_execution_id=None, created_at=now, updated_at=now)
        doc.update(self._schedule_fields(doc, now))
        return self._ds.monitors.insert(doc), doc["name"], token

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        page = list_page(self._ds.monitors, owned_by(self._ds, user_id), limit, offset, as_json=False)
        page.items = [present(doc) for doc in page.items]
        return page

    def stored(self, monitor_id: str) -> dict:
        doc = self._ds.monitors.get(require_id(monitor_id, "monitor_id"))
        if doc is None:
            raise NotFound("Monitor not found")
        return doc

    def get(self, monitor_id: str) -> dict:
        return present(self.stored(monitor_id))

    def update(self, monitor_id: str, body: dict) -> None:
        changes = validate_body(body, MONITOR_UPDATE, partial=True)
        for _ in range(CAS_TRIES):
            stored = self.stored(monitor_id)
            merged = {**stored, **changes}
            if "period_seconds" in changes and changes["period_seconds"] is not None:
                for name in (*CRON_FIELDS, "timezone"):  # a period replaces a cron schedule
                    merged.pop(name, None)
            elif any(name in changes for name in CRON_FIELDS):
                merged["period_seconds"] = None  # and cron fields replace a period
            merged = self._check(merged)
            fields = {k: merged.get(k) for k in (*changes, "period_seconds", *CRON_FIELDS, "timezone")}
            fields.update(self._schedule_fields(merged, utcnow()), updated_at=utcnow())
            fields["generation"] = stored.get("generation", 0) + 1
            if self._ds.monitors.update_many({"_id": monitor_id, "generation": stored.get("generation", 0)}, fields):
                return
        raise TooManyRequests("The monitor kept changing; try again")

    def rotate(self, monitor_id: str) -> str:
        """A new token; the old ping URL answers 404 from now on."""
        self.stored(monitor_id)
        token = new_token()
        if self._ds.monitors.update(monitor_id, fields={"token_hash": token_hash(token), "updated_at": utcnow()}):
            return token
        raise NotFound("Monitor not found")

    def delete(self, monitor_id: str) -> None:
        self.stored(monitor_id)
        if not self._ds.monitors.delete(monitor_id):
            raise NotFound("Monitor not found")

    # -- pings -------------------------------------------------------------------------
    def admit(self, token: str, client: str) -> None:
        """Rate limits, before the token is looked up (a guess costs as much as a ping)."""
        self._per_address.admit(f"a:{client}", "pings")
        self._per_token.admit(f"t:{token_hash(token)}", "pings")

    def ping(self, token: str, kind: str, exit_code: int | None, body: bytes) -> None:
        """Record a ping (kind: success, failure or start) and move the state; NotFound for an
        unknown token (the lookup is by the token's hash: an indexed equality, no timing to
        tell how close a guess was)."""
        found = self._ds.monitors.find({"token_hash": token_hash(token)}, limit=1)
        if not found:
            raise NotFound("Not found")
        output = body[-OUTPUT_LIMIT:].decode("utf-8", "replace")
        monitor = found[0]
        for _ in range(CAS_TRIES):
            now = utcnow()
            before = monitor.get("state")
            fields, event = self._after_ping(monitor, kind, exit_code, now)
            expected = {"_id": monitor["_id"], "generation": monitor.get("generation", 0)}
            if self._ds.monitors.update_many(expected, {**fields, "generation": expected["generation"] + 1}):
                execution = self._record_ping(monitor, kind, exit_code, output, now, fields)
                if event is not None and before != "paused":
                    self._send({**monitor, **fields}, event, execution)
                return
            monitor = self._ds.monitors.get(monitor["_id"])
            if monitor is None:
                raise NotFound("Not found")
        log.warning("Monitor %s kept changing under %d tries; a ping was dropped", monitor["_id"], CAS_TRIES)

    def _after_ping(self, monitor: dict, kind: str, exit_code: int | None, now: datetime) -> tuple[dict, str | None]:
        """The monitor's new fields after a ping, and the alert it sends (None: no change to tell)."""
        state = monitor.get("state")
        if kind == START:
            fields = {"state": "paused" if state == "paused" else "running", "last_start_at": now}
            fields["running_execution_id"] = new_id()
            return fields, None
        fields = {"last_ping_at": now, "last_exit_code": exit_code, "running_execution_id": None}
        fields["next_expected_at"] = expected_after(monitor, now)
        new_state = "up" if kind == SUCCESS else "down"
        if state == "paused":
            new_state = "paused"
        event = None
        if new_state == "down" and state != "down":
            event = "failure"
        elif new_state == "up" and state == "down":
            event = "recovery"
        fields["state"] = new_state
        fields["next_check_at"] = check_after({**monitor, **fields}, new_state)
        return fields, event

    def _record_ping(
        self, monitor: dict, kind: str, exit_code: int | None, output: str, now: datetime, fields: dict
    ) -> dict:
        """The ping as an execution record (`source: monitor`): a start opens a running record
        that the next success or failure ping ends."""
        status = {START: "running", SUCCESS: "completed", FAILURE: "failed"}[kind]
        running_id = monitor.get("running_execution_id")
        if kind != START and running_id:
            started = monitor.get("last_start_at")
            ended = {"status": status, "completed_at": now, "exit_code": exit_code, "output": output}
            ended["duration_ms"] = int((now - as_utc(started)).total_seconds() * 1000) if started else None
            ended["error"] = _error(kind, exit_code)
            if self._ds.executions.update_many({"_id": running_id, "status": "running"}, ended):
                return {**(self._ds.executions.get(running_id) or {}), **ended}
        record = _execution(
            monitor,
            status,
            now,
            _id=fields.get("running_execution_id") or new_id(),
            output=output,
            error=_error(kind, exit_code),
            exit_code=exit_code,
            started_at=now,
            completed_at=None if kind == START else now,
            duration_ms=None if kind == START else 0,
        )
        self._ds.executions.insert(record)
        return record

    # -- the periodic check ------------------------------------------------------------
    def check_due(self, now: datetime | None = None) -> int:
        """Move the monitors whose expected ping did not come (late, then down) and alert; the
        number moved by this node. Cheap when nothing is due: one indexed query."""
        now = now or utcnow()
        moved = 0
        for monitor in self._ds.monitors.find({"next_check_at": {"$lte": now}}, limit=CHECK_BATCH):
            expected = monitor.get("next_expected_at")
            state = monitor.get("state")
            if expected is None or state in ("new", "down", "paused"):
                continue
            grace_over = now >= as_utc(expected) + timedelta(seconds=int(monitor.get("grace_seconds") or 0))
            new_state = "down" if grace_over else "late"
            if new_state == state:
                continue
            fields = {"state": new_state, "generation": monitor.get("generation", 0) + 1}
            fields["next_check_at"] = check_after({**monitor, **fields}, new_state)
            as_read = {"_id": monitor["_id"], "generation": monitor.get("generation", 0)}
            if not self._ds.monitors.update_many(as_read, fields):
                continue  # another node (or a ping) moved it first: theirs to tell
            moved += 1
            execution: dict = {"status": new_state, "scheduled_at": expected, "monitor_id": monitor["_id"]}
            if new_state == "down":
                execution = self._record_missed(monitor, expected, now)
            self._send({**monitor, **fields}, "failure" if new_state == "down" else "late", execution)
        return moved

    def _record_missed(self, monitor: dict, expected: datetime, now: datetime) -> dict:
        last = monitor.get("last_ping_at")
        since = to_iso(as_utc(last)) if last else "the start"
        grace = int(monitor.get("grace_seconds") or 0)
        why = f"No ping since {since}: expected at {to_iso(as_utc(expected))}, grace {grace} s over"
        record = _execution(monitor, "missed", now, _id=new_id(), error=why, scheduled_at=expected, completed_at=now)
        # one record per expected ping, whichever node writes it
        record["occurrence_key"] = f"monitor:{monitor['_id']}:missed:{to_iso(as_utc(expected))}"
        try:
            self._ds.executions.insert(record)
        except Exception as exc:  # the alert matters more than its record
            log.warning("Monitors: cannot record the missed ping of monitor %s: %s", monitor["_id"], exc)
        return record

    def _send(self, monitor: dict, event: str, execution: dict) -> None:
        if self._announce is None:
            return
        subject = {"_id": monitor["_id"], "name": monitor.get("name"), "user_id": monitor.get("user_id")}
        subject.update(notify=monitor.get("notify"), kind="monitor")
        try:
            self._announce(subject, event, execution)
        except Exception:
            log.exception("Monitors: cannot announce %s of monitor %s", event, monitor["_id"])


def _execution(monitor: dict, status: str, now: datetime, **fields: Any) -> dict:
    """An execution record of a monitor (`source: monitor`): the executions list, its filters
    and the stats count it like a job's run. No node holds it (nothing runs here)."""
    record = {
        "source": "monitor",
        "monitor_id": monitor["_id"],
        "job_id": None,
        "user_id": monitor.get("user_id"),
        "job_name": monitor.get("name"),
        "status": status,
        "trigger": "ping",
        "output": "",
        "error": "",
        "exit_code": None,
        "scheduled_at": monitor.get("next_expected_at"),
        "started_at": None,
        "completed_at": None,
        "duration_ms": None,
        "created_at": now,
        "attempt": 1,
        **fields,
    }
    record["occurrence_key"] = f"monitor:{monitor['_id']}:{record['_id']}"
    return record


def _error(kind: str, exit_code: int | None) -> str:
    if kind != FAILURE:
        return ""
    return f"Exit code {exit_code}" if exit_code is not None else "Failure reported by /fail"


def ping_kind(action: str | None) -> tuple[str, int | None]:
    """(kind, exit code) of a ping's last path segment: none, start, fail or an exit code 0-255."""
    if not action:
        return SUCCESS, None
    if action == "start":
        return START, None
    if action == "fail":
        return FAILURE, None
    if action.isascii() and action.isdigit() and len(action) <= 3 and int(action) <= 255:
        code = int(action)
        return (SUCCESS if code == 0 else FAILURE), code
    raise NotFound("Not found")
