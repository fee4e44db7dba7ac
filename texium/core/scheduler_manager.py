"""Owns the scheduler and every change to a job's schedule.

Each change writes the job document (the schedule itself) with a new `updated_at`, records an
audit entry, and wakes the scheduler so the new next_run_time takes effect at once. A pass
that read the document before the change sees `updated_at` moved and leaves it alone.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from texium.core import figures, parameters
from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import Conflict, NotFound, ValidationError
from texium.core.events import adherence, deadlines
from texium.core.events.chains import Chains
from texium.core.events.checks import PeriodicChecks
from texium.core.job import JobError
from texium.core.jsontext import Raw
from texium.core.metrics import Metrics
from texium.core.records.audit import AuditLog
from texium.core.records.calendars import jobs_using
from texium.core.records.chains import FAN_IN, KINDS, ChainLinks, with_defaults
from texium.core.records.executions import find_execution
from texium.core.records.legacy_notify import LegacyNotify, is_legacy
from texium.core.records.listing import Page, list_page
from texium.core.records.users import owned_by
from texium.core.registry import JobRegistry
from texium.core.scheduling import cron
from texium.core.scheduling.backfill import Backfills, backfill_request
from texium.core.scheduling.dispatch import RETRY_TRIGGERS, Dispatcher
from texium.core.scheduling.jobstore import DocumentJobStore, job_schedule
from texium.core.scheduling.nodes import NodeRegistry
from texium.core.scheduling.occurrences import RUN_NOW
from texium.core.scheduling.pausing import Pauses, describe_pause, pause_fields, resume_fields
from texium.core.scheduling.preview import job_preview
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.scheduler import TexiumScheduler
from texium.core.scheduling.spread import EXAMPLE_SEED
from texium.core.scheduling.watchdog import Watchdog
from texium.core.scheduling.windows import CalendarReader, JobTimes
from texium.core.security import secret_args
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import parse_iso, to_iso, utcnow
from texium.core.validation import FORMATS, request_schema, require_id, validate_body

log = logging.getLogger("texium.scheduler")
SCHEDULE_FIELDS = (*cron.CRON_FIELDS, "timezone")
# The fields (cron fields included), their types, limits and defaults: components/schemas in
# texium/openapi.yaml. Whether the cron fields parse is cron.normalize's to say.
JOB_CREATE, JOB_UPDATE = request_schema("JobCreate"), request_schema("JobUpdate")
BACKFILL = request_schema("Backfill")  # {from, to, dry_run, max_runs}
RUN_NOW_BODY = request_schema("RunNow")  # {parameters, chain}
PAUSE = request_schema("Pause")  # a job's pause, and the maintenance switch: {note, until}
# Never served. Written as the document's last member, so the embedded store can cut it off the
# stored text instead of parsing it (an update re-sets it in place).
HIDDEN = (secret_args.FIELD,)
ARGUMENT_FIELDS = ("pub_args", "pub_kwargs")
WINDOW_FIELDS = ("start_at", "end_at", "run_at")  # ISO 8601 texts in a body, stored as times
# What the scheduler keeps on a job for max_runs; a user's enable or a new max_runs starts again.
MAX_RUNS_STATE = {"run_count": 0, "disabled_reason": None, "final_run_at": None}


def busy_words(pool_size: int, waited: float) -> str:
    return (
        f"All {pool_size} job threads are busy and a due run has waited {waited:.0f} s for one "
        "(raise THREAD_POOL_SIZE, add a node, or look for runs that hang)"
    )


def _schedule(body: dict) -> dict:
    return {k: body[k] for k in SCHEDULE_FIELDS if k in body}


def dst_policy_of(body: dict) -> None:
    """Checks a body's `dst_policy` before its schema does, so a bad value is named
    `dst_policy.<key>`, and keeps only the keys given (null when none is)."""
    if "dst_policy" in body:
        body["dst_policy"] = cron.check_dst_policy(body["dst_policy"])


def clean_notify(notify: dict | None) -> dict | None:
    """`notify` with its addresses normalised; the rules its schema cannot say (400 otherwise)."""
    if notify is None:
        return None
    emails = []
    for index, address in enumerate(notify.get("email") or []):
        try:
            emails.append(FORMATS["email"](address.strip()))
        except ValueError:
            why = f"{address!r} is not a valid email address"
            raise ValidationError(f"Invalid field notify.email[{index}]: {why}") from None
    webhook = (notify.get("webhook") or "").strip() or None
    if webhook is not None:
        try:
            FORMATS["http-url"](webhook)
        except ValueError:
            raise ValidationError("Invalid field notify.webhook: must be an http(s) URL") from None
        if secret_args.has_url_password(webhook):
            raise ValidationError(
                "Invalid field notify.webhook: no password in the URL (it would be stored in clear); "
                "the server signs alerts with ALERT_WEBHOOK_SECRET instead"
            )
    channels = notify.get("channels") or []
    seen = [entry["id"] for entry in channels]
    for index, channel_id in enumerate(seen):
        if channel_id in seen[:index]:
            raise ValidationError(f"Invalid field notify.channels[{index}].id: {channel_id} is listed twice")
    if not emails and webhook is None and not channels:
        raise ValidationError("Invalid field notify: give email recipients, a webhook or channels (or null for none)")
    if (emails or webhook is not None) and not notify.get("events"):
        raise ValidationError("Invalid field notify.events: required with email or webhook")
    clean = {"email": list(dict.fromkeys(emails)), "webhook": webhook, "events": notify.get("events") or []}
    if channels:
        clean["channels"] = [{"id": entry["id"], "events": entry["events"]} for entry in channels]
    return clean


def pause_request(body: dict | None) -> tuple[str | None, datetime | None]:
    """(note, until) of a pause's body (empty: a pause without either); `until` must be ahead."""
    fields = validate_body(body or {}, PAUSE, partial=True)
    until = fields.get("until")
    if until is not None:
        until = parse_iso(until)
        if until <= utcnow():
            raise ValidationError(f"Invalid field until: {to_iso(until)} is not in the future")
    return fields.get("note") or None, until


