"""A job's per-job `notify.email` / `notify.webhook` (the alerts before channels) turned into
channels: one delivery path for every alert.

The conversion makes an e-mail channel with those recipients and a webhook channel with that
URL, owned by the job's owner, and returns the notify naming them (with the notify's `events`)
and its `email` / `webhook` emptied. It is used by the start-up migration of stored jobs, by the
API's job writes (the old fields stay accepted) and by the alerts thread for a job some older
node wrote since. It is idempotent and safe on several nodes at once: an identical channel of
the owner is reused, and a new one gets an id derived from what it holds (owner, kind,
recipients or URL), inserted only if absent, so two nodes converting at once make one channel.

The security rules stay those of channels: at an API write, a non-admin owner's recipients are
their own address and EMAIL_ALLOWED_DOMAINS only (records/channels.py check_recipients) and a
webhook URL holds no password. Jobs already stored were accepted by the server that stored
them, so the start-up migration keeps their recipients (and says so in the audit entry); a
stored webhook URL with a password (from before that rule) is not moved into a channel, whose
URL is shown in the API: the job keeps it, and it is not sent (logged, once per start).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from texium.core.datastore.base import Datastore
from texium.core.errors import ValidationError
from texium.core.records.channels import SECRET_FIELD, check_recipients
from texium.core.security.secret_args import has_url_password
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.channels")
NAME_CHARS = 200  # a channel name's limit (ChannelCreate)


def is_legacy(notify: Any) -> bool:
    """Whether a notify still holds e-mail recipients or a webhook of its own."""
    return isinstance(notify, dict) and bool(notify.get("email") or notify.get("webhook"))


def channel_id(owner_id: str, kind: str, value: str) -> str:
    """The id of the channel a conversion makes: the same on every node, for the same content."""
    return hashlib.sha256(f"texium-notify|{owner_id}|{kind}|{value}".encode()).hexdigest()[:24]


@dataclass
class Conversion:
    notify: dict | None
    notes: list[str] = field(default_factory=list)  # what was made or reused, for the audit entry

    @property
    def summary(self) -> str:
        return "notify.email / notify.webhook moved to channels: " + "; ".join(self.notes)


class LegacyNotify:
    def __init__(self, datastore: Datastore, email_domains: tuple[str, ...] | list[str] = ()):
        """`email_domains`: EMAIL_ALLOWED_DOMAINS, where a non-admin owner's e-mail may go."""
        self._ds = datastore
        self._email_domains = {domain.lower() for domain in email_domains}

    def convert(self, notify: dict | None, owner_id: str, enforce: bool = True) -> Conversion:
        """The notify with its e-mail and webhook as channels. `enforce`: the channel rules apply
        (a ValidationError naming the notify field otherwise): API writes. Off for what a server
        already stored."""
        if not is_legacy(notify):
            return Conversion(notify)
        events = list(notify.get("events") or [])
        entries = [dict(entry) for entry in notify.get("channels") or []]
        conversion = Conversion(None)
        kept_webhook = None
        recipients = list(dict.fromkeys(a.strip() for a in notify.get("email") or () if a and a.strip()))
        if recipients:
            owner = self._ds.users.get(owner_id) or {}
            try:
                check_recipients(owner, recipients, self._email_domains, "notify.email")
            except ValidationError as exc:
                if enforce:
                    raise
                conversion.notes.append(f"kept recipients the channel rules would refuse ({exc.detail})")
            channel = self._email_channel(owner_id, recipients)
            conversion.notes.append(f"e-mail channel {channel['name']!r} ({channel['_id']})")
            _name(entries, channel["_id"], events)
        url = (notify.get("webhook") or "").strip()
        if url and has_url_password(url):
            if enforce:
                raise ValidationError("Invalid field notify.webhook: no password in the URL")
            kept_webhook = url  # not moved into a channel, whose URL the API shows
            conversion.notes.append(f"{webhook_name(url)} kept: its URL holds a password (not sent)")
        elif url:
            channel = self._webhook_channel(owner_id, url)
            conversion.notes.append(f"webhook channel {channel['name']!r} ({channel['_id']})")
            _name(entries, channel["_id"], events)
        conversion.notify = {"email": [], "webhook": kept_webhook, "events": events}
        if entries:
            conversion.notify["channels"] = entries
        return conversion

    def _email_channel(self, owner_id: str, recipients: list[str]) -> dict:
        wanted = sorted(address.lower() for address in recipients)
        for channel in self._ds.channels.find({"user_id": owner_id, "kind": "email"}):
            same = sorted(a.lower() for a in channel.get("recipients") or ()) == wanted
            if same and not channel.get(SECRET_FIELD):
                return channel
        doc = {"kind": "email", "name": ", ".join(recipients)[:NAME_CHARS], "recipients": recipients}
        return self._insert(channel_id(owner_id, "email", ",".join(wanted)), owner_id, doc)

    def _webhook_channel(self, owner_id: str, url: str) -> dict:
        for channel in self._ds.channels.find({"user_id": owner_id, "kind": "webhook", "url": url}):
            if not channel.get(SECRET_FIELD):  # its own signing secret would sign differently
                return channel
        doc = {"kind": "webhook", "name": webhook_name(url), "url": url}
        return self._insert(channel_id(owner_id, "webhook", url), owner_id, doc)

    def _insert(self, doc_id: str, owner_id: str, doc: dict) -> dict:
        """Insert the channel unless a node did already; the channel as stored."""
        existing = self._ds.channels.get(doc_id)
        if existing is not None:
            return existing
        now = utcnow()
        doc = {"_id": doc_id, "user_id": owner_id, **doc, "created_at": now, "updated_at": now}
        if self._ds.channels.insert_many([doc]):
            log.info("Made %s channel %s of user %s from a job's notify", doc["kind"], doc_id, owner_id)
            return doc
        return self._ds.channels.get(doc_id) or doc


