"""Trigger URLs: start one run of a job from another system (a CI pipeline, a Git hook) with one
`curl -X POST <url>`, without holding an API key.

A trigger is a record of the `triggers` collection naming its job; its token (128 random bits)
is stored as its SHA-256 only and shown once, in the answer to create. A use finds the trigger by
that hash (an indexed equality: no timing tells how close a guess was), and every reason to
refuse it (no such token, revoked, expired, the job gone) is the same NotFound("Not found").
Revoking sets `revoked_at` by one conditional write; the record stays for the audit trail. A
use starts the run through `start` (SchedulerManager.run_now with trigger `url`), so it follows
a run-now's rules: maintenance refuses it, a busy job makes it wait, a paused one records it
`skipped`; then it counts the use on the record (`uses`, `last_used_at`, `last_used_from`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import NotFound, ValidationError
from texium.core.records.audit import AuditLog
from texium.core.scheduling.occurrences import URL
from texium.core.security.tokens import RateLimiter, new_token, token_hash
from texium.core.timeutil import as_utc, parse_iso, to_iso, utcnow
from texium.core.validation import request_schema, require_id, validate_body

TRIGGER_CREATE = request_schema("TriggerCreate")  # {name, expires_at, allowed_parameters}
TRIGGER_USE = request_schema("TriggerUse")  # any object: parameter values, flat or wrapped
HIDDEN = ("token_hash",)
SHOWN = ("created_at", "created_by", "expires_at", "revoked_at", "last_used_at", "last_used_from", "allowed_parameters")
PARAMETERS = "parameters"  # the key a body may wrap its values in


def present(doc: dict) -> dict:
    """A trigger as lists show it: never its token (nor its hash)."""
    view = {k: v for k, v in doc.items() if k not in HIDDEN}
    for name in SHOWN:
        view.setdefault(name, None)
    view.setdefault("uses", 0)
    return view


def parameter_values(body: dict, declaration: list[dict] | None) -> dict:
    """The run's parameter values of a use's body: the body itself, or what it wraps under
    `parameters` when that is its only key, holds an object and the job declares no parameter
    of that name."""
    declared = {item.get("name") for item in declaration or []}
    wrapped = body.get(PARAMETERS)
    if set(body) == {PARAMETERS} and isinstance(wrapped, dict) and PARAMETERS not in declared:
        return wrapped
    return body


class TriggerService:
    """Create, list, revoke and use the trigger tokens of jobs.

    `start(job_id, actor, body, trigger, triggered_by)` starts one run (SchedulerManager.run_now);
    `runs_per_minute` is the per-token limit (TRIGGER_RUNS_PER_MINUTE)."""

    def __init__(self, datastore: Datastore, audit: AuditLog, start: Callable[..., str], runs_per_minute: int = 60):
        self._ds = datastore
        self._audit = audit
        self._start = start
        self._per_token = RateLimiter(runs_per_minute)

    def create(self, job: dict, body: dict, actor: str) -> tuple[dict, str]:
        """(the trigger as lists show it, its token): the token is shown this once."""
        fields = validate_body(body, TRIGGER_CREATE)
        expires_at = fields.get("expires_at")
        if expires_at is not None:
            expires_at = parse_iso(expires_at)
            if expires_at <= utcnow():
                raise ValidationError(f"Invalid field expires_at: {to_iso(expires_at)} is not in the future")
        token = new_token()
        doc = {
            "_id": new_id(),
            "job_id": job["_id"],
            "user_id": job.get("user_id"),  # the job's owner: whose tokens these are
            "name": fields["name"],
            "token_hash": token_hash(token),
            "created_at": utcnow(),
            "created_by": actor,
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
            "last_used_from": None,
            "uses": 0,
            "allowed_parameters": fields.get("allowed_parameters"),
        }
        with self._ds.batch():
            self._ds.triggers.insert(doc)
            self._audit.record(job, "trigger_created", actor, f"Trigger '{doc['name']}' ({doc['_id']}) created")
        return present(doc), token

    def list(self, job_id: str) -> list[dict]:
        docs = self._ds.triggers.find({"job_id": job_id}, sort=[("created_at", -1)])
        return [present(doc) for doc in docs]

    def revoke(self, job: dict, trigger_id: str, actor: str) -> dict:
        """The trigger, revoked (from now on its URL answers 404); revoking again changes nothing."""
        doc = self._ds.triggers.get(require_id(trigger_id, "trigger_id"))
        if doc is None or doc.get("job_id") != job["_id"]:
            raise NotFound("Trigger not found")
        now = utcnow()
        if self._ds.triggers.update_many({"_id": doc["_id"], "revoked_at": None}, {"revoked_at": now}):
            doc["revoked_at"] = now
            self._audit.record(job, "trigger_revoked", actor, f"Trigger '{doc['name']}' ({doc['_id']}) revoked")
        return present(self._ds.triggers.get(doc["_id"]) or doc)

    def admit(self, token: str) -> None:
        """The per-token limit, before the token is looked up (a guess costs as much as a use)."""
        self._per_token.admit(token_hash(token), "runs for this trigger")

    def use(self, token: str, body: dict, client: str) -> str:
        """Start one run of the token's job; its execution id. NotFound("Not found") for a
        token that cannot start anything, whatever the reason."""
        found = self._ds.triggers.find({"token_hash": token_hash(token)}, limit=1)
        doc = found[0] if found else None
        now = utcnow()
        if doc is None or doc.get("revoked_at") is not None or _expired(doc, now):
            raise NotFound("Not found")
        job = self._ds.jobs.get(doc["job_id"])
        if job is None:
            raise NotFound("Not found")
        validate_body(body, TRIGGER_USE)  # an object; its values go on as sent (untrimmed, as run-now's)
        values = parameter_values(body, job.get("parameters"))
        allowed = doc.get("allowed_parameters")
        if allowed is not None:
            for name in values:
                if name not in allowed:
                    raise ValidationError(f"Invalid field parameters.{name[:64]}: not allowed by this trigger")
        triggered_by = {"trigger_id": doc["_id"], "name": doc["name"]}
        execution_id = self._start(job["_id"], f"trigger:{doc['name']}", {"parameters": values}, URL, triggered_by)
        with self._ds.batch():
            self._ds.triggers.update_many(
                {"_id": doc["_id"]}, {"last_used_at": now, "last_used_from": client}, inc={"uses": 1}
            )
            why = f"Trigger '{doc['name']}' ({doc['_id']}) used from {client}: execution {execution_id}"
            self._audit.record(job, "trigger_used", f"trigger:{doc['name']}", why)
        return execution_id


def _expired(doc: dict, now: Any) -> bool:
    expires_at = doc.get("expires_at")
    return expires_at is not None and as_utc(expires_at) <= now
