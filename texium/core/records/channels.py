"""Alert channels: destinations defined once (Slack, PagerDuty, e-mail ...) that jobs name in
`notify.channels`; owned like servers (`user_id`; a `user` sees their own).

What a kind needs and may hold is in FIELDS; the vendor speaking is in events/channels.py. A
channel's secret (a routing key, an API key, a bot token, an ntfy token, a webhook's signing
secret; for Slack, Teams and Discord the webhook URL itself, whose path is the secret) is
encrypted at rest and never shown: `secret` reads "***" and such a URL reads
`https://hooks.slack.com/***`. Sending those back keeps the stored value. A stored secret is
bound to where it was entered: an update that sends the channel to another scheme, host or port
without a new secret is refused, so whoever may edit a channel cannot point it at their own host
and receive the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from urllib.parse import urlsplit

from texium.core import apprise_channel
from texium.core.datastore.base import Datastore, is_valid_id
from texium.core.errors import Conflict, NotFound, TooManyRequests, ValidationError
from texium.core.records.listing import NEWEST_FIRST, Page, list_page
from texium.core.records.users import owned_by
from texium.core.security.secret_args import MASK, has_url_password
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import utcnow
from texium.core.validation import FORMATS, request_schema, require_id, validate_body

log = logging.getLogger("texium.channels")
# The fields, their types, limits and defaults: components/schemas in texium/openapi.yaml.
CHANNEL_CREATE, CHANNEL_UPDATE = request_schema("ChannelCreate"), request_schema("ChannelUpdate")
SECRET_FIELD = "secret_encrypted"
# A channel's test messages are this far apart at least (read from its deliveries, so on every
# node): the button cannot turn the server's SMTP login or a vendor's rate limit into a spam tap.
TEST_INTERVAL_SECONDS = 10
# The URL is the credential: a webhook's path, apprise's tokens.
URL_IS_SECRET = frozenset({"slack", "teams", "discord", "apprise"})
# kind -> (fields it needs, fields it may also have); any other setting is a 400 naming it.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("recipients",), ()),
    "webhook": (("url",), ("secret",)),
    "slack": (("url",), ()),
    "teams": (("url",), ()),
    "discord": (("url",), ()),
    "apprise": (("url",), ()),  # an apprise URL (mailto://, tgram://, json:// ...): the apprise extra
    "pagerduty": (("secret",), ("url",)),
    "opsgenie": (("secret",), ("url",)),
    "ntfy": (("topic",), ("url", "secret", "priority", "tags")),
    "telegram": (("secret", "chat_id"), ("url",)),
}
SETTINGS = ("url", "secret", "recipients", "topic", "chat_id", "priority", "tags")
SECRET_NAMES = {
    "webhook": "signing secret",
    "pagerduty": "routing key",
    "opsgenie": "API key",
    "ntfy": "access token",
    "telegram": "bot token",
}


def origin(url: str | None) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) a URL sends to; None for none."""
    if not url:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or (443 if parts.scheme == "https" else 80)


