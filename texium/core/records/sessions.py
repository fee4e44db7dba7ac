"""The dashboard's sign-in sessions: random, stored, and ended by the server, not the browser.

A session is 256 random bits given to the browser once (its cookie); the store keeps only
their SHA-256, as it does for keys, so a copy of the store or a backup opens no session. Each
session has its own CSRF token and an end: signing out, revoking the key it was opened with
(or deleting its user) and its lifetime all end it at once, on every node of the store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from texium.core.datastore.base import Datastore
from texium.core.timeutil import utcnow

COLLECTION = "sessions"
MAX_TOKEN_LENGTH = 100  # a longer cookie is nothing this server gave out


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """Compare a presented token in constant time (no early exit that times the match)."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class Sessions:
    def __init__(self, datastore: Datastore, lifetime_seconds: float):
        self._sessions = datastore.collection(COLLECTION)
        self._lifetime = timedelta(seconds=lifetime_seconds)

    def open(self, key_id: str, user_id: str) -> tuple[str, dict]:
        """A new session for a user signed in with a key: (its token, shown once; the record)."""
        now = utcnow()
        self._sessions.delete_many({"expires_at": {"$lt": now}})  # sign-ins are rare: tidy up here
        token = secrets.token_urlsafe(32)
        record = {
            "token_hash": digest(token),
            "key_id": key_id,
            "user_id": user_id,
            "csrf_token": secrets.token_urlsafe(32),
            "created_at": now,
            "expires_at": now + self._lifetime,
        }
        record["_id"] = self._sessions.insert(record)
        return token, record

    def find(self, token: str) -> dict | None:
        """The live session of a token, or None (unknown, ended or expired)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        record = self._sessions.find_one({"token_hash": digest(token)})
        if record is None:
            return None
        if record["expires_at"] <= utcnow():
            self._sessions.delete(record["_id"])
            return None
        return record

    def end(self, token: str) -> None:
        """Sign-out: the session stops working everywhere, whoever holds a copy of the cookie."""
        if isinstance(token, str) and token and len(token) <= MAX_TOKEN_LENGTH:
            self._sessions.delete_many({"token_hash": digest(token)})

    def end_for_key(self, key_id: str) -> int:
        return self._sessions.delete_many({"key_id": key_id})

    def end_for_user(self, user_id: str) -> int:
        return self._sessions.delete_many({"user_id": user_id})