class SchedulerManager:
    def __init__(
        self,
        datastore: Datastore,
        registry: JobRegistry,
        dispatcher: Dispatcher,
        audit: AuditLog,
        recorder: Recorder,
        nodes: NodeRegistry,
        timezone: str = "UTC",
        misfire_grace_time: float = 3600,
        poll_seconds: float = 1.0,
        retry_seconds: float = 1.0,
        secrets: SecretBox | None = None,
        metrics: Metrics | None = None,
        busy_warning_seconds: float = 60.0,
        busy_unhealthy_seconds: float = 300.0,
        pauses: Pauses | None = None,
        legacy_notify: LegacyNotify | None = None,
        checks: PeriodicChecks | None = None,
    ):
        self._ds = datastore
        # Turns a notify's own e-mail and webhook into channels (at writes and at start-up).
        self._legacy_notify = legacy_notify if legacy_notify is not None else LegacyNotify(datastore)
        self._checks = checks  # the clock-driven alert checks (deadlines, adherence), started with firing
        self.pauses = pauses if pauses is not None else Pauses(datastore, audit.record)
        # Every worker busy while a due run waits this long: a health warning, then a problem (503).
        self._busy_warning, self._busy_unhealthy = busy_warning_seconds, busy_unhealthy_seconds
        # Encrypts secret job arguments; by default the runner's, which decrypts them for runs.
        self._secrets = secrets if secrets is not None else dispatcher.runner.secrets
        self._registry = registry
        self._dispatcher = dispatcher
        self._claims = dispatcher.claims
        self._audit = audit
        self._recorder = recorder
        self.nodes = nodes
        nodes.on_buried = dispatcher.hand_back_all
        self._timezone = timezone
        self._poll = poll_seconds
        self._store = DocumentJobStore(datastore.jobs)
        self._watchdog = Watchdog(datastore, dispatcher, recorder, dispatcher.processes)
        self._backfills = Backfills(datastore, dispatcher.claims, dispatcher.limit_of)
        self._scheduler = TexiumScheduler(
            datastore,
            self._store,
            dispatcher,
            dispatcher.claims,
            misfire_grace_time,
            poll_seconds=poll_seconds,
            retry_seconds=retry_seconds,
            metrics=metrics if metrics is not None else dispatcher.metrics,
            pauses=self.pauses,
            on_job_event=lambda job, event, description: audit.record(job, event, "scheduler", description),
            backfills=self._backfills,
        )
        self._calendars = CalendarReader(datastore)
        self.links = ChainLinks(datastore)
        self.chains = Chains(
            datastore,
            self.links,
            dispatcher,
            self._secrets,
            cancel_started_by=lambda execution_id: self._cancel_started_by(execution_id, "cancel_downstream"),
        )
        dispatcher.chains = self.chains
        if checks is not None:
            checks.add("chain", self.chains.check_due)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> list[dict]:
        """Join the store's nodes (reclaiming what dead ones held), then start firing; returns
        the other live nodes."""
        self._dispatcher.reap_stale_scripts()
        self.seal_stored_secrets()
        self.migrate_legacy_notify()
        others = self.nodes.start()
        self._watchdog.start()
        self._scheduler.start()  # starts the dispatcher too (its executor)
        if self._checks is not None:
            self._checks.start()
        return others

    def shutdown(self, grace_seconds: float) -> int:
        """Stop firing, hand back what has not started, wait for runs in flight, write every
        record; returns how many runs did not finish."""
        self._dispatcher.closing = True
        if self._checks is not None:
            self._checks.stop()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        unfinished = self._dispatcher.close(grace_seconds)
        self._watchdog.stop()
        if self._dispatcher.alerts is not None:  # before the recorder: what it sent is written down
            self._dispatcher.alerts.stop(timeout=5.0)
        self.chains.stop()  # what it has not settled, any node's check settles
        self._recorder.stop(timeout=max(5.0, grace_seconds))
        self.nodes.stop()
        return unfinished

    @property
    def running(self) -> bool:
        thread = getattr(self._scheduler, "_thread", None)
        return self._scheduler.running and thread is not None and thread.is_alive()

    def health(self, overdue_after: float = 5.0) -> list[str]:
        """What is wrong, in words; empty when the scheduler is firing. Blocking (reads the store)."""
        if not self.running:
            return ["Scheduler is not running"]
        problems = []
        try:
            self._ds.ping()
        except Exception as exc:
            problems.append(f"Datastore is not answering: {getattr(exc, 'detail', exc)}")
        state, now = self._scheduler.state_of_pass, utcnow()
        if state.store_error:
            problems.append(
                f"Scheduler cannot read its store since {to_iso(state.store_error_since)}: {state.store_error}"
            )
        elif state.last_pass_at is not None and (now - state.last_pass_at).total_seconds() > max(5.0, 3 * self._poll):
            problems.append(f"Scheduler has not completed a pass since {to_iso(state.last_pass_at)}")
        if not problems:
            try:
                due = self._ds.jobs.find_one({"next_run_time": {"$ne": None}}, sort=[("next_run_time", 1)])
            except Exception as exc:
                due = None
                problems.append(f"Datastore is not answering: {getattr(exc, 'detail', exc)}")
            if (
                due is not None
                and isinstance(due["next_run_time"], datetime)
                and (now - due["next_run_time"]).total_seconds() > overdue_after
            ):
                late = (now - due["next_run_time"]).total_seconds()
                problems.append(f"Job {due['_id']} ({due.get('name')}) is overdue by {late:.0f} s: nothing is firing")
        waited = self._dispatcher.oldest_wait()
        if waited > self._busy_unhealthy:
            problems.append(busy_words(self._dispatcher.pool_size, waited))
        lingering = self._dispatcher.lingering
        if lingering >= self._dispatcher.pool_size:
            problems.append(
                f"All {lingering} job threads are held by runs that did not stop after their timeout or cancel: "
                "nothing can run (restart this node)"
            )
        if self._recorder.failing_since is not None:
            problems.append(
                f"{self._recorder.pending} execution updates waiting to be written since "
                f"{to_iso(self._recorder.failing_since)}: {self._recorder.last_error}"
            )
        return problems

    def health_warnings(self) -> list[str]:
        """What may soon be wrong, in words: every worker busy while a due run has waited over
        a minute (a health problem once it lasts five)."""
        waited = self._dispatcher.oldest_wait()
        if self._busy_warning < waited <= self._busy_unhealthy:
            return [busy_words(self._dispatcher.pool_size, waited)]
        return []

    def health_details(self) -> dict:
        state = self._scheduler.state_of_pass
        me = self.nodes.identity
        return {
            "node": {
                "node_id": me.node_id,
                "hostname": me.hostname,
                "pid": me.pid,
                "peers_alive": self.nodes.peers_alive,
                "last_heartbeat": self.nodes.last_beat,
            },
            "last_pass_at": state.last_pass_at,
            "last_pass_ms": round(state.last_pass_ms, 2),
            "missed_since_start": state.missed_total,
            "pending_records": self._recorder.pending,
            "lingering_threads": self._dispatcher.lingering,
            "queued_runs": self._dispatcher.queued,
            "alerts": self._dispatcher.alerts.stats() if self._dispatcher.alerts is not None else None,
        }

    def _wake(self, next_run_time: datetime | None) -> None:
        """Wake the scheduler if this change is due before it would wake anyway (a pause or a
        delete never needs it: the pass simply finds nothing)."""
        if next_run_time is not None and self._scheduler.running and self._scheduler.wakes_after(next_run_time):
            self._scheduler.wakeup()

    # -- reading -----------------------------------------------------------------------
    def get(self, job_id: str) -> dict:
        doc = self._ds.jobs.get(require_id(job_id, "job_id"))
        if doc is None:
            raise NotFound("Job not found")
        return doc

    def get_json(self, job_id: str) -> Raw:
        """The job as clients see it (JSON text)."""
        doc = self._ds.jobs.get_json(require_id(job_id, "job_id"), hidden=HIDDEN)
        if doc is None:
            raise NotFound("Job not found")
        return doc

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        return list_page(self._ds.jobs, owned_by(self._ds, user_id), limit, offset, hidden=HIDDEN)

    # -- secret arguments --------------------------------------------------------------
    def _seal(self, job: dict, previous: dict | None = None) -> tuple[dict, dict, dict]:
        """(masked pub_args and pub_kwargs plus FIELD, the secrets before, the secrets after) for
        `job` (a document with the new values; `previous` the document as stored). "***" where a
        value was stored keeps it, while the secrets' destination stays the same."""
        previous_token = (previous or {}).get(secret_args.FIELD)
        moved = self._destination_moved(previous, job) if previous_token else None
        try:
            before = secret_args.decrypt(previous_token, self._secrets)
        except secret_args.SecretsUnavailable:
            before = None  # only a "***" that needs them fails: new values can still be given
        declared = self._registry.secret_arguments(job.get("job_class_string", ""))
        try:
            pub_args, pub_kwargs, after = secret_args.seal(
                job.get("pub_args") or [], job.get("pub_kwargs") or {}, declared, before, moved
            )
        except ValidationError:
            if before is None and previous_token:
                raise ValidationError(
                    "The job's stored secret arguments cannot be decrypted with this server's SECRET_KEY: "
                    "send their values again instead of ***"
                ) from None
            raise
        if after == before and previous_token:
            token = previous_token  # unchanged: no new ciphertext
        else:
            token = secret_args.encrypt(after, self._secrets)
        return {"pub_args": pub_args, "pub_kwargs": pub_kwargs, secret_args.FIELD: token}, before or {}, after

    def _destination_moved(self, previous: dict, job: dict) -> str | None:
        """The argument naming where the secrets go, when its scheme, host or port changed from
        `previous` to `job` (each read with its own class's `secret_destination`); else None."""
        sides = []
        for doc in (previous, job):
            pattern = self._registry.secret_destination(doc.get("job_class_string", ""))
            sides.append((pattern, secret_args.destination(doc.get("pub_args"), doc.get("pub_kwargs"), pattern)))
        (old_pattern, old), (new_pattern, new) = sides
        if old == new:
            return None
        return secret_args.show_pattern(new_pattern or old_pattern)

    def _masked(self, doc: dict) -> dict:
        """The arguments of a document stored without FIELD as they are shown once sealed."""
        declared = self._registry.secret_arguments(doc.get("job_class_string", ""))
        try:
            pub_args, pub_kwargs, _ = secret_args.seal(doc.get("pub_args") or [], doc.get("pub_kwargs") or {}, declared)
        except ValidationError:
            return {k: secret_args.MASK for k in ARGUMENT_FIELDS}
        return {"pub_args": pub_args, "pub_kwargs": pub_kwargs}

    def seal_stored_secrets(self) -> int:
        """Seal the jobs stored before secret arguments were (or without a key): their secret
        values move into FIELD, "***" takes their place. Returns how many jobs held any."""
        if self._secrets is None:
            return 0
        sealed = 0
        try:
            with self._ds.batch():
                for doc in self._ds.jobs.find({secret_args.FIELD: None}):
                    try:
                        fields, _, after = self._seal(doc)
                    except Exception as exc:  # e.g. a "***" that stands for nothing: left as it is
                        log.warning("Job %s: its arguments cannot be sealed: %s", doc["_id"], exc)
                        continue
                    unchanged = {"_id": doc["_id"], "updated_at": doc.get("updated_at"), secret_args.FIELD: None}
                    if self._ds.jobs.update_many(unchanged, fields) and after:
                        sealed += 1
        except Exception as exc:  # the store is down: the next start tries again
            log.warning("Could not seal the secret arguments of stored jobs: %s", getattr(exc, "detail", exc))
            return 0
        if sealed:
            log.warning("Sealed the secret arguments of %d stored jobs (now encrypted, shown as ***)", sealed)
        return sealed

    def migrate_legacy_notify(self) -> int:
        """Move the e-mail and webhook of stored jobs' notify into channels (LegacyNotify), each
        job by compare-and-set on its `updated_at` with an audit entry: on several nodes starting
        at once, one moves each job. Returns how many jobs this node moved."""
        moved = 0
        try:
            for doc in self._ds.jobs.find({"notify": {"$ne": None}}):
                for _ in range(3):  # re-read when the job changed meanwhile
                    if doc is None or not is_legacy(doc.get("notify")):
                        break
                    try:
                        conversion = self._legacy_notify.convert(doc["notify"], doc.get("user_id") or "", enforce=False)
                    except Exception as exc:
                        log.warning("Job %s: its notify cannot be moved to channels: %s", doc["_id"], exc)
                        break
                    if conversion.notify == doc["notify"]:
                        break  # nothing it can move (a webhook URL with a password)
                    version = doc.get("updated_at")
                    now = utcnow()
                    if isinstance(version, datetime):
                        now = max(now, version + timedelta(milliseconds=1))
                    with self._ds.batch():
                        if self._ds.jobs.update_many(
                            {"_id": doc["_id"], "updated_at": version}, {"notify": conversion.notify, "updated_at": now}
                        ):
                            self._audit.record(doc, "updated", "scheduler", conversion.summary)
                            moved += 1
                            break
                    doc = self._ds.jobs.get(doc["_id"])
        except Exception as exc:  # the store is down: the next start tries again
            log.warning("Could not move the notify of stored jobs to channels: %s", getattr(exc, "detail", exc))
        if moved:
            log.warning("Moved the notify e-mail / webhook of %d stored jobs to channels", moved)
        return moved

    def _convert_notify(self, notify: dict | None, owner_id: str) -> dict | None:
        """A request's notify with its e-mail and webhook as channels of the job's owner."""
        return self._legacy_notify.convert(notify, owner_id).notify

    # -- changing ----------------------------------------------------------------------
    def _next_run(self, doc: dict, now: datetime) -> datetime | None:
        if not doc.get("is_enabled", True) or doc.get("is_paused"):
            return None
        return JobTimes(doc, self._calendars.blackouts_of(doc)).next_after(now)

    def _window(self, doc: dict, changes: dict, now: datetime, schedule: dict) -> None:
        """The window fields of `changes` (over `doc`, as stored) as times, checked: end after
        start; a one-off `run_at` in the future and with no cron fields of its own (its cron
        fields are made from it, so descriptions and previews show it). `schedule`: the cron
        fields and time zone the request gave."""
        cron_given = any(name in schedule for name in cron.CRON_FIELDS)
        for name in WINDOW_FIELDS:
            if isinstance(changes.get(name), str):
                changes[name] = parse_iso(changes[name])
        merged = {**doc, **changes}
        start, end = merged.get("start_at"), merged.get("end_at")
        if isinstance(start, datetime) and isinstance(end, datetime) and end <= start:
            raise ValidationError("Invalid field end_at: must be after start_at")
        run_at = changes.get("run_at")
        if run_at is None:
            if merged.get("run_at") is not None and cron_given:
                raise ValidationError(
                    "Invalid field run_at: a one-off job has no cron fields (set run_at to null to give it a schedule)"
                )
            return
        if cron_given:
            raise ValidationError("Invalid field run_at: give either run_at or cron fields, not both")
        run_at = changes["run_at"] = run_at.replace(microsecond=0)
        if run_at <= now:
            raise ValidationError(f"Invalid field run_at: {to_iso(run_at)} is not in the future")
        zone = changes.get("timezone") or doc.get("timezone") or self._timezone
        local = run_at.astimezone(ZoneInfo(cron.normalize({}, zone)["timezone"]))
        moment = {"second": local.second, "minute": local.minute, "hour": local.hour}
        moment.update(day_of_month=local.day, month=local.month, day_of_week="*", week="*")
        changes.update(cron.normalize({k: str(v) for k, v in moment.items()}, zone))

    def _deadline(self, doc: dict, changes: dict, now: datetime) -> None:
        """A `deadline` given: checked (its zone defaults to the job's) and its first instant to
        judge set; the past is not judged. Unchanged, the judging goes on where it stands."""
        if "deadline" not in changes:
            return
        zone = changes.get("timezone") or doc.get("timezone") or self._timezone
        changes["deadline"] = deadlines.check_deadline(changes["deadline"], zone)
        if changes["deadline"] != doc.get("deadline") or "deadline_due_at" not in doc:
            changes.update(deadlines.deadline_fields(changes["deadline"], now))

    @staticmethod
    def _adherence(doc: dict, changes: dict, now: datetime) -> None:
        """An `adherence_target` or `adherence_seconds` given: the figures are computed at once
        (a job given a target starts not low; one without has no adherence state)."""
        if "adherence_target" not in changes and "adherence_seconds" not in changes:
            return
        if changes.get("adherence_target", doc.get("adherence_target")) is None:
            changes.update(adherence.adherence_fields({}, now))
            return
        changes["adherence_due_at"] = now
        if doc.get("adherence_due_at") is None:
            changes["adherence_low"] = False

    def _check_calendars(self, doc: dict) -> None:
        ids = doc.get("exclude_calendars") or []
        self._check_usable(doc, self._ds.calendars, ids, "exclude_calendars[{}]", "calendar")

    def _check_mutes(self, doc: dict, changes: dict) -> None:
        """The alert mutes of `changes` (over `doc`, as stored): mute_until as a time, and
        mute_calendars the job's owner may use."""
        if isinstance(changes.get("mute_until"), str):
            changes["mute_until"] = parse_iso(changes["mute_until"])
        if "mute_calendars" in changes or "user_id" in changes:
            merged = {**doc, **changes}
            ids = merged.get("mute_calendars") or []
            self._check_usable(merged, self._ds.calendars, ids, "mute_calendars[{}]", "calendar")

    def _check_channels(self, doc: dict) -> None:
        ids = [entry["id"] for entry in (doc.get("notify") or {}).get("channels") or []]
        self._check_usable(doc, self._ds.channels, ids, "notify.channels[{}].id", "channel")

    def _check_usable(self, doc: dict, collection, ids: list[str], field: str, what: str) -> None:
        """Every calendar or channel the job names exists and its owner may use it (theirs, or any
        for an admin); one not theirs is reported as missing, as a GET of it would be."""
        if not ids:
            return
        found = {d["_id"]: d for d in collection.find({"_id": {"$in": list(ids)}})}
        owner = self._ds.users.get(doc.get("user_id") or "")
        admin = owner is not None and owner.get("role") == "admin"
        for index, named in enumerate(ids):
            record = found.get(named)
            if record is None or not (admin or record.get("user_id") == doc.get("user_id")):
                raise ValidationError(f"Invalid field {field.format(index)}: no {what} with id {named}")

    def _is_admin(self, user_id: str) -> bool:
        user = self._ds.users.get(user_id)
        return bool(user) and user.get("role") == "admin"

    def _check_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def _owner_still_there(self, job_id: str, user_id: str) -> None:
        """Checked again after the write: a user deleted meanwhile takes the job with it.
        UserService.delete removes the user first and cascades after, so whichever of the two
        goes second sees the other, and no job outlives its owner (on any store)."""
        if self._ds.users.get(user_id) is None:
            self._ds.jobs.delete(job_id)
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def _check_owner(self, job: dict) -> None:
        """The job's owner may use its arguments (JobBase.check_owner), else a 400 saying why."""
        try:
            self._dispatcher.runner.check_owner(job)
        except (JobError, secret_args.SecretsUnavailable) as exc:
            raise ValidationError(f"Invalid field pub_args: {exc}") from None

    def create(self, body: dict, actor: str) -> tuple[str, str]:
        schedule = _schedule(body)
        dst_policy_of(body)
        doc = validate_body(body, JOB_CREATE)
        doc["job_class_string"] = self._registry.canonical(doc["job_class_string"])
        doc["notify"] = clean_notify(doc["notify"])
        doc[FAN_IN] = with_defaults(doc[FAN_IN])
        doc["_id"] = new_id()  # before the schedule: `H` and jitter are derived from it
        doc.update(cron.normalize(schedule, self._timezone, doc["_id"]))
        now = utcnow()
        self._deadline({}, doc, now)
        self._adherence({}, doc, now)
        self._window({}, doc, now, schedule)
        self._check_user(doc["user_id"])
        self._check_calendars(doc)
        doc["notify"] = self._convert_notify(doc["notify"], doc["user_id"])
        self._check_mutes({}, doc)
        parameters.check_declaration(doc.get("parameters"))
        self._check_channels(doc)
        self.links.check(doc, lambda: self._is_admin(doc["user_id"]))
        doc.update(
            **MAX_RUNS_STATE,
            excluded_runs=0,
            is_paused=False,
            created_at=now,
            updated_at=now,
            last_run_time=None,
            total_executions=0,
            schedule_error=None,
            alert_state=None,
            claimed_by=None,
            last_claim=None,
            **dict.fromkeys(("pause_note", "paused_until", "paused_at", "paused_by", "resumed_at")),
        )
        doc["next_run_time"] = self._next_run(doc, now)
        sealed, _, _ = self._seal(doc)
        doc.update(sealed)
        doc[secret_args.FIELD] = doc.pop(secret_args.FIELD)  # the last member (see HIDDEN)
        self._check_owner(doc)
        self.links.before_write(doc)
        with self._ds.batch():  # one commit for the job and its audit entry
            self._ds.jobs.insert(doc)
            self._owner_still_there(doc["_id"], doc["user_id"])
            self._audit.record(
                doc, "created", actor, f"Created {doc['job_class_string']} job, next run {to_iso(doc['next_run_time'])}"
            )
        self._wake(doc["next_run_time"])
        return doc["_id"], doc["name"]

    def update(self, job_id: str, body: dict, actor: str) -> None:
        if not body:
            raise ValidationError("No fields to update")
        schedule = _schedule(body)
        dst_policy_of(body)
        changes = validate_body(body, JOB_UPDATE, partial=True)
        if "job_class_string" in changes:
            changes["job_class_string"] = self._registry.canonical(changes["job_class_string"])
        if "notify" in changes:
            changes["notify"] = clean_notify(changes["notify"])
        if FAN_IN in changes:
            changes[FAN_IN] = with_defaults(changes[FAN_IN])
        if "user_id" in changes:
            self._check_user(changes["user_id"])
        updated = self._write_job(job_id, lambda doc: self._edit(doc, dict(changes), schedule), "updated", actor)
        if "user_id" in changes:
            self._owner_still_there(job_id, changes["user_id"])
        if any(kind in changes for kind in KINDS):
            self.links.after_write(updated, job_id)
        self._after_write(updated)

    def _edit(self, doc: dict, changes: dict, schedule: dict) -> tuple[dict, str]:
        """The fields an update writes over `doc` (as stored now), and its audit summary."""
        self._deadline(doc, changes, utcnow())
        self._adherence(doc, changes, utcnow())
        self._window(doc, changes, utcnow(), schedule)
        if "exclude_calendars" in changes or "user_id" in changes:
            self._check_calendars({**doc, **changes})
        if "notify" in changes:
            changes["notify"] = self._convert_notify(changes["notify"], changes.get("user_id") or doc["user_id"])
        self._check_mutes(doc, changes)
        parameters.check_declaration(changes.get("parameters"))
        if "notify" in changes or "user_id" in changes:
            self._check_channels({**doc, **changes})
        if any(kind in changes for kind in (*KINDS, "user_id")):
            self.links.check({**doc, **changes}, lambda: self._is_admin(changes.get("user_id") or doc["user_id"]))
            self.links.before_write({**doc, **changes})
        if "max_runs" in changes or (changes.get("is_enabled") is not None and doc.get("disabled_reason")):
            changes.update({k: v for k, v in MAX_RUNS_STATE.items() if doc.get(k) != v})
        if schedule and "run_at" not in changes:
            current = {k: doc.get(k, cron.DEFAULTS.get(k)) for k in cron.CRON_FIELDS}
            changes.update(
                cron.normalize(
                    {**current, **schedule},
                    schedule.get("timezone") or doc.get("timezone") or self._timezone,
                    doc["_id"],
                )
            )
        secret_notes: list[str] = []
        sealed: dict = {}
        if secret_args.FIELD not in doc or any(k in changes for k in ("job_class_string", *ARGUMENT_FIELDS)):
            sealed, before, after = self._seal({**doc, **changes}, doc)
            changes.update({k: sealed[k] for k in ARGUMENT_FIELDS if k in changes or sealed[k] != doc.get(k)})
            secret_notes = secret_args.changes(before, after)
        shown = doc if secret_args.FIELD in doc else {**doc, **self._masked(doc)}  # the old values, masked
        changed = {k: v for k, v in changes.items() if shown.get(k) != v}
        summary = (
            "; ".join([*(f"{k}: {shown.get(k)!r} -> {v!r}" for k, v in changed.items()), *secret_notes]) or "no changes"
        )
        fields = {**changes, "schedule_error": None}
        if sealed:  # set last: a document without it gets it as its last member
            fields[secret_args.FIELD] = sealed[secret_args.FIELD]
        if any(k in changes for k in ("job_class_string", "user_id", *ARGUMENT_FIELDS)):
            self._check_owner({**doc, **fields})
        return fields, summary

    def _write_job(self, job_id: str, edit, event: str, actor: str) -> dict:
        """Change a job by compare-and-set on its `updated_at` (its version, strictly growing),
        with `next_run_time` computed from the document as stored: a pause racing an edit
        cannot leave a paused job with a next run. Returns the job as written."""
        for _ in range(20):
            doc = self.get(job_id)
            fields, summary = edit(doc)
            now = utcnow()
            version = doc.get("updated_at")
            if isinstance(version, datetime):
                now = max(now, version + timedelta(milliseconds=1))
            updated = {**doc, **fields}
            fields["next_run_time"] = updated["next_run_time"] = self._next_run(updated, now)
            fields["updated_at"] = updated["updated_at"] = now
            if secret_args.FIELD in fields:  # the document's last member (see HIDDEN)
                fields[secret_args.FIELD] = fields.pop(secret_args.FIELD)
            with self._ds.batch():
                if self._ds.jobs.update_many({"_id": job_id, "updated_at": version}, fields):
                    self._audit.record(updated, event, actor, summary(updated) if callable(summary) else summary)
                    return updated
        raise Conflict(f"Job {job_id} was changed by others {20} times while this change was tried; try again")

    def _after_write(self, job: dict) -> None:
        """A job that may not fire now ends the records it holds that have not started."""
        if job.get("is_paused") or not job.get("is_enabled", True):
            what = "paused" if job.get("is_paused") else "disabled"
            self._end_held(job, what, "skipped", RETRY_TRIGGERS)
        self._wake(job["next_run_time"])

    def _end_held(self, job: dict, what: str, status: str, triggers: tuple[str, ...]) -> None:
        """End the job's records that are held, on any node, and have not started."""
        error = f"{status.capitalize()}: the job was {what} before this run started"
        moved = self._claims.end_job_records(job["_id"], triggers, status, error)
        if status == "skipped":
            for _ in range(moved):
                self._dispatcher.metrics.run_skipped(job.get("job_class_string"), what)
        self._dispatcher.forget_job(job["_id"])

    def pause(self, job_id: str, actor: str, body: dict | None = None) -> None:
        """Pause the job, with an optional `note` and `until` (when it resumes by itself)."""
        note, until = pause_request(body)

        def edit(doc: dict):
            fields = pause_fields(note, until, actor, utcnow())
            return fields, f"Job {describe_pause(fields)}"

        self._after_write(self._write_job(job_id, edit, "paused", actor))

    def resume(self, job_id: str, actor: str) -> None:
        def edit(doc: dict):
            return resume_fields(utcnow()), lambda job: f"Job resumed, next run {to_iso(job['next_run_time'])}"

        self._after_write(self._write_job(job_id, edit, "resumed", actor))

    # -- maintenance: every job paused at once -----------------------------------------
    def maintenance(self) -> dict | None:
        """The maintenance switch while it is on (who, since when, why, until when)."""
        return self.pauses.maintenance()

    def pause_all(self, actor: str, body: dict | None = None) -> dict:
        note, until = pause_request(body)
        return self.pauses.set_maintenance(True, note, until, actor)

    def resume_all(self, actor: str) -> dict:
        switch = self.pauses.set_maintenance(False, None, None, actor)
        if self._scheduler.running:
            self._scheduler.wakeup()
        return switch

    def delete(self, job_id: str, actor: str, force: bool = False) -> None:
        """Delete the job; while other jobs name it in a chain or fan-in, a 409 listing them,
        or with `force` those references are removed first (each an audited update)."""
        doc = self.get(job_id)
        naming = self.links.naming(job_id)
        if naming and not force:
            names = ", ".join(f"{other.get('name')!r} ({other['_id']})" for other in naming)
            raise Conflict(
                f"Job {doc.get('name')!r} is named in the chains of other jobs: {names}. "
                "Remove it from them, or delete with ?force=true to remove those references"
            )
        for other in naming:
            updated = self._write_job(other["_id"], lambda other: _without(other, job_id), "updated", actor)
            self.links.after_write(updated, other["_id"])
        with self._ds.batch():
            self._ds.jobs.delete(job_id)
            revoked = self._ds.triggers.update_many({"job_id": job_id, "revoked_at": None}, {"revoked_at": utcnow()})
            tokens = f"; its {revoked} trigger URLs revoked" if revoked else ""
            self._audit.record(doc, "deleted", actor, f"Job deleted; its executions are kept{tokens}")
        self.links.after_write(None, job_id)
        self._end_held(doc, "deleted", "skipped", RETRY_TRIGGERS)
        self._end_held(doc, "deleted", "cancelled", (RUN_NOW,))

    def delete_many(self, docs: list[dict], actor: str) -> None:
        """Cascade from a deleted user."""
        for doc in docs:
            try:
                self.delete(doc["_id"], actor, force=True)
            except NotFound:
                pass

    def calendar_changed(self, calendar_id: str, actor: str) -> None:
        """A calendar changed: the jobs that exclude it get their next run time again (an
        occurrence a new blackout covers is also left out by the pass when it comes due)."""
        for doc in jobs_using(self._ds, calendar_id):
            try:
                updated = self._write_job(
                    doc["_id"],
                    lambda _: (
                        {},
                        lambda job: f"Calendar {calendar_id} changed: next run {to_iso(job['next_run_time'])}",
                    ),
                    "updated",
                    actor,
                )
            except NotFound:
                continue
            self._wake(updated["next_run_time"])

    def run_now(
        self,
        job_id: str,
        actor: str,
        body: dict | None = None,
        trigger: str = RUN_NOW,
        triggered_by: dict | None = None,
    ) -> str:
        """Start a run of the job now: a person's run-now, or a trigger URL's (`trigger`), with
        the body's `parameters` checked against the job's declaration."""
        request = validate_body(body or {}, RUN_NOW_BODY)
        doc = self.get(job_id)
        switch = self.maintenance()
        if switch is not None:
            raise Conflict(f"Maintenance is on (every job {describe_pause(switch)}): nothing runs until resume-all")
        fields = parameters.run_fields(doc.get("parameters"), request["parameters"], self._secrets)
        if not request["chain"]:
            fields["no_chain"] = True
        with self._ds.batch():  # one commit for the execution and its audit entry
            execution_id = self._dispatcher.run_now(
                doc, trigger, triggered_by=triggered_by or {"user": actor}, **fields
            )
            self._audit.record(doc, "run_now", actor, f"Run now requested: execution {execution_id}")
        return execution_id

    # -- backfills -----------------------------------------------------------------------
    def backfill(self, job_id: str, body: dict | None, actor: str) -> tuple[int, dict]:
        """(200, what a dry run would run) or (202, {"backfill_id"}): the job's occurrences
        between `from` and `to` run by the passes of every node (see backfill.py)."""
        span, max_runs, dry_run = backfill_request(validate_body(body or {}, BACKFILL))
        job = self.get(job_id)
        moments = self._backfills.occurrences(job, *span, max_runs)
        if dry_run:
            return 200, self._backfills.dry_run(job, moments)
        doc = self._backfills.start(job, span, max_runs, moments, actor)
        between = f"{to_iso(span[0])} to {to_iso(span[1])}"
        self._audit.record(job, "backfill", actor, f"Backfill {doc['_id']}: {doc['total']} occurrences, {between}")
        if self._scheduler.running:
            self._scheduler.wakeup()
        return 202, {"backfill_id": doc["_id"]}

    def backfill_status(self, job_id: str, backfill_id: str) -> dict:
        return self._backfills.status(self._backfill(job_id, backfill_id))

    def _backfill(self, job_id: str, backfill_id: str) -> dict:
        return self._backfills.get(require_id(job_id, "job_id"), require_id(backfill_id, "backfill_id"))

    def cancel_backfill(self, job_id: str, backfill_id: str, actor: str) -> dict:
        doc = self._backfill(job_id, backfill_id)
        ended = self._backfills.cancel(doc, actor)
        job = {"_id": job_id, "name": None, "user_id": doc.get("user_id")}
        self._audit.record(job, "backfill", actor, f"Backfill {backfill_id} cancelled ({ended} runs not started)")
        return self.backfill_status(job_id, backfill_id)

    def cancel(
        self, execution_id: str, actor: str, owner: str | None = None, downstream: bool = False
    ) -> tuple[str, list[str]]:
        """Stop a scheduled or running execution, on whichever node has it: ("cancelled", ...)
        when it had not started (and now never will), ("requested", ...) when its holder was
        asked to stop it (this node at once, another through the store within a second). With
        `downstream`, its end starts nothing and the runs it started are cancelled too (the
        ids): ("downstream", ids) when it had already ended."""
        execution = find_execution(self._ds, execution_id, owner)
        cancelled: list[str] = []
        if downstream:  # first: a settle that reads the flag from now on starts nothing
            self._ds.executions.update_many({"_id": execution_id}, {"cancel_downstream": True})
            cancelled = self._cancel_started_by(execution_id, actor)
        for _ in range(5):  # each step is conditional; a record moves at most a few times
            if self._claims.cancel_unstarted(execution_id, actor):
                self._dispatcher.forget(execution_id)
                state = "cancelled"
                break
            if self._claims.request_cancel(execution_id, actor):
                self._dispatcher.stop(execution_id, "cancelled", actor)
                state = "requested"
                break
            status = (self._ds.executions.get(execution_id) or execution)["status"]
            if status not in figures.ACTIVE:
                if cancelled:
                    state = "downstream"
                    break
                raise Conflict(f"Execution {execution_id} has already ended ({status}); there is nothing to cancel")
        else:
            raise Conflict(f"Execution {execution_id} kept changing state; try again")
        job = {"_id": execution["job_id"], "name": execution.get("job_name"), "user_id": execution.get("user_id")}
        what = {"cancelled": "cancelled before it started", "requested": "cancel requested"}.get(state, "ended already")
        if downstream:
            what += f"; {len(cancelled)} runs it started cancelled"
        self._audit.record(job, "cancelled", actor, f"Execution {execution_id}: {what}")
        return state, cancelled

    def _cancel_started_by(self, execution_id: str, actor: str) -> list[str]:
        """Cancel the runs `execution_id`'s end started that have not ended, and theirs."""
        cancelled, parents = [], [execution_id]
        while parents and len(cancelled) < 10_000:
            parent = parents.pop()
            query = {"parent_execution_id": parent, "status": {"$in": list(figures.ACTIVE)}}
            for child in self._ds.executions.find(query, limit=1000):
                self._ds.executions.update_many({"_id": child["_id"]}, {"cancel_downstream": True})
                if self._claims.cancel_unstarted(child["_id"], actor):
                    self._dispatcher.forget(child["_id"])
                elif self._claims.request_cancel(child["_id"], actor):
                    self._dispatcher.stop(child["_id"], "cancelled", actor)
                else:
                    continue
                cancelled.append(child["_id"])
                parents.append(child["_id"])
        return cancelled

    def chain_graph(self, user_id: str | None) -> dict:
        return self.links.graph(user_id)

    # -- utilities ---------------------------------------------------------------------
    def job_preview(self, job_id: str, count: int) -> dict:
        """The job's next `count` runs with every rule applied (texium.core.scheduling.preview)."""
        doc = self.get(job_id)
        try:
            times = JobTimes(doc, self._calendars.blackouts_of(doc))
        except ValidationError as exc:  # a schedule that cannot be built: said, not a 500
            return job_preview({**doc, "schedule_error": exc.detail}, None, count, utcnow())
        return job_preview(doc, times, count, utcnow())

    def preview(
        self,
        fields: dict,
        count: int,
        job_id: str | None = None,
        jitter_seconds: int = 0,
        dst_policy: dict | None = None,
    ) -> dict:
        """The next times of cron fields as a job with `job_id`, `jitter_seconds` and
        `dst_policy` runs them. Without a job id, `H` and jitter take the values of EXAMPLE_SEED
        (the answer says so): a job's own values are a pure function of its id, so they reveal
        nothing of it."""
        seed = EXAMPLE_SEED if job_id is None else require_id(job_id, "job_id")
        spec = cron.normalize(
            {k: v for k, v in fields.items() if k != "timezone"}, fields.get("timezone") or self._timezone, seed
        )
        dst_policy = cron.check_dst_policy(dst_policy)
        schedule = job_schedule({**spec, "dst_policy": dst_policy}, seed, jitter_seconds)
        return {
            "description": cron.describe(cron.resolve(spec, seed)),
            "timezone": spec["timezone"],
            "next_run_times": cron.next_fire_times(spec, count, utcnow(), schedule),
            "hash_seed": seed,
            "hashed": cron.hashed(spec, seed),
            "jitter_seconds": jitter_seconds,
            "dst_policy": getattr(schedule, "base", schedule).dst_policy,
        }


def _without(job: dict, job_id: str) -> tuple[dict, str]:
    """The edit that removes `job_id` from `job`'s chain fields (a forced delete of `job_id`)."""
    fields = {kind: [target for target in job.get(kind) or () if target != job_id] for kind in KINDS if kind != FAN_IN}
    fan_in = job.get(FAN_IN)
    if fan_in and job_id in (fan_in.get("jobs") or ()):
        listed = [upstream for upstream in fan_in["jobs"] if upstream != job_id]
        fields[FAN_IN] = {**fan_in, "jobs": listed} if listed else None
    return fields, f"Removed the deleted job {job_id} from its chains"