def as_legacy(notify: Any, channels: dict[str, dict]) -> Any:
    """The notify with its plain e-mail and webhook channels (no secret of their own, sent the
    notify's events) back as `email` / `webhook`: how jobs as code write it, so a document reads
    as it was written and moves to another store (channel ids do not; the import converts again,
    reusing the same channels on the same store). `channels`: the channels as the API shows them."""
    if not isinstance(notify, dict) or not notify.get("channels"):
        return notify
    email, webhook = list(notify.get("email") or []), notify.get("webhook")
    events, kept, folded = list(notify.get("events") or []), [], False
    for entry in notify["channels"]:
        channel = channels.get(entry.get("id")) or {}
        kind = channel.get("kind") if not channel.get("has_secret") else None
        same_events = not (email or webhook) or entry.get("events") == events
        if kind == "email" and channel.get("recipients") and same_events:
            email += [address for address in channel["recipients"] if address not in email]
        elif kind == "webhook" and channel.get("url") and webhook is None and same_events:
            webhook = channel["url"]
        else:
            kept.append(entry)
            continue
        events, folded = list(entry.get("events") or []), True
    if not folded:
        return notify
    legacy = {"email": email, "webhook": webhook, "events": events}
    return {**legacy, "channels": kept} if kept else legacy


def webhook_name(url: str) -> str:
    """A webhook channel's name: where it sends, not its path (a Slack-style hook keeps a token
    there, and logs and health name channels by their names)."""
    parts = urlsplit(url)
    return f"webhook {parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"[:NAME_CHARS]


def _name(entries: list[dict], channel_id_: str, events: list[str]) -> None:
    """Add the channel to the notify's entries with `events` (merged into an entry naming it)."""
    for entry in entries:
        if entry.get("id") == channel_id_:
            entry["events"] = list(dict.fromkeys([*(entry.get("events") or ()), *events]))
            return
    entries.append({"id": channel_id_, "events": list(events)})
