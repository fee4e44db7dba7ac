"""Per-job failure alerts: e-mail and webhook notices when a job starts failing and when it recovers.

Each job keeps an `alert_state` ("ok", "failing" or "missed"; missing counts as "ok"). Every
final execution moves it by `transition`; only a change of state can send an alert, so a job
that keeps failing alerts once, and once more when it recovers.

Outcomes are applied in the order they happened, whichever node observes them: the job also
keeps the completion time and execution id of the last outcome applied (`alert_seen_at`,
`alert_seen_id`), and an outcome that is not newer is ignored. The state and that marker are
read fresh from the store and moved together with a compare-and-set on both (re-read and
retried on a conflict), so two nodes sharing a store never both alert for one change, and an
older outcome observed late can neither send an alert nor move the state back.

A job without `notify` sends nothing, but its state is still kept (the dashboard shows it).
With `keep` (the server passes the recorder's merged job changes) it costs no read and no
write of its own, and the newest outcome each node saw wins; without it, one conditional write
on the marker.

Alerts never slow a run down: `observe` only queues, and one daemon thread ("texium-alerts")
reads the store, sends and records. A delivery failure is logged, counted and recorded on the
execution (`alerts`), and changes nothing else. The message holds the job's name, times and
the first lines of the error (already masked), never its arguments or output.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from texium.core.datastore.base import Datastore, is_valid_id
from texium.core.events import messages
from texium.core.events.channels import Deliveries
from texium.core.events.mail import MailError, send_message
from texium.core.metrics import Metrics
from texium.core.security.outbound import (
    SIGNATURE_HEADER,
    OutboundPolicy,
    OutboundRefused,
    http_request,
    redact_url,
    sign,
)
from texium.core.timeutil import as_utc, to_iso, utcnow

log = logging.getLogger("texium.alerts")

EVENTS = ("failure", "recovery", "timeout", "missed", "late")
PAUSED = "paused"  # the job paused itself (pause_after_failures): sent to every channel, whatever `events` says
TIMEOUT = 10.0  # seconds per delivery attempt
MAX_QUEUED = 10_000  # observations waiting; more are dropped (with a warning) rather than grow without end
CAS_TRIES = 10  # compare-and-set attempts on one observation (each lost to another node's change) before giving up
_MOVES = {  # status -> (new state, its event: sent only when the state was another one)
    "failed": ("failing", "failure"),
    "abandoned": ("failing", "failure"),
    "timeout": ("failing", "timeout"),
    "missed": ("missed", "missed"),
}
_MOVING = frozenset({"completed", *_MOVES})


def transition(state: str | None, status: str) -> tuple[str, str | None]:
    """The job's new alert state after an execution ended with `status`, and the event to send."""
    state = state or "ok"
    if status == "completed":
        return "ok", "recovery" if state == "failing" else None
    if status in _MOVES:
        new, event = _MOVES[status]
        return new, None if state == new else event
    return state, None  # cancelled, skipped, retried, still running: says nothing about health


