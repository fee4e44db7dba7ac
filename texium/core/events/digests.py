"""Grouping: when many jobs alert one channel at once (a shared dependency is down), the channel
gets a few messages and then one digest, not one message per job.

Each channel has a window in the store (`scheduler_channel_windows`, one document per channel):
the first message after a quiet spell opens it for `seconds`; the messages of its first `after`
jobs go out as usual (every message of those jobs: one job's failure, re-alert and recovery are no
crowd), those of later jobs are held: recorded in `scheduler_channel_deliveries` with status `held`
and the window's id. A window that held messages has a digest document
(`scheduler_channel_digests`, unique per window) due when the window ends. Every node counts
into the same window by compare-and-set on its count, so `after` holds across nodes.

Whoever finds a digest due (the worker of the node that held, at the window's end, or any node's
sweep) claims it with one conditional write (status `pending` -> `sending`, with a claim id and
an expiry), sends one message listing the held alerts, marks them `digested` (or `failed`, with
the digest's error: a held message is never silently lost) and closes the digest. A node killed
after claiming leaves the claim to expire; another node then claims it and sends it.

PagerDuty and Opsgenie are never digested: they deduplicate per job themselves and must keep
trigger and resolve per job. `test` messages are never held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from texium.core.datastore.base import Datastore, new_id
from texium.core.errors import DuplicateKeyError
from texium.core.events import messages
from texium.core.events.channels import (
    FAILED,
    SENT,
    Request,
    _headers,
    _json,
    ntfy_request,
    teams_card,
    telegram_request,
)
from texium.core.security.outbound import SIGNATURE_HEADER, sign
from texium.core.timeutil import as_utc, to_iso, utcnow

log = logging.getLogger("texium.channels")

NOT_DIGESTED = frozenset({"pagerduty", "opsgenie"})  # they dedupe per job; trigger/resolve stay per job
NEVER_HELD = frozenset({"test"})
LISTED = 50  # alerts a digest lists; the rest are counted ("and N more")
GRACE_SECONDS = 1.0  # a digest is due this long after its window ends: late holds of other nodes land first
CLAIM_SECONDS = 120.0  # a claim older than this (its node died while sending) may be taken over
CAS_TRIES = 20
HELD, DIGESTED = "held", "digested"  # a held message, then sent in its digest
PENDING, SENDING = "pending", "sending"


def first_line(error: Any) -> str:
    """The first non-empty line of an (already masked) error, bounded."""
    for line in str(error or "").splitlines():
        if line.strip():
            return " ".join(line.split())[:200]
    return ""


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Digest:
    """One digest message: the held alerts of one window of one channel, as each kind words it.
    Quacks like channels.Message for the Sender (title, text, event, job, execution)."""

    event = "digest"

    def __init__(self, channel: dict, digest: dict, held: list[dict], link_base: str):
        self.job = {"_id": None, "name": f"digest of channel {channel.get('name')}"}
        self.execution = {"_id": None}
        self.link = f"{link_base}/"
        self.items = held[:LISTED]
        self.more = len(held) - len(self.items)
        self.count = len(held)
        jobs = len({item.get("job_id") for item in held})
        self.title = f"Alert digest: {_many(self.count, 'more alert')} ({_many(jobs, 'job')})"
        self.record_fields = {"digest_id": digest["window_id"], "items": self.count}
        self.lines = [self._line(item) for item in self.items]
        if self.more:
            self.lines.append(f"and {self.more} more")
        self.text = "\n".join([self.title, "", *self.lines, "", f"Dashboard: {self.link}"]) + "\n"
        self.window = {name: messages.iso(digest.get(name)) for name in ("opened_at", "ends_at")}

    @staticmethod
    def _line(item: dict) -> str:
        error = f": {item['excerpt']}" if item.get("excerpt") else ""
        return f"{messages.iso(item.get('occurred_at'))} {item.get('event')} {item.get('job_name')}{error}"

    def _payload(self) -> dict:
        return {
            "event": "digest",
            "count": self.count,
            "window": self.window,
            "alerts": [
                {
                    "event": item.get("event"),
                    "job": {"id": item.get("job_id"), "name": item.get("job_name")},
                    "execution_id": item.get("execution_id"),
                    "at": messages.iso(item.get("occurred_at")),
                    "error": item.get("excerpt") or "",
                }
                for item in self.items
            ],
            "more": self.more,
            "link": self.link,
            "timestamp": to_iso(utcnow()),
        }

    def _chunks(self, size: int) -> list[str]:
        """The lines in pieces of at most `size` characters (vendors bound a text block)."""
        chunks, current = [], ""
        for line in self.lines:
            line = line[: size - 1]
            if current and len(current) + len(line) + 1 > size:
                chunks.append(current)
                current = ""
            current = f"{current}\n{line}" if current else line
        return [*chunks, current] if current else chunks

    # -- the builders channels.Sender calls, by kind -----------------------------------
    def webhook(self, channel: dict, secret: str | None) -> Request:
        body = _json(self._payload())
        headers = _headers({"X-Texium-Event": "digest"})
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        return Request(channel["url"], body, headers)

    def slack(self, channel: dict, secret: str | None) -> Request:
        blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}}]
        for chunk in self._chunks(2900)[:45]:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.link}|Open Texium>"}]})
        return Request(secret or "", _json({"text": self.title, "blocks": blocks}), _headers())

    def teams(self, channel: dict, secret: str | None) -> Request:
        title = {"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": self.title, "wrap": True}
        body: list[dict] = [title]
        body += [{"type": "TextBlock", "text": line, "wrap": True, "spacing": "None"} for line in self.lines]
        return teams_card(secret, body, "Open Texium", self.link)

    def discord(self, channel: dict, secret: str | None) -> Request:
        embed = {
            "title": self.title[:256],
            "url": self.link,
            "color": 0xD93025,
            "description": (self._chunks(4000) or [""])[0],
            "timestamp": to_iso(utcnow()),
        }
        return Request(secret or "", _json({"username": "Texium", "embeds": [embed]}), _headers())

    def ntfy(self, channel: dict, secret: str | None) -> Request:
        return ntfy_request(channel, secret, self, channel.get("priority") or 3, "rotating_light")

    def telegram(self, channel: dict, secret: str | None) -> Request:
        return telegram_request(channel, secret, self.text)


class Digests:
    """The windows, holds and digests of every channel, in the store (so across nodes)."""

    def __init__(self, datastore: Datastore, seconds: float, after: int, link_base: str = ""):
        self._ds = datastore
        self._window = timedelta(seconds=seconds)
        self._after = max(1, int(after))  # the message that opens a window always goes out
        self._link_base = link_base

    @property
    def _windows(self):
        return self._ds.channel_windows

    @property
    def _digests(self):
        return self._ds.channel_digests

    def applies(self, channel: dict, event: str) -> bool:
        return channel.get("kind") not in NOT_DIGESTED and event not in NEVER_HELD

    # -- the hold: one compare-and-set on the channel's window ---------------------------
    def admit(self, channel: dict, message: Any) -> dict | None:
        """None: send `message` now. Else it was held: its delivery record (status `held`).
        A store that keeps refusing the count lets the message go out rather than lose it."""
        channel_id = channel["_id"]
        for _ in range(CAS_TRIES):
            now = utcnow()
            window = self._windows.find_one({"channel_id": channel_id})
            if window is None or as_utc(window["ends_at"]) <= now:
                if self._open(channel_id, window, now, str(message.job.get("_id") or "")):
                    return None
                continue
            count = int(window.get("count") or 0)
            jobs = list(window.get("jobs") or [])
            job_id = str(message.job.get("_id") or "")
            if job_id in jobs:
                return None  # a job already heard from in this window: one job's news is no crowd
            moved = {"_id": window["_id"], "window_id": window["window_id"], "count": count}
            fields = {"count": count + 1}
            if count + 1 <= self._after:
                fields["jobs"] = [*jobs, job_id]
            if self._windows.update_many(moved, fields) != 1:
                continue
            if count + 1 <= self._after:
                return None
            return self._hold(channel, message, window)
        log.warning("Channels: the digest window of channel %s kept changing; message sent alone", channel_id)
        return None

    def _open(self, channel_id: str, window: dict | None, now: datetime, job_id: str) -> bool:
        """Open a new window (this message is its first); False when another node did first."""
        fields = {"window_id": new_id(), "opened_at": now, "ends_at": now + self._window, "count": 1, "jobs": [job_id]}
        if window is None:
            try:
                self._windows.insert({"channel_id": channel_id, **fields})
                return True
            except DuplicateKeyError:
                return False
        return self._windows.update_many({"_id": window["_id"], "window_id": window["window_id"]}, fields) == 1

    def _hold(self, channel: dict, message: Any, window: dict) -> dict:
        window_id = window["window_id"]
        try:
            self._digests.insert(
                {
                    "window_id": window_id,
                    "channel_id": channel["_id"],
                    "opened_at": window["opened_at"],
                    "ends_at": window["ends_at"],
                    "due_at": as_utc(window["ends_at"]) + timedelta(seconds=GRACE_SECONDS),
                    "status": PENDING,
                    "created_at": utcnow(),
                }
            )
        except DuplicateKeyError:
            pass  # an earlier hold of this window made it
        execution = message.execution
        at = execution.get("completed_at") or execution.get("scheduled_at")
        record = {
            "channel_id": channel["_id"],
            "user_id": channel.get("user_id"),
            "kind": channel["kind"],
            "event": message.event,
            "job_id": message.job.get("_id"),
            "job_name": message.job.get("name"),
            "execution_id": execution.get("_id"),
            "ok": False,
            "status": HELD,
            "status_code": None,
            "attempt": 0,
            "error": "",
            "digest_id": window_id,
            "occurred_at": at if isinstance(at, datetime) else utcnow(),
            "excerpt": first_line(execution.get("error")),
            "created_at": utcnow(),
        }
        record["_id"] = self._ds.channel_deliveries.insert(dict(record))
        # A digest already sent (a node whose clock runs behind held late): send another for this one.
        self._digests.update_many(
            {"window_id": window_id, "status": {"$in": [SENT, FAILED]}}, {"status": PENDING, "due_at": utcnow()}
        )
        return record

    # -- the digest: found due, claimed by one node, sent, closed ------------------------
    def due(self, channel_id: str | None = None, limit: int = 100) -> list[dict]:
        """Digests that may be claimed now: pending and due, or claimed by a node that let its claim expire."""
        now = utcnow()
        scope = {"channel_id": channel_id} if channel_id else {}
        found = self._digests.find({**scope, "status": PENDING, "due_at": {"$lte": now}}, limit=limit)
        found += self._digests.find({**scope, "status": SENDING, "claim_expires_at": {"$lt": now}}, limit=limit)
        return found

    def next_due(self, channel_id: str) -> datetime | None:
        first = self._digests.find_one({"channel_id": channel_id, "status": PENDING}, sort=[("due_at", 1)])
        return as_utc(first["due_at"]) if first else None

    def send(self, channel: dict | None, digest: dict, deliver: Callable[[dict, Digest], dict]) -> bool:
        """Claim `digest` and send it through `deliver(channel, message)`; False when another node has it."""
        claim = new_id()
        now = utcnow()
        taken = {"_id": digest["_id"], "status": digest["status"], "claim_id": digest.get("claim_id")}
        if digest["status"] == PENDING:
            taken["due_at"] = {"$lte": now}
        else:
            taken["claim_expires_at"] = {"$lt": now}
        expires = now + timedelta(seconds=CLAIM_SECONDS)
        if self._digests.update_many(taken, {"status": SENDING, "claim_id": claim, "claim_expires_at": expires}) != 1:
            return False
        held_query = {"digest_id": digest["window_id"], "status": HELD}
        held = self._ds.channel_deliveries.find(held_query, sort=[("created_at", 1)])
        if not held:
            outcome = {"ok": True, "_id": None, "error": ""}
        elif channel is None:
            outcome = {"ok": False, "_id": None, "error": "the channel was deleted before its digest was sent"}
        else:
            outcome = deliver(channel, Digest(channel, digest, held, self._link_base))
        ids = [item["_id"] for item in held]
        if ids:
            error = "" if outcome.get("ok") else f"digest not delivered: {outcome.get('error')}"
            fields = {"status": DIGESTED if outcome.get("ok") else FAILED, "ok": bool(outcome.get("ok"))}
            fields.update({"error": error, "digest_delivery_id": outcome.get("_id")})
            self._ds.channel_deliveries.update_many({"_id": {"$in": ids}, "status": HELD}, fields)
        closed = {"status": SENT if outcome.get("ok") else FAILED, "sent_at": utcnow(), "items": len(ids)}
        if self._ds.channel_deliveries.count(held_query):  # held while this one was sent: one more digest
            closed.update({"status": PENDING, "due_at": utcnow()})
        self._digests.update_many({"_id": digest["_id"], "claim_id": claim}, closed)
        return True
