"""Users: validation, unique e-mail, and deletion that refuses to orphan servers and jobs."""

from __future__ import annotations

from collections.abc import Callable

from texium.core.datastore.base import Datastore
from texium.core.errors import Conflict, DuplicateKeyError, NotFound
from texium.core.records.listing import Page, list_page
from texium.core.timeutil import utcnow
from texium.core.validation import request_schema, require_id, validate_body

# The fields, their types, limits and defaults: components/schemas in texium/openapi.yaml.
USER_CREATE, USER_UPDATE = request_schema("UserCreate"), request_schema("UserUpdate")


def owned_by(datastore: Datastore, user_id: str | None) -> dict:
    """The filter for "things this user owns" (all things for None); 404 for an unknown user."""
    if user_id is None:
        return {}
    if datastore.users.get(require_id(user_id, "user_id")) is None:
        raise NotFound("User not found")
    return {"user_id": user_id}


def _email_taken(email: str) -> Conflict:
    return Conflict(f"A user with email {email!r} already exists")


class UserService:
    def __init__(self, datastore: Datastore, delete_jobs: Callable[[list[dict]], None] | None = None):
        """`delete_jobs` removes a user's jobs on cascade (the scheduler owns job deletion)."""
        self._ds = datastore
        self._delete_jobs = delete_jobs

    def create(self, body: dict) -> str:
        doc = validate_body(body, USER_CREATE)
        doc["created_at"] = doc["updated_at"] = utcnow()
        try:
            return self._ds.users.insert(doc)
        except DuplicateKeyError:
            raise _email_taken(doc["email"]) from None

    def list(self, limit: int, offset: int) -> Page:
        return list_page(self._ds.users, {}, limit, offset)

    def get(self, user_id: str) -> dict:
        user = self._ds.users.get(require_id(user_id, "user_id"))
        if user is None:
            raise NotFound("User not found")
        return user

    def update(self, user_id: str, body: dict) -> None:
        changes = validate_body(body, USER_UPDATE, partial=True)
        changes["updated_at"] = utcnow()
        try:
            updated = self._ds.users.update(require_id(user_id, "user_id"), fields=changes)
        except DuplicateKeyError:
            raise _email_taken(changes["email"]) from None
        if updated is None:
            raise NotFound("User not found")

    def delete(self, user_id: str, cascade: bool) -> None:
        self.get(user_id)
        servers = self._ds.servers.count({"user_id": user_id})
        jobs = self._ds.jobs.find({"user_id": user_id})
        if (servers or jobs) and not cascade:
            owned = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in ((servers, "server"), (len(jobs), "job")) if n]
            raise Conflict(f"User still owns {' and '.join(owned)}; delete them first or use ?cascade=true")
        # The user goes first, then what it owns is looked up again: a job created meanwhile is
        # either found here or refused by its creator's own check that the owner still exists.
        self._ds.users.delete(user_id)
        jobs = self._ds.jobs.find({"user_id": user_id})
        if jobs and self._delete_jobs:
            self._delete_jobs(jobs)
        self._ds.servers.delete_many({"user_id": user_id})
        self._ds.jobs.delete_many({"user_id": user_id})