class Alerts:
    """Watches final executions and sends the alerts the jobs' `notify` asks for."""

    def __init__(
        self,
        datastore: Datastore,
        config: Mapping[str, Any],
        policy: OutboundPolicy,
        record: Callable[[str, dict], None],
        metrics: Metrics | None = None,
        attempts: int = 3,
        backoff: float = 1.0,
        keep: Callable[[str, dict], None] | None = None,
        pauses: Any = None,
        channels: Deliveries | None = None,
        default_channels: Sequence[str] = (),
    ):
        self._ds = datastore
        # Channel deliveries (events/channels.py: a queue and worker per channel), and the
        # channels (ids or names, ALERT_CHANNELS) of jobs whose notify names none.
        self._channels = channels
        self._default_channels = tuple(default_channels) if channels is not None else ()
        # The firing core's pause rules (scheduling.pausing.Pauses): a failed run may pause its
        # job (pause_after_failures), which this thread then announces. None: no such rule.
        self._pauses = pauses
        # Writes the state of a job that notifies no one (the recorder's merged job changes: no
        # read, no write of its own; the newest outcome a node saw wins). None: _keep does it.
        self._keep_state = keep
        self._config = config
        self._policy = policy
        self._record = record
        self._metrics = metrics
        self._attempts = max(1, int(attempts))
        self._backoff = max(0.0, float(backoff))
        self._link_base = str(config.get("PUBLIC_URL") or "").rstrip("/")
        self._secret = config.get("ALERT_WEBHOOK_SECRET") or None
        self._queue: queue.Queue = queue.Queue()
        self._abort = threading.Event()  # stop() ran out of time: drop the rest, end waits early
        self._closed = False
        self._lock = threading.Lock()
        self._sent = self._failed = 0
        self._last_failure, self._last_failure_at = "", None
        self._thread = threading.Thread(target=self._run, name="texium-alerts", daemon=True)
        self._thread.start()

    # -- the callers' side -------------------------------------------------------------
    def observe(self, job: Mapping[str, Any], execution: dict) -> None:
        """Queue a final execution of `job` (the job document its run used); returns at once and
        never raises. `job` may be stale: only its `_id` and whether it has a `notify` are used
        here. The state it moves is read fresh on the alerts thread."""
        job_id = None
        try:
            job_id = job.get("_id") or execution.get("job_id")
            if self._closed or not job_id or execution.get("status") not in _MOVING:
                return  # a status that moves no state (cancelled, skipped, ...) costs no store read
            counts = self._counts_failures(job, execution)
            notifies = bool(job.get("notify") or self._default_channels)
            if not notifies and self._keep_state is not None and not counts:
                at, execution_id = _seen(execution)
                state = transition("ok", execution["status"])[0]
                if job.get("alert_state") != state:  # as read when the run started: a healthy job costs nothing
                    self._keep_state(job_id, {"alert_state": state, "alert_seen_at": at, "alert_seen_id": execution_id})
                return
            if self._queue.qsize() >= MAX_QUEUED:
                log.warning("Alerts: %d observations queued; dropped the one of job %s", MAX_QUEUED, job_id)
                return
            self._queue.put_nowait((job_id, notifies, dict(execution), _seen(execution), counts))
        except Exception:
            log.exception("Alerts: cannot queue an observation of job %s", job_id)

    def announce(self, job: Mapping[str, Any], event: str, execution: dict) -> None:
        """Queue `event` of `job` (a job, or a heartbeat monitor acting as one: `_id`, `name`,
        `notify`) decided elsewhere (a periodic check); sent on the alerts thread through _send.
        Returns at once and never raises."""
        if self._closed or self._queue.qsize() >= MAX_QUEUED:
            log.warning("Alerts: %s of %s dropped (stopping or %d queued)", event, job.get("_id"), MAX_QUEUED)
            return
        self._queue.put_nowait(_Announcement(dict(job), event, dict(execution)))

    def _counts_failures(self, job: Mapping[str, Any], execution: dict) -> bool:
        """Whether this outcome may pause its job: a failure of a job with pause_after_failures
        (as read when its run started; the rule reads the job again)."""
        return (
            self._pauses is not None
            and bool(job.get("pause_after_failures"))
            and execution.get("status") in ("failed", "timeout")
        )

    def stats(self) -> dict:
        """For the health endpoint."""
        with self._lock:
            return {
                "sent": self._sent,
                "failed": self._failed,
                "queued": self._queue.qsize(),
                "last_failure": self._last_failure,
                "last_failure_at": self._last_failure_at,
            }

    def stop(self, timeout: float) -> bool:
        """Deliver what is queued for up to `timeout` s, then end the thread; False if time ran out."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        self._abort.set()
        if self._channels is not None:
            self._channels.stop()  # queued channel deliveries get one more attempt, no waits
        return not self._thread.is_alive()

    # -- the alerts thread -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._abort.is_set():
                return
            try:
                if isinstance(item, _Announcement):
                    self._announced(item)
                else:
                    self._handle(*item)
            except Exception:  # a bug here must not end alerting for every later run
                job_id = item.job.get("_id") if isinstance(item, _Announcement) else item[0]
                log.exception("Alerts: observation of job %s failed", job_id)

    def _handle(
        self, job_id: str, notifies: bool, execution: dict, seen: tuple[datetime, str], counts: bool = False
    ) -> None:
        status = execution.get("status")
        try:
            if not notifies:  # nothing to send: keep the state without reading the job
                self._keep(job_id, transition(None, status)[0], seen)
                job, event = None, None
            else:
                job, event = self._move(job_id, status, seen)
        except Exception as exc:
            log.warning("Alerts: store error for job %s, observation dropped: %s", job_id, _one_line(str(exc)))
            return
        results: list[dict] = []
        queued: list[tuple[dict, Any]] = []
        if job is not None and event is not None:
            self._send(job, event, execution, results, queued)
        if counts:
            self._pause_after_failure(job_id, execution, results, queued)
        self._deliver_all(execution, results, queued)

    def _announced(self, item: _Announcement) -> None:
        results: list[dict] = []
        queued: list[tuple[dict, Any]] = []
        self._send(item.job, item.event, item.execution, results, queued)
        self._deliver_all(item.execution, results, queued)

    def _deliver_all(self, execution: dict, results: list[dict], queued: list) -> None:
        """Hand the channel deliveries to their workers; record every result on the execution."""
        if queued:  # the channels' workers add theirs; the last one to finish records them all
            collect = _Collector(len(queued), results, lambda done: self._write_alerts(execution, done))
            for channel, message in queued:
                self._channels.enqueue(channel, message, self._reporter(collect, channel))
        elif results:
            self._write_alerts(execution, results)

    def _write_alerts(self, execution: dict, results: list[dict]) -> None:
        if not execution.get("_id"):
            return  # an event of no execution (a monitor turning late)
        try:
            self._record(execution["_id"], {"alerts": results})
        except Exception as exc:
            log.warning("Alerts: cannot record the alerts of execution %s: %s", execution.get("_id"), exc)

    def _pause_after_failure(self, job_id: str, execution: dict, results: list, queued: list) -> None:
        """The job's failure streak may pause it; the node whose pause applied announces it."""
        try:
            paused = self._pauses.pause_after_failure(job_id)
        except Exception as exc:
            log.warning("Alerts: cannot apply pause_after_failures to job %s: %s", job_id, _one_line(str(exc)))
            return
        if paused is None or not (paused.get("notify") or self._default_channels):
            return
        why = f"{paused['pause_note']}; the last one: {execution.get('error') or execution.get('status')}"
        self._send(paused, PAUSED, {**execution, "error": why}, results, queued)

    def _send(self, job: dict, event: str, execution: dict, results: list, queued: list) -> None:
        """Deliver `event` to the job's e-mail and webhook now (their results into `results`) and
        list the channel deliveries for their own workers in `queued`. `paused` goes everywhere."""
        notify = job.get("notify") or {}
        if event == PAUSED or event in (notify.get("events") or ()):
            recipients = [a for a in notify.get("email") or () if a]
            if recipients:
                results.append(
                    self._deliver(job, event, "email", ", ".join(recipients), self._email, recipients, execution)
                )
            url = notify.get("webhook")
            if url:
                results.append(self._deliver(job, event, "webhook", redact_url(url), self._webhook, url, execution))
        if self._channels is not None:
            channels = self._channels_for(notify, event)
            if channels:
                message = self._channels.message(job, event, execution)
                queued.extend((channel, message) for channel in channels)

    def _channels_for(self, notify: Mapping[str, Any], event: str) -> list[dict]:
        """The channels that receive `event`: the notify's entries listing it (every one for
        `paused`), or, when it names none, the ALERT_CHANNELS default (every event)."""
        entries = notify.get("channels") or []
        if entries:
            ids = [e["id"] for e in entries if event == PAUSED or event in (e.get("events") or ())]
            found = {c["_id"]: c for c in self._ds.channels.find({"_id": {"$in": ids}})} if ids else {}
            return [found[i] for i in ids if i in found]
        if not self._default_channels:
            return []
        ids = [name for name in self._default_channels if is_valid_id(name)]
        found = list(self._ds.channels.find({"_id": {"$in": ids}})) if ids else []
        names = [name for name in self._default_channels if not is_valid_id(name)]
        if names:
            found += list(self._ds.channels.find({"name": {"$in": names}}))
        return list({c["_id"]: c for c in found}.values())

    def _reporter(self, collect: _Collector, channel: dict) -> Callable[[dict], None]:
        return lambda record: collect.add(self.channel_delivered(record, channel))

    def channel_delivered(self, record: dict, channel: dict) -> dict:
        """Count a channel's delivery like an e-mail's; its entry for the execution record."""
        ok = bool(record.get("ok"))
        with self._lock:
            if ok:
                self._sent += 1
            else:
                self._failed += 1
                where = f"{channel.get('kind')} channel {channel.get('name')!r}"
                self._last_failure = f"{record.get('event')} by {where}: {record.get('error')}"
                self._last_failure_at = utcnow()
        return {
            "event": record.get("event"),
            "channel": record.get("kind"),
            "target": channel.get("name"),
            "channel_id": record.get("channel_id"),
            "ok": ok,
            "error": record.get("error") or "",
            "status_code": record.get("status_code"),
            "attempt": record.get("attempt"),
            "at": to_iso(utcnow()),
        }

    def _move(self, job_id: str, status: Any, seen: tuple[datetime, str]) -> tuple[dict | None, str | None]:
        """Apply an outcome to the job's fresh state, in order: (the job as read, the event to send),
        or (None, None) when the job is gone, the outcome is not newer than the last one applied,
        or another node kept winning. Compare-and-set on the state and the marker as read, so
        only one node moves the state, and sends; updated_at is left alone (the scheduler's own
        compare-and-set relies on it)."""
        at, execution_id = seen
        for _ in range(CAS_TRIES):
            job = self._ds.jobs.get(job_id)
            if job is None:
                return None, None
            last_at, last_id = job.get("alert_seen_at"), job.get("alert_seen_id")
            if last_at is not None and (as_utc(last_at), last_id or "") >= seen:
                return None, None  # an older outcome (or this one, already applied): it changes nothing
            before = job.get("alert_state")
            state, event = transition(before, status)
            expected = {"_id": job_id, "alert_state": before, "alert_seen_at": last_at, "alert_seen_id": last_id}
            fields = {"alert_state": state, "alert_seen_at": at, "alert_seen_id": execution_id}
            if self._ds.jobs.update_many(expected, fields) == 1:
                return job, event
        log.warning("Alerts: job %s kept changing under %d tries, observation dropped", job_id, CAS_TRIES)
        return None, None

    def _keep(self, job_id: str, state: str, seen: tuple[datetime, str]) -> None:
        """Set the state of a job that notifies no one, unless a newer outcome was applied: no read,
        usually one write. The marker only grows, so when a condition fails it stays failed."""
        at, execution_id = seen
        fields = {"alert_state": state, "alert_seen_at": at, "alert_seen_id": execution_id}
        for newer in (
            {"alert_seen_at": {"$lt": at}},
            {"alert_seen_at": None},  # none applied yet ...
            {"alert_seen_at": {"$lt": at}},  # ... or one was, just now
            {"alert_seen_at": at, "alert_seen_id": {"$lt": execution_id}},
        ):
            if self._ds.jobs.update_many({"_id": job_id, **newer}, fields):
                return

    def _deliver(self, job: dict, event: str, channel: str, target: str, send, to, execution: dict) -> dict:
        """One channel: send (with retries), count, log a failure; the entry for the execution record."""
        try:
            error = send(job, event, to, execution)
        except Exception as exc:  # whatever happens, it is one failed delivery
            error = f"{type(exc).__name__}: {exc}"
        error = _one_line(error or "")
        ok = not error
        with self._lock:
            if ok:
                self._sent += 1
            else:
                self._failed += 1
                self._last_failure = f"{job.get('name')}: {event} by {channel} to {target}: {error}"
                self._last_failure_at = utcnow()
        if self._metrics is not None:
            self._metrics.alert_delivered(channel, event, ok)
        if not ok:
            log.warning(
                "Alert not delivered: job %r, event %s, %s to %s: %s", job.get("name"), event, channel, target, error
            )
        return {"event": event, "channel": channel, "target": target, "ok": ok, "error": error, "at": to_iso(utcnow())}

    def _retry_wait(self, attempt: int) -> bool:
        """Wait before attempt + 1; False when there is none (last attempt, or stopping)."""
        if attempt >= self._attempts:
            return False
        return not self._abort.wait(self._backoff * 2 ** (attempt - 1))

    def _email(self, job: dict, event: str, recipients: list[str], execution: dict) -> str:
        """ "" when sent, else why not. Retried only when the server could not be reached."""
        subject = f"[Texium] {messages.title(job, event)}"
        body = messages.text(job, event, execution, self._link_base)
        headers = {"X-Texium-Job": str(job.get("name")), "X-Texium-Event": event}
        headers["X-Texium-Execution"] = str(execution.get("_id"))
        attempt = 1
        while True:
            try:
                send_message(self._config, recipients, subject, body, headers=headers, timeout=TIMEOUT)
                return ""
            except MailError as exc:
                if not (exc.transient and self._retry_wait(attempt)):
                    return f"{exc} (attempt {attempt})"
            attempt += 1

    def _webhook(self, job: dict, event: str, url: str, execution: dict) -> str:
        """ "" when a 2xx came back, else why not. Connection errors and 5xx are retried."""
        payload = messages.webhook_payload(job, event, execution, self._link_base)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Texium-Alerts/1",
            "X-Texium-Event": event,
            "X-Texium-Execution": str(execution.get("_id")),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(str(self._secret), body)
        attempt = 1
        while True:
            try:
                answer = http_request(
                    self._policy, "POST", url, body=body, headers=headers, timeout=TIMEOUT, read_limit=1024
                )
            except OutboundRefused as exc:
                return str(exc)
            except ValueError:  # its message would show the URL, password included
                return "not a valid http(s) URL"
            except TimeoutError:
                error = f"timed out after {TIMEOUT:g} s"
            except (OSError, http.client.HTTPException) as exc:
                error = str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
            else:
                if 200 <= answer.status < 300:
                    return ""
                error = f"HTTP {answer.status} {answer.reason}".strip()
                if answer.status < 500:  # a redirect or a client error: trying again changes nothing
                    return f"{error} (attempt {attempt}, not retried)"
            if not self._retry_wait(attempt):
                return f"{error} (attempt {attempt})"
            attempt += 1


