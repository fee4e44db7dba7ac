"""API keys: who a request is. A key is shown once; the store keeps only its SHA-256.

The dashboard signs in with a key and then holds a session (texium.core.records.sessions)
tied to that key: revoking the key, or every key of a deleted user, ends its sessions.

Keys are 256 random bits, so a plain hash is enough (no slow KDF is needed against guessing,
and a lookup by hash is one indexed read). `last_used_at` is written at most once a minute per
key, so authenticating costs no write on the hot path.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound
from texium.core.records.sessions import Sessions
from texium.core.timeutil import utcnow
from texium.core.validation import request_schema, require_id, validate_body

PREFIX = "tx_"
COLLECTION = "api_keys"
TOUCH_EVERY = timedelta(minutes=1)
SHOWN = ("_id", "user_id", "label", "created_at", "last_used_at")
KEY_CREATE, SESSION_CREATE = request_schema("ApiKeyCreate"), request_schema("SessionCreate")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class ApiKeys:
    def __init__(self, datastore: Datastore, sessions: Sessions):
        self._ds = datastore
        self._keys = datastore.collection(COLLECTION)
        self.sessions = sessions

    def _user(self, user_id: str) -> dict:
        user = self._ds.users.get(require_id(user_id, "user_id"))
        if user is None:
            raise NotFound("User not found")
        return user

    def create(self, user_id: str, body: dict) -> tuple[dict, str]:
        """A new key for the user: (its listing entry, the key itself, shown this once)."""
        label = validate_body(body, KEY_CREATE)["label"]
        self._user(user_id)
        key = new_key()
        doc = {
            "user_id": user_id,
            "label": label,
            "key_hash": digest(key),
            "created_at": utcnow(),
            "last_used_at": None,
        }
        doc["_id"] = self._keys.insert(doc)
        return {k: doc[k] for k in SHOWN}, key

    def list(self, user_id: str) -> list[dict]:
        self._user(user_id)
        docs = self._keys.find({"user_id": user_id}, sort=[("created_at", 1)])
        return [{k: doc.get(k) for k in SHOWN} for doc in docs]

    def revoke(self, user_id: str, key_id: str) -> None:
        self._user(user_id)
        require_id(key_id, "key_id")
        if not self._keys.delete_many({"_id": key_id, "user_id": user_id}):
            raise NotFound("API key not found")
        self.sessions.end_for_key(key_id)

    def revoke_all(self, user_id: str) -> int:
        revoked = self._keys.delete_many({"user_id": user_id})
        self.sessions.end_for_user(user_id)
        return revoked

    def authenticate(self, key: str) -> dict | None:
        """The user the key belongs to, or None (unknown, revoked, or its user is gone)."""
        found = self.key_and_user(key)
        return None if found is None else found[1]

    def sign_in(self, body: dict) -> tuple[str, dict, dict] | None:
        """The dashboard's sign-in: (the new session's token, the session, its user), or None
        when the key is not valid."""
        found = self.key_and_user(validate_body(body, SESSION_CREATE)["key"])
        if found is None:
            return None
        key_id, user = found
        token, session = self.sessions.open(key_id, user["_id"])
        return token, session, user

    def key_and_user(self, key: str) -> tuple[str, dict] | None:
        """(the key's id, its user), or None."""
        if not isinstance(key, str) or not key.startswith(PREFIX) or len(key) > 200:
            return None
        found = self._keys.find_one({"key_hash": digest(key)})
        if found is None:
            return None
        user = self._ds.users.get(found["user_id"])
        if user is None:
            return None
        now = utcnow()
        if found.get("last_used_at") is None or now - found["last_used_at"] > TOUCH_EVERY:
            self._keys.update_many({"_id": found["_id"]}, {"last_used_at": now})
        return found["_id"], user

    def session_and_user(self, token: str) -> tuple[dict, dict] | None:
        """(the live session of a cookie's token, its user), or None. The key it was opened
        with must still exist: a revocation that raced the sign-in still ends it."""
        session = self.sessions.find(token)
        if session is None:
            return None
        key = self._keys.get(session["key_id"])
        user = None if key is None else self._ds.users.get(key["user_id"])
        if user is None:
            self.sessions.end(token)
            return None
        return session, user

    def has_admin_key(self) -> bool:
        admins = {user["_id"] for user in self._ds.users.find({"role": "admin"})}
        return any(key["user_id"] in admins for key in self._keys.find({}))

    def bootstrap_admin(self) -> tuple[dict, str]:
        """The first admin and a key for it, for a server that requires keys and has none."""
        now = utcnow()
        users = self._ds.users
        admin = users.find_one({"role": "admin"}, sort=[("created_at", 1)])
        if admin is None:
            admin_id = users.insert(
                {
                    "name": "Administrator",
                    "email": "admin@texium.example",
                    "role": "admin",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            admin = users.get(admin_id)
        entry, key = self.create(admin["_id"], {"label": "created at first start"})
        return admin, key
