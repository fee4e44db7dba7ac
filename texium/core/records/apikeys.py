"""API keys: who a request is. A key is shown once; the store keeps only its SHA-256.

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
    def __init__(self, datastore: Datastore):
        self._ds = datastore
        self._keys = datastore.collection(COLLECTION)

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

    def revoke_all(self, user_id: str) -> int:
        return self._keys.delete_many({"user_id": user_id})

    def authenticate(self, key: str) -> dict | None:
        """The user the key belongs to, or None (unknown, revoked, or its user is gone)."""
        found = self.key_and_user(key)
        return None if found is None else found[1]

    def sign_in(self, body: dict) -> tuple[str, dict] | None:
        """The dashboard's sign-in body checked, then as key_and_user()."""
        return self.key_and_user(validate_body(body, SESSION_CREATE)["key"])

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

    def user_of_key(self, key_id: str) -> dict | None:
        """The user of a key by its id (the dashboard's session names the key it signed in with,
        so revoking the key ends the session)."""
        found = self._keys.get(key_id)
        return None if found is None else self._ds.users.get(found["user_id"])

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