@dataclass
class _Announcement:
    job: dict
    event: str
    execution: dict


class _Collector:
    """Gathers the channel deliveries of one observation; the last to finish records them all
    (with the e-mail and webhook results) on the execution, in one write."""

    def __init__(self, expected: int, results: list[dict], done: Callable[[list[dict]], None]):
        self._expected, self._results, self._done = expected, list(results), done
        self._lock = threading.Lock()

    def add(self, entry: dict) -> None:
        with self._lock:
            self._results.append(entry)
            self._expected -= 1
            if self._expected:
                return
        self._done(self._results)


def _seen(execution: dict) -> tuple[datetime, str]:
    """Where an outcome stands in its job's history: (completion time to the millisecond, as the
    store keeps it, execution id to break ties). Without a completion time, now. A `missed`
    record stands at the last occurrence it names: missed occurrences recorded after a newer
    run ended (a run handed back by a server that stopped, found late after its restart) are
    old news, not a new outage."""
    at = execution.get("completed_at")
    if execution.get("status") == "missed":
        at = execution.get("missed_until") or execution.get("scheduled_at") or at
    at = as_utc(at) if isinstance(at, datetime) else utcnow()
    return at.replace(microsecond=at.microsecond // 1000 * 1000), str(execution.get("_id") or "")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
