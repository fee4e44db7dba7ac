"""The base of every API handler: JSON in and out, errors as {"detail": ...}, no blocking I/O.

Bodies are streamed so an oversized one is never buffered whole.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from texium.core.errors import TexiumError, ValidationError
from texium.core.jsontext import dumps
from texium.core.records.sessions import same_token
from texium.core.timeutil import parse_iso
from texium.server.access import UNSAFE_METHODS
from texium.server.transport import set_transport_headers

log = logging.getLogger("texium.server")
PLAIN_REASONS = {404: "Not found", 405: "Method not allowed"}
LIST_ALL = 1000  # users, servers and jobs are few: a plain GET lists them all (up to 1000)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    """Integers must fit in 64 bits: that is what both datastores can store."""
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"integer {text[:30]} does not fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:30]} is too large")
    return value


MAX_DEPTH = 32  # MongoDB refuses documents nested deeper than 100; no field needs more


def _check_storable(value: Any, depth: int = 0) -> None:
    """What every datastore can hold: no NUL or leading '$' in keys, no lone surrogates in
    text (UTF-8 cannot encode them), bounded depth."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            if "\x00" in key or key.startswith("$"):
                raise ValueError(f"object key {key[:40]!r} may not contain NUL or start with '$'")
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)


SESSION_COOKIE = "texium_session"


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    public = False  # served without a key when keys are required (health, documentation, sign-in)
    admin_only = False  # only admins, whatever the resource
    # Answers that can carry a new API key or a CSRF token: no browser or proxy may keep them.
    carries_secrets = False

    def initialize(self, context) -> None:
        self.context = context
        self._chunks: list[bytes] = []
        self._received = 0
        self.user: dict | None = None  # the authenticated user, None when nobody signed in
        self.by_key = False  # authenticated by an API key (not by the dashboard's cookie)
        self.client = ""
        self.session: dict | None = None  # the dashboard's session, when the cookie authenticated

    def set_default_headers(self) -> None:
        set_transport_headers(self)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        if self.carries_secrets:
            self.set_header("Cache-Control", "no-store")
        origin = self.request.headers.get("Origin")
        if origin and origin in self.settings.get("texium_cors", ()):  # CORS only for CORS_ORIGINS
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    async def options(self, *args) -> None:
        """A CORS preflight: answered for CORS_ORIGINS only."""
        if "Access-Control-Allow-Origin" not in self._headers:
            raise tornado.web.HTTPError(405)
        self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
        self.set_header("Access-Control-Allow-Headers", "Authorization, X-API-Key, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    # -- who is asking (texium/server/access.py) -----------------------------------------
    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        try:
            await self._admit()
        except tornado.web.HTTPError as refusal:
            # Answering from prepare() (before the body is read) makes Tornado drop the
            # connection, and the client never sees why: read (and drop) the body, then refuse.
            self._refused = refusal

            async def refuse(*args, **kwargs) -> None:
                raise self._refused

            setattr(self, self.request.method.lower(), refuse)

    async def _admit(self) -> None:
        access = self.context.access
        if not access.host_allowed(self.request.host_name):
            raise tornado.web.HTTPError(
                400, reason=f"Host {self.request.host_name[:100]!r} is not served here (see ALLOWED_HOSTS)"
            )
        self.client = access.client_address(self.request.remote_ip or "", self.request.headers)
        await self._authenticate()
        if self.request.method in UNSAFE_METHODS and not self.by_key:
            why = access.cross_site(self.request.headers, access.own_origin(self.request))
            if why:
                raise tornado.web.HTTPError(403, reason=f"Cross-site request refused ({why}); send an API key")
            if self.session is not None and not same_token(
                self.request.headers.get("X-CSRF-Token"), self.session["csrf_token"]
            ):
                raise tornado.web.HTTPError(403, reason="Missing or wrong X-CSRF-Token for this session")
        if self.user is None and access.required and not self.public:
            raise tornado.web.HTTPError(401, reason="Authentication required: send Authorization: Bearer <API key>")
        if self.admin_only:
            self.require_admin()

    async def _authenticate(self) -> None:
        """Sets self.user from a key, or self.user and self.session from the session cookie."""
        headers = self.request.headers
        key = headers.get("X-API-Key") or ""
        authorization = headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        if key:
            self.user = await self.vouch(self.read, self.context.keys.authenticate, key)
            self.by_key = True
            return
        # Without required keys everyone is admin: a session cookie adds nothing (and no CSRF).
        token = self.get_cookie(SESSION_COOKIE) if self.context.access.required else None
        if token:
            found = await self.read(self.context.keys.session_and_user, token)
            if found is None:  # signed out, revoked or expired: the browser may forget it too
                self.clear_cookie(SESSION_COOKIE, path="/")
                return
            self.session, self.user = found

    async def vouch(self, run: Callable, lookup: Callable, *args: Any) -> Any:
        """What `lookup` finds for a presented key. The key is looked up first: a valid one is
        never refused, whatever others sent from the same address (NAT, a shared proxy). A miss
        is counted against the client, logged without the key, and answers 401, or 429 while
        the client is over the limit on failures."""
        found = await run(lookup, *args)
        if found is not None:
            return found
        access = self.context.access
        wait = access.failures.blocked_for(self.client)
        if wait:
            self.retry_after = int(wait) + 1
            raise tornado.web.HTTPError(429, reason="Too many failed authentications; try again later")
        access.failures.failed(self.client)
        log.warning("Failed authentication from %s: unknown or revoked API key", self.client)
        raise tornado.web.HTTPError(401, reason="Invalid or revoked API key")

    @property
    def is_admin(self) -> bool:
        """Admins, and everyone while keys are not required (the loopback-only default)."""
        if self.user is None:
            return not self.context.access.required
        return self.user.get("role") == "admin"

    @property
    def scope(self) -> str | None:
        """The user a non-admin sees the resources of; None for an admin (everything)."""
        return None if self.is_admin else self.user["_id"]

    def require_admin(self) -> None:
        if not self.is_admin:
            raise tornado.web.HTTPError(403, reason="Only an admin may do this")

    def own(self, doc: dict | None, missing: str) -> dict:
        """The document if this user may see it; others' ids answer 404, as unknown ones do."""
        if doc is None or (self.scope is not None and doc.get("user_id") != self.scope):
            raise tornado.web.HTTPError(404, reason=missing)
        return doc

    def owner_field(self, user_id) -> None:
        """A non-admin may only create or move things for themselves."""
        if self.scope is not None and user_id is not None and user_id != self.scope:
            raise ValidationError(f"Invalid field user_id: no user with id {str(user_id)[:40]}")

    # -- request body --------------------------------------------------------------------
    # Oversized bodies are read and dropped, then refused with 413 by json_body(): answering
    # early would make Tornado reset the connection while the client is still sending.
    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if getattr(self, "_refused", None) is not None:
            return  # refused already: read to the end, keep nothing
        if self._received <= self.context.max_body_bytes:
            self._chunks.append(chunk)

    def optional_json_body(self) -> dict:
        """json_body(), or {} when no body was sent (operations whose body is optional)."""
        return self.json_body() if b"".join(self._chunks).strip() else {}

    def raw_body(self) -> bytes:
        """The request body as sent; 413 beyond MAX_BODY_BYTES."""
        if self._received > self.context.max_body_bytes:
            raise tornado.web.HTTPError(413, reason=f"Request body larger than {self.context.max_body_bytes} bytes")
        return b"".join(self._chunks)

    def json_body(self) -> dict:
        raw = self.raw_body()
        if not raw.strip():
            raise ValidationError("Request body must be a JSON object")
        try:
            body = json.loads(raw, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float)
            _check_storable(body)
        except RecursionError:
            raise ValidationError(f"Malformed JSON in request body: nested deeper than {MAX_DEPTH} levels") from None
        except (ValueError, UnicodeError) as exc:
            raise ValidationError(f"Malformed JSON in request body: {exc}") from None
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")
        return body

    # -- query arguments -----------------------------------------------------------------
    def query(self, name: str) -> str | None:
        value = self.get_query_argument(name, None)
        return value if value not in (None, "") else None

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        text = self.query(name)
        if text is None:
            return default
        if not re.fullmatch(r"-?[0-9]{1,12}", text):  # int() would also take '١' or '1_0'
            raise ValidationError(f"Invalid query parameter {name}: {text!r} is not an integer")
        value = int(text)
        if not low <= value <= high:
            raise ValidationError(f"Invalid query parameter {name}: must be from {low} to {high}")
        return value

    def query_time(self, name: str) -> datetime | None:
        text = self.query(name)
        if text is None:
            return None
        try:
            return parse_iso(text)
        except (ValueError, OverflowError):
            raise ValidationError(f"Invalid query parameter {name}: {text!r} is not an ISO 8601 time") from None

    def query_bool(self, name: str) -> bool:
        text = (self.query(name) or "false").lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValidationError(f"Invalid query parameter {name}: must be true or false")
        return text in ("true", "1", "yes")

    def paging(self, default_limit: int = 100) -> tuple[int, int]:
        return self.query_int("limit", default_limit, 1, 1000), self.query_int("offset", 0, 0, 10**9)

    @property
    def actor(self) -> str:
        """Who made a change, for the audit log: the authenticated user; without keys, the
        X-Texium-User header (only believed while authentication is off)."""
        if self.user is not None:
            return f"{self.user.get('name')} ({self.user['_id']})"[:200]
        return (self.request.headers.get("X-Texium-User") or "anonymous")[:200]

    # -- responses -----------------------------------------------------------------------
    async def blocking(self, fn: Callable, *args: Any) -> Any:
        """Run a datastore-bound call on the bounded executor, never on the IOLoop."""
        return await IOLoop.current().run_in_executor(self.context.executor, fn, *args)

    async def read(self, fn: Callable, *args: Any) -> Any:
        """A bounded read (one document, one page by an index): on the embedded store it costs
        microseconds, less than the hop to a thread, so it runs right here; elsewhere as
        blocking() does."""
        if self.context.datastore.inline_reads:
            return fn(*args)
        return await self.blocking(fn, *args)

    def public_link(self, path: str) -> str:
        """An absolute URL of this server for `path`: PUBLIC_URL, else the request's own host."""
        base = self.context.public_url or f"{self.request.protocol}://{self.request.host}"
        return f"{base}{path}"

    def reply(self, payload: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(dumps(payload))

    def success(self, message: str, status: int = 200, **fields: Any) -> None:
        self.reply({"status": "success", "message": message, **fields}, status)

    def listing(self, message: str, page) -> None:
        self.success(message, total=page.total, data=page.items)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, TexiumError) and value.status < 500:
            return  # an expected client error, not worth a traceback
        if isinstance(value, TexiumError):  # the store is down or the server stops: one line says it
            log.warning("%s %s answered %d: %s", self.request.method, self.logged_path, value.status, value.detail)
            return
        if self.logged_path != self.request.path:  # Tornado's own line would show the credential
            log.error("Uncaught exception %s %s", self.request.method, self.logged_path, exc_info=(typ, value, tb))
            return
        super().log_exception(typ, value, tb)

    @property
    def logged_path(self) -> str:
        """The path as logs show it; handlers whose path holds a credential mask it."""
        return self.request.path

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, TexiumError):
            status_code, detail = error.status, error.detail
        elif isinstance(error, tornado.web.HTTPError):
            detail = error.reason or PLAIN_REASONS.get(status_code, self._reason)
        elif status_code >= 500:
            detail = "Internal server error"
        else:
            detail = self._reason
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        retry_after = getattr(error, "retry_after", None) or getattr(self, "retry_after", None)
        if status_code == 429 and retry_after:
            self.set_header("Retry-After", str(retry_after))
        self.finish(dumps({"detail": detail}))

    @classmethod
    def allowed_methods(cls) -> list[str]:
        base = tornado.web.RequestHandler
        return [
            m
            for m in cls.SUPPORTED_METHODS
            if m != "OPTIONS" and getattr(cls, m.lower()) is not getattr(base, m.lower(), None)
        ]

    def _handle_request_exception(self, e: BaseException) -> None:
        # TexiumError carries its own status; everything else takes Tornado's path.
        if isinstance(e, TexiumError) and not self._finished:
            self.log_exception(*sys.exc_info())
            self.send_error(e.status, exc_info=sys.exc_info())
            return
        super()._handle_request_exception(e)


class NotFoundHandler(ApiHandler):
    """Unknown routes answer JSON 404, whatever the method.

    Raised from the method, not from prepare(): answering before the request is read would
    make Tornado drop the keep-alive connection under the client's feet.
    """

    def _not_found(self, *args, **kwargs) -> None:
        raise tornado.web.HTTPError(404, reason="Not found")

    get = post = put = patch = delete = head = options = _not_found
