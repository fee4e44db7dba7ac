"""Servers: connection records whose passwords are encrypted at rest and never shown."""

from __future__ import annotations

from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound, ValidationError
from texium.core.listing import Page, list_page
from texium.core.secrets import SecretBox
from texium.core.timeutil import utcnow
from texium.core.users import owned_by
from texium.core.validation import request_schema, require_id, validate_body

# The fields, their types, limits and defaults: components/schemas in texium/openapi.yaml.
SERVER_CREATE, SERVER_UPDATE = request_schema("ServerCreate"), request_schema("ServerUpdate")
HIDDEN = ("password_encrypted",)


def present(doc: dict) -> dict:
    view = {k: v for k, v in doc.items() if k not in HIDDEN}
    view["has_password"] = bool(doc.get("password_encrypted"))
    view.setdefault("last_checked_at", None)
    view.setdefault("last_check", None)
    return view


class ServerService:
    def __init__(self, datastore: Datastore, secrets: SecretBox):
        self._ds = datastore
        self._secrets = secrets

    def _seal_password(self, doc: dict) -> None:
        """Replace a plaintext `password` by its ciphertext; an empty or null one clears it."""
        if "password" in doc:
            password = doc.pop("password")
            doc["password_encrypted"] = self._secrets.encrypt(password) if password else None

    def _require_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def create(self, body: dict) -> tuple[str, str]:
        doc = validate_body(body, SERVER_CREATE)
        self._require_user(doc["user_id"])
        self._seal_password(doc)
        doc["created_at"] = doc["updated_at"] = utcnow()
        doc["last_checked_at"] = None
        return self._ds.servers.insert(doc), doc["name"]

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        page = list_page(self._ds.servers, owned_by(self._ds, user_id), limit, offset, as_json=False)
        page.items = [present(doc) for doc in page.items]
        return page

    def get(self, server_id: str) -> dict:
        doc = self._ds.servers.get(require_id(server_id, "server_id"))
        if doc is None:
            raise NotFound("Server not found")
        return present(doc)

    def update(self, server_id: str, body: dict) -> None:
        require_id(server_id, "server_id")
        changes = validate_body(body, SERVER_UPDATE, partial=True)
        if "user_id" in changes:
            self._require_user(changes["user_id"])
        self._seal_password(changes)
        changes["updated_at"] = utcnow()
        if self._ds.servers.update(server_id, fields=changes) is None:
            raise NotFound("Server not found")

    def delete(self, server_id: str) -> None:
        if not self._ds.servers.delete(require_id(server_id, "server_id")):
            raise NotFound("Server not found")