def masked_url(url: str) -> str:
    """A secret webhook URL as shown: its scheme, host and port, the rest ***."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/{MASK}"


def present(doc: dict) -> dict:
    view = {k: v for k, v in doc.items() if k != SECRET_FIELD}
    has_secret = bool(doc.get(SECRET_FIELD))
    view["has_secret"] = has_secret
    view["secret"] = MASK if has_secret and doc.get("kind") not in URL_IS_SECRET else None
    for name in ("url", "recipients", "topic", "chat_id", "priority", "tags"):
        view.setdefault(name, None)
    return view


class ChannelService:
    def __init__(
        self,
        datastore: Datastore,
        secrets: SecretBox,
        https_only: bool = True,
        send_test: Callable[[dict], dict] | None = None,
        email_domains: Iterable[str] = (),
    ):
        """`https_only`: every URL a channel sends to must be https (CHANNEL_HTTPS_ONLY).
        `send_test(channel)` delivers a test message now and returns the delivery record.
        `email_domains`: where a non-admin's e-mail channel may send besides the owner's own
        address (EMAIL_ALLOWED_DOMAINS), so the server's SMTP login is no open relay."""
        self._ds = datastore
        self._secrets = secrets
        self._https_only = https_only
        self._email_domains = {domain.lower() for domain in email_domains}
        self._send_test = send_test

    # -- the rules a schema cannot say -------------------------------------------------
    def _check(self, doc: dict) -> None:
        """The settings fit the kind: required ones present, foreign ones absent, URLs usable."""
        kind = doc["kind"]
        needed, optional = FIELDS[kind]
        for name in SETTINGS:
            stored_secret = name == "secret" and kind not in URL_IS_SECRET and doc.get(SECRET_FIELD)
            present_ = doc.get(name) not in (None, "", []) or bool(stored_secret)
            if name in needed and not present_:
                raise ValidationError(f"Invalid field {name}: required for a {kind} channel")
            if present_ and name not in needed and name not in optional:
                raise ValidationError(f"Invalid field {name}: not used by a {kind} channel")

    def _clean_url(self, url: str) -> str:
        url = url.strip()
        try:
            FORMATS["http-url"](url)
        except ValueError:
            raise ValidationError("Invalid field url: must be an http(s) URL") from None
        if has_url_password(url):
            raise ValidationError("Invalid field url: no user or password in the URL; use the secret field")
        if self._https_only and urlsplit(url).scheme.lower() != "https":
            raise ValidationError("Invalid field url: must be https (the server's CHANNEL_HTTPS_ONLY setting)")
        return url

    def _clean_apprise_url(self, url: str) -> str:
        """An apprise URL apprise knows (the extra installed: a 400 naming `kind` otherwise).
        CHANNEL_HTTPS_ONLY does not apply: each service's scheme says how apprise sends."""
        if not apprise_channel.available():
            raise ValidationError(f"Invalid field kind: {apprise_channel.INSTALL_HINT}")
        try:
            apprise_channel.check_url(url.strip())
        except ValueError as exc:
            raise ValidationError(f"Invalid field url: {exc}") from None
        return url.strip()

    def _clean_recipients(self, doc: dict) -> None:
        if doc.get("recipients"):
            clean = []
            for index, address in enumerate(doc["recipients"]):
                try:
                    clean.append(FORMATS["email"](address.strip()))
                except ValueError:
                    raise ValidationError(
                        f"Invalid field recipients[{index}]: {address!r} is not an email address"
                    ) from None
            doc["recipients"] = list(dict.fromkeys(clean))

    def _check_recipients(self, doc: dict) -> None:
        owner = self._ds.users.get(doc["user_id"]) or {}
        check_recipients(owner, doc.get("recipients") or (), self._email_domains, "recipients")

    def _seal(self, changes: dict, kind: str, stored: dict | None) -> None:
        """Encrypt the secret (the URL for Slack, Teams and Discord); keep a stored one sent back
        as ***, only for the same destination."""
        if kind in URL_IS_SECRET:
            if "url" not in changes:
                return
            url = (changes["url"] or "").strip()
            if stored is not None and url and url == stored.get("url"):
                del changes["url"]  # the masked URL sent back: keep the stored one
                return
            if url.endswith(f"/{MASK}") or MASK in url:
                raise ValidationError("Invalid field url: enter the whole webhook URL again (it is the secret)")
            if url and kind == "apprise":
                url = self._clean_apprise_url(url)
                changes[SECRET_FIELD], changes["url"] = self._secrets.encrypt(url), apprise_channel.masked(url)
            elif url:
                url = self._clean_url(url)
                changes[SECRET_FIELD], changes["url"] = self._secrets.encrypt(url), masked_url(url)
            return
        if "url" in changes and changes["url"]:
            changes["url"] = self._clean_url(changes["url"])
        kept = "secret" in changes and changes["secret"] == MASK
        if "secret" in changes:
            secret = changes.pop("secret")
            if not kept:
                changes[SECRET_FIELD] = self._secrets.encrypt(secret) if secret else None
        moved = "url" in changes and origin(changes["url"]) != origin((stored or {}).get("url"))
        if moved and stored is not None and stored.get(SECRET_FIELD) and SECRET_FIELD not in changes:
            raise ValidationError(
                f"Invalid field secret: the channel now sends elsewhere; enter its {SECRET_NAMES[kind]} "
                "again (a stored secret goes only where it was entered)"
            )

    def _require_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    # -- CRUD --------------------------------------------------------------------------
    def create(self, body: dict) -> tuple[str, str]:
        doc = validate_body(body, CHANNEL_CREATE)
        if doc.get("secret") == MASK:
            raise ValidationError("Invalid field secret: *** keeps a stored secret; a new channel has none")
        owner = self._ds.users.get(doc["user_id"])
        if owner is None:
            raise ValidationError(f"Invalid field user_id: no user with id {doc['user_id']}")
        if doc["kind"] == "email" and not doc.get("recipients") and owner.get("email"):
            doc["recipients"] = [owner["email"]]  # the owner's own mailbox, by default
        self._clean_recipients(doc)
        self._check(doc)
        self._check_recipients(doc)
        self._seal(doc, doc["kind"], None)
        doc["created_at"] = doc["updated_at"] = utcnow()
        return self._ds.channels.insert(doc), doc["name"]

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        page = list_page(self._ds.channels, owned_by(self._ds, user_id), limit, offset, as_json=False)
        page.items = [present(doc) for doc in page.items]
        return page

    def stored(self, channel_id: str) -> dict:
        doc = self._ds.channels.get(require_id(channel_id, "channel_id"))
        if doc is None:
            raise NotFound("Channel not found")
        return doc

    def get(self, channel_id: str) -> dict:
        return present(self.stored(channel_id))

    def update(self, channel_id: str, body: dict) -> None:
        require_id(channel_id, "channel_id")
        changes = validate_body(body, CHANNEL_UPDATE, partial=True)
        stored = self.stored(channel_id)
        if "user_id" in changes:
            self._require_user(changes["user_id"])
        self._clean_recipients(changes)
        self._seal(changes, stored["kind"], stored)
        self._check({**stored, **changes})
        if "recipients" in changes or "user_id" in changes:  # not on a rename after the owner's address changed
            self._check_recipients({**stored, **changes})
        changes["updated_at"] = utcnow()
        if self._ds.channels.update(channel_id, fields=changes) is None:
            raise NotFound("Channel not found")

    def delete(self, channel_id: str) -> None:
        self.stored(channel_id)
        users = [job for job in self._ds.jobs.find({}) if channel_id in channel_ids(job.get("notify"))]
        if users:
            named = ", ".join(f"{job.get('name')!r} ({job['_id']})" for job in users[:20])
            raise Conflict(f"Channel is still named by {len(users)} job(s): {named}; remove it from their notify first")
        if not self._ds.channels.delete(channel_id):
            raise NotFound("Channel not found")

    # -- deliveries --------------------------------------------------------------------
    def test(self, channel_id: str) -> dict:
        """Send a test message now; the delivery record."""
        if self._send_test is None:
            raise NotFound("Channel tests are not available")
        channel = self.stored(channel_id)
        recent = {"channel_id": channel_id, "event": "test"}
        recent["created_at"] = {"$gt": utcnow() - timedelta(seconds=TEST_INTERVAL_SECONDS)}
        if self._ds.channel_deliveries.count(recent):
            raise TooManyRequests(f"A test message was sent less than {TEST_INTERVAL_SECONDS} s ago; try again later")
        return self._send_test(channel)

    def deliveries(self, channel_id: str, limit: int, offset: int) -> Page:
        self.stored(channel_id)
        return list_page(self._ds.channel_deliveries, {"channel_id": channel_id}, limit, offset, sort=NEWEST_FIRST)


def check_recipients(owner: dict, recipients: Iterable[str], domains: set[str], field: str) -> None:
    """A non-admin owner mails only their own address and the allowed domains (EMAIL_ALLOWED_DOMAINS,
    lower case), so the server's SMTP login is no open relay; a 400 naming `field`[index] otherwise."""
    if owner.get("role") == "admin":
        return
    for index, address in enumerate(recipients):
        domain = address.rpartition("@")[2].lower()
        if address.lower() != (owner.get("email") or "").lower() and domain not in domains:
            allowed = ", ".join(sorted(domains)) or "none"
            raise ValidationError(
                f"Invalid field {field}[{index}]: the owner may mail only their own address "
                f"and the domains of EMAIL_ALLOWED_DOMAINS ({allowed})"
            )


def channel_ids(notify: dict | None) -> list[str]:
    """The channel ids a job's notify names."""
    return [entry.get("id") for entry in (notify or {}).get("channels") or [] if is_valid_id(entry.get("id"))]
