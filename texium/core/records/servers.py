"""Servers: connection records whose passwords are encrypted at rest and never shown.

An `instance_url` with credentials (`http://admin:pw@host/`) is stored and shown with its
password as `***` (`http://admin:***@host/`), the real URL encrypted beside it; an update that
sends the masked URL back (same scheme, user, host and port) keeps the stored password.
"""

from __future__ import annotations

import logging

from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound, ValidationError
from texium.core.records.listing import Page, list_page
from texium.core.records.users import owned_by
from texium.core.security.secret_args import has_masked_password, has_url_password, mask_url, restore_url
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import utcnow
from texium.core.validation import request_schema, require_id, validate_body

log = logging.getLogger("texium.servers")
# The fields, their types, limits and defaults: components/schemas in texium/openapi.yaml.
SERVER_CREATE, SERVER_UPDATE = request_schema("ServerCreate"), request_schema("ServerUpdate")
URL_FIELD = "instance_url_encrypted"
HIDDEN = ("password_encrypted", URL_FIELD)


def present(doc: dict) -> dict:
    view = {k: v for k, v in doc.items() if k not in HIDDEN}
    if "instance_url" in view:  # masked at rest; masked here too for a record stored before that
        view["instance_url"] = mask_url(view["instance_url"])
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

    def _seal_instance_url(self, doc: dict, stored: dict | None = None) -> None:
        """Keep an instance_url's password encrypted, the URL with *** in its place; a URL sent back
        with *** keeps the stored password."""
        if "instance_url" not in doc:
            return
        url = doc["instance_url"]
        if not has_url_password(url):
            doc[URL_FIELD] = None
            return
        if has_masked_password(url):  # the stored password, for the same place only
            try:
                real = self.instance_url(stored) if stored is not None else None
            except ValueError:
                raise ValidationError(
                    "Invalid field instance_url: the stored password cannot be decrypted with this server's "
                    "SECRET_KEY; send it again instead of ***"
                ) from None
            url = restore_url(url, real or "", "instance_url")
        doc["instance_url"] = mask_url(url)
        doc[URL_FIELD] = self._secrets.encrypt(url)

    def instance_url(self, doc: dict) -> str | None:
        """A server's real instance_url (with its password), for the health check."""
        token = doc.get(URL_FIELD)
        return self._secrets.decrypt(token) if token else doc.get("instance_url")

    def seal_stored_urls(self) -> int:
        """Encrypt the passwords of instance URLs stored before they were (call once at start);
        returns how many. Blocking."""
        sealed = 0
        for doc in self._ds.servers.find({URL_FIELD: None}):
            url = doc.get("instance_url")
            if has_url_password(url) and not has_masked_password(url):
                fields = {"instance_url": url}
                self._seal_instance_url(fields)
                sealed += self._ds.servers.update_many({"_id": doc["_id"], "instance_url": url}, fields)
        if sealed:
            log.warning("Encrypted the instance URL passwords of %d stored servers (now shown as ***)", sealed)
        return sealed

    def _require_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def create(self, body: dict) -> tuple[str, str]:
        doc = validate_body(body, SERVER_CREATE)
        self._require_user(doc["user_id"])
        self._seal_password(doc)
        self._seal_instance_url(doc)
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
        stored = None
        if has_masked_password(changes.get("instance_url")):
            stored = self._ds.servers.get(server_id)
            if stored is None:
                raise NotFound("Server not found")
        self._seal_instance_url(changes, stored)
        changes["updated_at"] = utcnow()
        if self._ds.servers.update(server_id, fields=changes) is None:
            raise NotFound("Server not found")

    def delete(self, server_id: str) -> None:
        if not self._ds.servers.delete(require_id(server_id, "server_id")):
            raise NotFound("Server not found")
