"""Per-job alerts: when a job's events are worth a message, handed to its channels (channels.py).

A notify's own e-mail and webhook are channels too (records/legacy_notify.py converts them at
start-up, on every write, and here for a job an older node stored), so there is one delivery path.

Each job keeps an `alert_state` ("ok", "failing" or "missed"; missing counts as "ok"). Every
final execution moves it by `transition`; only a change of state can send an alert, so a job
that keeps failing alerts once, and once more when it recovers.

Outcomes are applied in the order they happened, whichever node observes them: the job also
keeps the completion time and execution id of the last outcome applied (`alert_seen_at`,
`alert_seen_id`), and an outcome that is not newer is ignored. The state and that marker are
read fresh from the store and moved together with a compare-and-set on both (re-read and
retried on a conflict), so two nodes sharing a store never both alert for one change, and an
older outcome observed late can neither send an alert nor move the state back.

Which changes are worth a message is the noise rules' to say (noise.py: failure tolerance,
re-alerts while still failing, recovery with the streak, flapping); their fields are moved in
the same compare-and-set. A job still failing with no new run, or one that stopped flapping, is
looked at by `check_due`, one of the node's clock-driven checks (checks.py): an indexed read of
the jobs whose `alert_due_at` has come, and one conditional write on that field decides which node
sends. Every event goes out through `_send`, which records instead of sending while the job is
muted (`mute_until`, `mute_calendars`), whoever emits the event.

A job without `notify` sends nothing, but its state is still kept (the dashboard shows it).
With `keep` (the server passes the recorder's merged job changes) it costs no read and no
write of its own, and the newest outcome each node saw wins; without it, one conditional write
on the marker.

Some events are not changes of state and move nothing: `skipped` (an occurrence the job's
overlap policy skipped; the node whose write ended the record observes it), `too_short` (a
success under min_duration_seconds, with its outcome) and `long_running` (a run still going,
`announce`d by its holder's watchdog and claimed by one conditional write on the execution);
see durations.py. They go out through `_send` like every other event.

Alerts never slow a run down: `observe` only queues, and one daemon thread ("texium-alerts")
reads the store and hands messages to the channels' workers. A delivery failure is logged, counted and recorded on the
execution (`alerts`), and changes nothing else. The message holds the job's name, times and
the first lines of the error (already masked), never its arguments or output.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from texium.core.datastore.base import Datastore, is_valid_id
from texium.core.events import durations, noise
from texium.core.events.channels import Deliveries
from texium.core.metrics import Metrics
from texium.core.records.legacy_notify import is_legacy
from texium.core.timeutil import as_utc, to_iso, utcnow

log = logging.getLogger("texium.alerts")

EVENTS = (
    "failure",
    "recovery",
    "timeout",
    "missed",
    "still_failing",
    "flapping",
    "skipped",
    "long_running",
    "too_short",
    "deadline_missed",
    "adherence_low",
    "late",
)
SKIPPED = "skipped"  # an occurrence the job's overlap policy skipped: listed events only, never ALERT_CHANNELS
PAUSED = "paused"  # the job paused itself (pause_after_failures): sent to every channel, whatever `events` says
MAX_QUEUED = 10_000  # observations waiting; more are dropped (with a warning) rather than grow without end
CAS_TRIES = 10  # compare-and-set attempts on one observation (each lost to another node's change) before giving up
DUE_BATCH = 200  # jobs whose alert_due_at has come, read per check (the earliest first)
transition = noise.transition  # the plain change of state, before the noise rules
_MOVING = noise.MOVING


class Alerts:
    """Watches final executions and sends the alerts the jobs' `notify` asks for."""

    def __init__(
        self,
        datastore: Datastore,
        record: Callable[[str, dict], None],
        metrics: Metrics | None = None,
        keep: Callable[[str, dict], None] | None = None,
        pauses: Any = None,
        channels: Deliveries | None = None,
        default_channels: Sequence[str] = (),
        calendars: Any = None,
        legacy: Callable[[dict], dict | None] | None = None,
    ):
        self._ds = datastore
        # The notify of a job that still holds its own e-mail / webhook (stored by an older node
        # since this one started) with them as channels (records/legacy_notify.py): every alert
        # goes out through channels. None: such a job's e-mail and webhook are not sent.
        self._legacy = legacy
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
        # The firing core's CalendarReader, for mute_calendars (None: only mute_until mutes).
        self._calendars = calendars
        self._record = record
        self._metrics = metrics
        self._queue: queue.Queue = queue.Queue()
        self._abort = threading.Event()  # stop() ran out of time: drop the rest, end waits early
        self._closed = False
        self._lock = threading.Lock()
        self._sent = self._failed = self._muted = 0
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
            status = execution.get("status")
            notifies = bool(job.get("notify") or self._default_channels)
            if status == SKIPPED and job_id and job.get("notify") and not self._closed:
                self._put((job_id, notifies, dict(execution), _seen(execution)))
                return
            if self._closed or not job_id or status not in _MOVING:
                return  # a status that moves no state (cancelled, ...) costs no store read
            counts = self._counts_failures(job, execution)
            if not notifies and self._keep_state is not None and not counts:
                at, execution_id = _seen(execution)
                state = transition("ok", execution["status"])[0]
                if job.get("alert_state") != state:  # as read when the run started: a healthy job costs nothing
                    self._keep_state(job_id, {"alert_state": state, "alert_seen_at": at, "alert_seen_id": execution_id})
                return
            self._put((job_id, notifies, dict(execution), _seen(execution), counts))
        except Exception:
            log.exception("Alerts: cannot queue an observation of job %s", job_id)

    def announce(
        self, job: Mapping[str, Any], event: str, execution: dict, once: str | None = None, reread: bool = True
    ) -> None:
        """Queue `event` about `execution` (a run still going, a deadline passed, a monitor gone
        down) for the alerts thread, which sends it through _send; returns at once and never
        raises. `once` names a field of the execution: only the node whose write sets it from
        null sends (one conditional write), so the event goes out once per execution. `reread`:
        send to the job as read then; False: to `job` as given (a heartbeat monitor acting as
        one: `_id`, `name`, `notify`)."""
        try:
            if not self._closed and (job.get("notify") or self._default_channels):
                self._put(_Announcement(dict(job), event, dict(execution), once, reread))
        except Exception:
            log.exception("Alerts: cannot queue %s of job %s", event, job.get("_id"))

    def long_running_limit(self, job: Mapping[str, Any]) -> tuple[float, str] | None:
        """For the watchdog: (seconds, why) after which a run of `job` is long-running, or None."""
        return durations.long_running_limit(job)

    def running_long(self, job: Mapping[str, Any], record: dict, elapsed: float, limit: tuple[float, str]) -> None:
        """The watchdog saw a run pass its limit: `long_running`, once per run on any node."""
        note = durations.long_running_note(elapsed, limit[1])
        self.announce(job, "long_running", {**record, "status": "running", "error": note}, durations.ALERTED_FIELD)

    def _put(self, item: Any) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            log.warning("Alerts: %d observations queued; dropped one", MAX_QUEUED)
            return
        self._queue.put_nowait(item)

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
                "muted": self._muted,
                "queued": self._queue.qsize(),
                "last_failure": self._last_failure,
                "last_failure_at": self._last_failure_at,
            }

    def stop(self, timeout: float) -> bool:
        """Deliver what is queued for up to `timeout` s, then end the thread; False if time ran out."""
        self._closed = True
        self._queue.put(None)
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        if self._channels is not None:  # what the thread queued on the channels, while time is left
            self._channels.drain(max(0.0, deadline - time.monotonic()))
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
        if status == SKIPPED:
            self._skipped(job_id, execution)
            return
        try:
            if not notifies:  # nothing to send: keep the state without reading the job
                self._keep(job_id, transition(None, status)[0], seen)
                job, step = None, None
            else:
                job, step = self._move(job_id, status, seen)
        except Exception as exc:
            log.warning("Alerts: store error for job %s, observation dropped: %s", job_id, _one_line(str(exc)))
            return
        results: list[dict] = []
        queued: list[tuple[dict, Any]] = []
        if job is not None and step is not None and step.event is not None:
            self._send(job, step.event, {**execution, **step.facts}, results, queued)
        if counts:
            self._pause_after_failure(job_id, execution, results, queued)
        if status == "completed" and notifies:
            self._completed(job_id, job, execution, results, queued)
        self._dispatch(execution, results, queued)

    def _dispatch(self, execution: dict, results: list[dict], queued: list[tuple[dict, Any]]) -> None:
        """Hand the channel deliveries to their workers; record every result on the execution."""
        if queued:  # the channels' workers add theirs; the last one to finish records them all
            collect = _Collector(len(queued), results, lambda done: self._write_alerts(execution, done))
            for channel, message in queued:
                self._channels.enqueue(channel, message, self._reporter(collect, channel, message.job.get("name")))
        elif results:
            self._write_alerts(execution, results)

    def _announced(self, item: _Announcement) -> None:
        """An announced event: claimed by its conditional write (if `once`), then sent."""
        execution = item.execution
        if item.once:
            when = utcnow()
            claim = {"_id": execution["_id"], item.once: None}
            if self._ds.executions.update_many(claim, {item.once: when}) != 1:
                return  # another node (or an earlier call) sent it
            execution[item.once] = when
        job = self._ds.jobs.get(item.job["_id"]) if item.reread else item.job
        if job is None:
            return
        results: list[dict] = []
        queued: list[tuple[dict, Any]] = []
        self._send(job, item.event, execution, results, queued)
        self._dispatch(execution, results, queued)

    def _skipped(self, job_id: str, execution: dict) -> None:
        """A skipped occurrence: `skipped` to the job (as read now) where its notify lists it.
        One node ends each skipped record (a conditional write), and only it observes it."""
        job = self._ds.jobs.get(job_id)
        if job is not None:
            results: list[dict] = []
            queued: list[tuple[dict, Any]] = []
            self._send(job, SKIPPED, execution, results, queued)
            self._dispatch(execution, results, queued)

    def _completed(self, job_id: str, job: dict | None, execution: dict, results: list, queued: list) -> None:
        """A success: `too_short` under min_duration_seconds, and the p95 the anomaly rule
        compares runs with kept on the job (one read of at most 50 records, one write)."""
        job = job or self._ds.jobs.get(job_id)
        if job is None:
            return
        why = durations.too_short(job, execution)
        if why:
            self._send(job, "too_short", {**execution, "error": why}, results, queued)
        if job.get("duration_anomaly_factor"):
            p95_ms, runs = durations.durations_p95(self._ds, job_id)
            self._ds.jobs.update_many({"_id": job_id}, {"duration_p95_ms": p95_ms, "duration_p95_runs": runs})

    def check_due(self, now: datetime) -> None:
        """Send what is due with no new outcome (`still_failing` again, the end of flapping) for
        the jobs whose alert_due_at has come: an indexed read of those only. The node whose
        conditional write on the job's alert fields (as read) applies sends; another node's
        write, or a new outcome meanwhile, makes it skip the job."""
        for job in self._ds.jobs.find({"alert_due_at": {"$lte": now}}, sort=[("alert_due_at", 1)], limit=DUE_BATCH):
            if self._abort.is_set():
                return
            step = noise.tick(job, now)
            expected = {"_id": job["_id"], **{name: job.get(name) for name in _CAS_FIELDS}}
            if self._ds.jobs.update_many(expected, step.fields) != 1 or step.event is None:
                continue
            if not (job.get("notify") or self._default_channels):
                continue
            last = self._ds.executions.get(job["alert_seen_id"]) if job.get("alert_seen_id") else None
            execution = last or {"_id": None, "job_id": job["_id"], "status": job.get("alert_state")}
            results: list[dict] = []  # _write_alerts keeps the run's earlier alerts
            queued: list[tuple[dict, Any]] = []
            self._send(job, step.event, {**execution, **step.facts}, results, queued)
            self._dispatch(execution, results, queued)

    def _write_alerts(self, execution: dict, results: list[dict]) -> None:
        """The results join what the execution already holds (a long_running alert sent while it ran)."""
        if not execution.get("_id"):  # a re-alert of a job whose last run was deleted: nothing to record on
            return
        try:
            earlier = (self._ds.executions.get(execution["_id"]) or {}).get("alerts") or []
        except Exception:  # the store: the results alone, rather than none
            earlier = []
        try:
            self._record(execution["_id"], {"alerts": [*earlier, *results]})
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
        """List the channel deliveries of `event` for their own workers in `queued` (`results`:
        entries already known, for the execution record). `paused` goes everywhere. A notify's own
        e-mail and webhook are channels too (`legacy`). The one way out for every event of a job:
        while the job is muted, each destination is recorded (`muted: true`) and counted instead."""
        notify = job.get("notify") or {}
        if self._legacy is not None and is_legacy(notify):
            notify = self._legacy(job) or {}
        reason = noise.mute_reason(job, utcnow(), self._calendars)
        if reason is not None:
            results.extend(self._muted_entries(job, notify, event, reason))
            return
        if self._channels is not None:
            channels = self._channels_for(notify, event)
            if channels:
                message = self._channels.message(job, event, execution)
                queued.extend((channel, message) for channel in channels)

    def _muted_entries(self, job: dict, notify: Mapping[str, Any], event: str, reason: str) -> list[dict]:
        """The channels `event` would have gone to, each recorded as muted, and counted."""
        targets: list[tuple[str, str, str | None]] = []
        if self._channels is not None:
            targets += [(c.get("kind"), c.get("name"), c["_id"]) for c in self._channels_for(notify, event)]
        with self._lock:
            self._muted += len(targets)
        entries = []
        for channel, target, channel_id in targets:
            if self._metrics is not None:
                self._metrics.alert_muted(channel, event)
            entry = {"event": event, "channel": channel, "target": target, "ok": False, "muted": True}
            entry.update({"error": reason, "at": to_iso(utcnow())})
            if channel_id:
                entry["channel_id"] = channel_id
            entries.append(entry)
        log.info("Alert muted: job %r, event %s (%s)", job.get("name"), event, reason)
        return entries

    def _channels_for(self, notify: Mapping[str, Any], event: str) -> list[dict]:
        """The channels that receive `event`: the notify's entries listing it (every one for
        `paused`), or, when it names none, the ALERT_CHANNELS default (every event)."""
        entries = notify.get("channels") or []
        if entries:
            ids = [e["id"] for e in entries if event == PAUSED or event in (e.get("events") or ())]
            found = {c["_id"]: c for c in self._ds.channels.find({"_id": {"$in": ids}})} if ids else {}
            return [found[i] for i in ids if i in found]
        if not self._default_channels or event == SKIPPED:
            return []
        ids = [name for name in self._default_channels if is_valid_id(name)]
        found = list(self._ds.channels.find({"_id": {"$in": ids}})) if ids else []
        names = [name for name in self._default_channels if not is_valid_id(name)]
        if names:
            found += list(self._ds.channels.find({"name": {"$in": names}}))
        return list({c["_id"]: c for c in found}.values())

    def _reporter(self, collect: _Collector, channel: dict, job_name: Any = None) -> Callable[[dict], None]:
        return lambda record: collect.add(self.channel_delivered(record, channel, job_name))

    def channel_delivered(self, record: dict, channel: dict, job_name: Any = None) -> dict:
        """Count a channel's delivery like an e-mail's; its entry for the execution record.
        Health's last failure names the job (`job_name`) when there is one."""
        ok = bool(record.get("ok"))
        held = record.get("status") == "held"  # in the channel's digest (events/digests.py): not a failure
        with self._lock:
            if ok:
                self._sent += 1
            elif not held:
                self._failed += 1
                where = f"{channel.get('kind')} channel {channel.get('name')!r}"
                failure = f"{record.get('event')} by {where}: {record.get('error')}"
                self._last_failure = f"{job_name}: {failure}" if job_name else failure
                self._last_failure_at = utcnow()
        return {
            "event": record.get("event"),
            "channel": record.get("kind"),
            "target": channel.get("name"),
            "channel_id": record.get("channel_id"),
            "ok": ok,
            "status": record.get("status"),
            "error": record.get("error") or "",
            "status_code": record.get("status_code"),
            "attempt": record.get("attempt"),
            "at": to_iso(utcnow()),
        }

    def _move(self, job_id: str, status: Any, seen: tuple[datetime, str]) -> tuple[dict | None, noise.Step | None]:
        """Apply an outcome to the job's fresh state, in order: (the job as read, the noise rules'
        step: its fields and the event to send), or (None, None) when the job is gone, the outcome
        is not newer than the last one applied, or another node kept winning. Compare-and-set on
        the state, the marker and alert_due_at as read (check_due moves that one), so only one
        node moves the state, and sends; updated_at is left alone (the scheduler's own
        compare-and-set relies on it)."""
        at, execution_id = seen
        for _ in range(CAS_TRIES):
            job = self._ds.jobs.get(job_id)
            if job is None:
                return None, None
            last_at, last_id = job.get("alert_seen_at"), job.get("alert_seen_id")
            if last_at is not None and (as_utc(last_at), last_id or "") >= seen:
                return None, None  # an older outcome (or this one, already applied): it changes nothing
            step = noise.advance(job, status, at, utcnow())
            expected = {"_id": job_id, **{name: job.get(name) for name in _CAS_FIELDS}}
            fields = {**step.fields, "alert_seen_at": at, "alert_seen_id": execution_id}
            if self._ds.jobs.update_many(expected, fields) == 1:
                return job, step
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


@dataclass
class _Announcement:
    """An event announced by another thread (announce), for the alerts thread."""

    job: dict
    event: str
    execution: dict
    once: str | None = None
    reread: bool = True


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


# What the compare-and-sets expect as read: every outcome moves the marker, every due check
# moves alert_due_at (from a time already past to a later one, or to null).
_CAS_FIELDS = ("alert_state", "alert_seen_at", "alert_seen_id", "alert_due_at")


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
