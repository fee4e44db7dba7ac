"""Alert channels: how each kind of destination is spoken to, and the workers that deliver.

A channel (records/channels.py stores them) is a destination defined once and named by jobs'
`notify.channels`. The job's alert state machine (alerts.py) decides WHEN an event is sent; the
channel's kind decides HOW: each kind below builds the vendor's documented request (Slack Block
Kit, a Teams Adaptive Card, PagerDuty Events API v2, Opsgenie alerts by alias, ntfy, Telegram
sendMessage, Discord embeds, the signed Texium webhook, or an e-mail). On `recovery` PagerDuty
resolves and Opsgenie closes what the failure opened: both key it by `texium-job-<job id>`.

Every channel has its own queue and worker thread (`Deliveries`), so a channel that hangs
delays only its own messages: never another channel, the alerts thread or the firing path. Each
request has a timeout; connection errors, timeouts and 5xx are retried a few times with doubling
waits. Every delivery is recorded in `scheduler_channel_deliveries` (channel, event, status code,
attempts, error, at) and reported to the caller's callback (the execution's `alerts`). The
secrets a channel holds (tokens, routing keys, webhook URLs) are never in a log line, an error
or a record: errors name the channel, never the URL.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from texium.core import apprise_channel
from texium.core.datastore.base import Datastore
from texium.core.events import messages
from texium.core.events.mail import MailError, send_message
from texium.core.security.outbound import SIGNATURE_HEADER, OutboundPolicy, OutboundRefused, http_request, sign
from texium.core.timeutil import utcnow

log = logging.getLogger("texium.channels")

KINDS = ("email", "webhook", "slack", "teams", "pagerduty", "opsgenie", "ntfy", "telegram", "discord", "apprise")
# Vendors' API addresses, used when a channel sets no `url` (EU regions and self-hosted servers set theirs).
BASE_URLS = {
    "pagerduty": "https://events.pagerduty.com",
    "opsgenie": "https://api.opsgenie.com",
    "ntfy": "https://ntfy.sh",
    "telegram": "https://api.telegram.org",
}
RESOLVING = "recovery"  # the event that resolves (PagerDuty) or closes (Opsgenie) what a failure opened
TIMEOUT = 10.0  # seconds per request
QUEUE_LIMIT = 1000  # deliveries waiting for one channel; more are recorded as failed rather than queued
IDLE_SECONDS = 60.0  # a channel's worker with nothing to send ends after this long
USER_AGENT = "Texium-Alerts/1"
SWEEP_SECONDS = 5.0  # how often a node looks for digests due that no worker of its own waits for
SENT, FAILED = "sent", "failed"  # a delivery's status (events/digests.py adds held and digested)
_COLORS = {"failure": 0xD93025, "timeout": 0xD93025, "missed": 0xF29900, "paused": 0xF29900, "recovery": 0x188038}
_NTFY_TAGS = {"failure": "rotating_light", "timeout": "hourglass", "missed": "warning", "paused": "pause_button"}
_NTFY_TAGS.update({"recovery": "white_check_mark", "test": "test_tube"})


def dedup_key(job: Mapping[str, Any]) -> str:
    """The key PagerDuty and Opsgenie know a job's incident by: one per job, stable across runs."""
    return f"texium-job-{job.get('_id')}"


@dataclass
class Request:
    """One HTTP request to a vendor; `url` may hold a secret (a bot token, a webhook path)."""

    url: str
    body: bytes
    headers: dict


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _headers(extra: Mapping[str, str] | None = None, content_type: str = "application/json") -> dict:
    return {"Content-Type": content_type, "User-Agent": USER_AGENT, **(extra or {})}


def ntfy_request(channel: Mapping[str, Any], secret: str | None, message: Any, priority: int, tag: str) -> Request:
    """An ntfy publish of `message` (its title, text, link) with the channel's tags plus `tag`."""
    headers = _headers(
        {
            "Title": message.title.encode("ascii", "replace").decode("ascii"),
            "Priority": str(priority),
            "Tags": ",".join([*(channel.get("tags") or []), tag]),
            "Click": message.link,
        },
        content_type="text/plain; charset=utf-8",
    )
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return Request(f"{_base(channel)}/{quote(channel['topic'], safe='')}", message.text.encode("utf-8"), headers)


def telegram_request(channel: Mapping[str, Any], secret: str | None, text: str) -> Request:
    payload = {"chat_id": channel["chat_id"], "text": text[:4096], "disable_web_page_preview": True}
    return Request(f"{_base(channel)}/bot{secret}/sendMessage", _json(payload), _headers())


def teams_card(secret: str | None, body: list[dict], action: str, link: str) -> Request:
    """A Teams workflow message: one Adaptive Card 1.4 of `body`, with one button to `link`."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": action, "url": link}],
    }
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
    return Request(secret or "", _json({"type": "message", "attachments": [attachment]}), _headers())


def _base(channel: Mapping[str, Any]) -> str:
    return str(channel.get("url") or BASE_URLS[channel["kind"]]).rstrip("/")


class Message:
    """An event of a job as each kind words it."""

    def __init__(self, job: dict, event: str, execution: dict, link_base: str):
        self.job, self.event, self.execution, self.link_base = job, event, execution, link_base
        self.title = messages.title(job, event)
        self.text = messages.text(job, event, execution, link_base)
        self.link = messages.link(link_base, execution)
        self.facts = messages.facts(job, event, execution)
        self.error = messages.error_excerpt(execution.get("error"))

    # -- one builder per kind: (channel, its secret) -> Request ---------------------------
    def webhook(self, channel: dict, secret: str | None) -> Request:
        body = _json(messages.webhook_payload(self.job, self.event, self.execution, self.link_base))
        headers = _headers({"X-Texium-Event": self.event, "X-Texium-Execution": str(self.execution.get("_id"))})
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        return Request(channel["url"], body, headers)

    def slack(self, channel: dict, secret: str | None) -> Request:
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in self.facts[:10]]},
        ]
        if self.error:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{self.error[:2900]}```"}})
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.link}|Open the execution>"}]}
        )
        return Request(secret or "", _json({"text": self.title, "blocks": blocks}), _headers())

    def teams(self, channel: dict, secret: str | None) -> Request:
        body: list[dict] = [
            {"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": self.title, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in self.facts]},
        ]
        if self.error:
            body.append({"type": "TextBlock", "text": self.error, "wrap": True, "fontType": "Monospace"})
        return teams_card(secret, body, "Open the execution", self.link)

    def discord(self, channel: dict, secret: str | None) -> Request:
        embed = {
            "title": self.title[:256],
            "url": self.link,
            "color": _COLORS.get(self.event, 0x5F6368),
            "description": f"```{self.error[:4000]}```" if self.error else "",
            "fields": [{"name": k, "value": v[:1024], "inline": True} for k, v in self.facts],
            "timestamp": messages.iso(utcnow()),
        }
        return Request(secret or "", _json({"username": "Texium", "embeds": [embed]}), _headers())

    def pagerduty(self, channel: dict, secret: str | None) -> Request:
        url = f"{_base(channel)}/v2/enqueue"
        key = dedup_key(self.job) if self.event != "test" else f"texium-channel-test-{channel.get('_id')}"
        if self.event == RESOLVING:
            return Request(url, _json({"routing_key": secret, "event_action": "resolve", "dedup_key": key}), _headers())
        payload = {
            "routing_key": secret,
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {
                "summary": self.title[:1024],
                "source": "texium",
                "severity": "warning" if self.event in ("missed", "paused", "test") else "error",
                "timestamp": messages.iso(utcnow()),
                "component": str(self.job.get("name")),
                "custom_details": {**dict(self.facts), "error": self.error},
            },
            "links": [{"href": self.link, "text": "Texium execution"}],
        }
        return Request(url, _json(payload), _headers())

    def opsgenie(self, channel: dict, secret: str | None) -> Request:
        alias = dedup_key(self.job) if self.event != "test" else f"texium-channel-test-{channel.get('_id')}"
        auth = {"Authorization": f"GenieKey {secret}"}
        if self.event == RESOLVING:
            url = f"{_base(channel)}/v2/alerts/{quote(alias, safe='')}/close?identifierType=alias"
            return Request(url, _json({"source": "Texium", "note": self.title}), _headers(auth))
        payload = {
            "message": self.title[:130],
            "alias": alias,
            "description": self.text[:15000],
            "source": "Texium",
            "priority": "P3" if self.event in ("missed", "paused", "test") else "P2",
            "tags": ["texium", self.event],
            "details": {k: v for k, v in self.facts},
        }
        return Request(f"{_base(channel)}/v2/alerts", _json(payload), _headers(auth))

    def ntfy(self, channel: dict, secret: str | None) -> Request:
        priority = channel.get("priority") or 3 if self.event != RESOLVING else 3
        return ntfy_request(channel, secret, self, priority, _NTFY_TAGS.get(self.event, "bell"))

    def telegram(self, channel: dict, secret: str | None) -> Request:
        return telegram_request(channel, secret, self.text)


@dataclass
class Outcome:
    """What became of one delivery."""

    ok: bool
    status_code: int | None
    attempts: int
    error: str


class Sender:
    """Sends one message to one channel, with retries; never raises, never shows a secret."""

    def __init__(
        self,
        config: Mapping[str, Any],
        policy: OutboundPolicy,
        attempts: int = 3,
        backoff: float = 1.0,
        timeout: float = TIMEOUT,
        webhook_secret: str | None = None,
    ):
        self._config = config  # the SMTP_* settings, for e-mail channels
        self._policy = policy
        self._attempts = max(1, int(attempts))
        self._backoff = max(0.0, float(backoff))
        self._timeout = timeout
        self._webhook_secret = webhook_secret  # ALERT_WEBHOOK_SECRET, for webhooks without their own
        self.stopping = threading.Event()

    def send(self, channel: dict, secret: str | None, message: Message, attempts: int | None = None) -> Outcome:
        attempts = max(1, attempts or self._attempts)
        try:
            if channel["kind"] == "email":
                return self._email(channel, message, attempts)
            if channel["kind"] == "apprise":
                return self._apprise(secret or "", message, attempts)
            if channel["kind"] == "webhook":
                secret = secret or self._webhook_secret
            request = getattr(message, channel["kind"])(channel, secret)
        except Exception as exc:  # a bug in a builder is one failed delivery
            return Outcome(False, None, 0, f"cannot build the message: {type(exc).__name__}")
        return self._http(request, attempts)

    def _wait(self, attempt: int, attempts: int) -> bool:
        """Wait before attempt + 1; False when there is none (last attempt, or stopping)."""
        return attempt < attempts and not self.stopping.wait(self._backoff * 2 ** (attempt - 1))

    def _http(self, request: Request, attempts: int) -> Outcome:
        attempt = 1
        while True:
            status = None
            try:
                answer = http_request(
                    self._policy,
                    "POST",
                    request.url,
                    body=request.body,
                    headers=request.headers,
                    timeout=self._timeout,
                    read_limit=1024,
                )
            except OutboundRefused as exc:
                return Outcome(False, None, attempt, str(exc))
            except ValueError:  # its message would show the URL, and the URL may hold the secret
                return Outcome(False, None, attempt, "not a valid http(s) URL")
            except TimeoutError:
                error = f"timed out after {self._timeout:g} s"
            except (OSError, http.client.HTTPException) as exc:
                error = " ".join(str(getattr(exc, "strerror", None) or type(exc).__name__).split())
            else:
                status = answer.status
                if 200 <= status < 300:
                    return Outcome(True, status, attempt, "")
                error = f"HTTP {status} {answer.reason}".strip()
                if status < 500 and status != 429:  # a redirect or a client error: trying again changes nothing
                    return Outcome(False, status, attempt, error)
            if not self._wait(attempt, attempts):
                return Outcome(False, status, attempt, error)
            attempt += 1

    def _apprise(self, url: str, message: Message, attempts: int) -> Outcome:
        """Through the apprise extra (apprise_channel.py): the outbound rules checked first, then
        `attempts` tries. Its errors are not shown: they may hold the URL's tokens."""
        try:
            apprise_channel.check_outbound(self._policy, url)
        except OutboundRefused as exc:
            return Outcome(False, None, 1, str(exc))
        except OSError:
            return Outcome(False, None, 1, "its host does not resolve")
        attempt = 1
        while True:
            try:
                sent = apprise_channel.send(url, message.title, message.text, message.event, self._timeout)
                error = "" if sent else "apprise could not deliver it"
            except Exception as exc:  # whatever apprise raises is one failed attempt
                error = f"apprise failed: {type(exc).__name__}"
            if not error:
                return Outcome(True, None, attempt, "")
            if not self._wait(attempt, attempts):
                return Outcome(False, None, attempt, error)
            attempt += 1

    def _email(self, channel: dict, message: Message, attempts: int) -> Outcome:
        headers = {"X-Texium-Job": str(message.job.get("name")), "X-Texium-Event": message.event}
        headers["X-Texium-Execution"] = str(message.execution.get("_id"))
        attempt = 1
        while True:
            try:
                send_message(
                    self._config,
                    list(channel.get("recipients") or []),
                    f"[Texium] {message.title}",
                    message.text,
                    headers=headers,
                    timeout=self._timeout,
                )
                return Outcome(True, None, attempt, "")
            except MailError as exc:
                if not (exc.transient and self._wait(attempt, attempts)):
                    return Outcome(False, None, attempt, " ".join(str(exc).split()))
            attempt += 1


Report = Callable[[dict], None]  # receives the delivery record once it is done


class Deliveries:
    """One queue and worker thread per channel; records every delivery.

    `open_secret(channel)` gives the channel's secret in clear (decrypted only on its worker).
    """

    def __init__(
        self,
        datastore: Datastore,
        sender: Sender,
        open_secret: Callable[[dict], str | None],
        link_base: str = "",
        metrics=None,
        digests=None,
    ):
        """`digests` (events/digests.py; None: off) holds a channel's messages past the first
        few of a window and sends them as one digest when the window ends."""
        self._ds = datastore
        self._digests = digests
        self._next_sweep = 0.0
        self.link_base = link_base  # PUBLIC_URL, for the links in messages
        self._sender = sender
        self._open_secret = open_secret
        self._metrics = metrics
        self._lock = threading.Lock()
        self._workers: dict[str, queue.Queue] = {}
        self._closed = False
        self._pending = 0  # deliveries queued or under way, on every channel (drain waits for none)
        # Its own lock, not _lock: stop() holds _lock while it waits for room in a full queue,
        # which a worker makes only once it has counted its last delivery done.
        self._idle = threading.Condition(threading.Lock())

    def message(self, job: dict, event: str, execution: dict) -> Message:
        return Message(job, event, execution, self.link_base)

    def send_test(self, channel: dict) -> dict:
        """Deliver a test message at once on the caller's thread, one attempt; the record."""
        job = {"_id": None, "name": f"channel {channel.get('name')}"}
        execution = {"_id": None, "status": "test", "attempt": None}
        return self._deliver(channel, self.message(job, "test", execution), attempts=1)

    def enqueue(self, channel: dict, message: Message, report: Report | None = None) -> None:
        """Queue a delivery on the channel's own worker; returns at once."""
        if self._put(channel, message, report):
            return
        record = self._record(channel, message, Outcome(False, None, 0, f"{QUEUE_LIMIT} deliveries already queued"))
        if report is not None:
            report(record)

    def sweep_digests(self) -> None:
        """Hand the digests due (windows ended; claims of dead nodes expired) to their channels'
        workers, at most every SWEEP_SECONDS: the backstop for digests whose node is gone.
        One of the node's alert checks (checks.py); the worker's claim decides which node sends."""
        if self._digests is None or self._closed or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            for digest in self._digests.due():
                channel = self._ds.channels.get(digest["channel_id"])
                if channel is None:  # deleted: its held messages are recorded failed
                    self._digests.send(None, digest, self._deliver)
                else:
                    self._put(channel, _Due(digest), None)
        except Exception as exc:  # the store is down: the next sweep tries again
            log.warning("Channels: cannot look for digests due: %s", exc)

    def _put(self, channel: dict, message: Any, report: Report | None) -> bool:
        """On the channel's worker (started when needed); False when its queue is full."""
        with self._lock:
            if self._closed:
                return True
            work = self._workers.get(channel["_id"])
            if work is None:
                work = self._workers[channel["_id"]] = queue.Queue(QUEUE_LIMIT)
                threading.Thread(
                    target=self._work, args=(channel["_id"], work), name="texium-channel", daemon=True
                ).start()
            try:
                with self._idle:
                    self._pending += 1
                work.put_nowait((channel, message, report))
                return True
            except queue.Full:
                with self._idle:
                    self._pending -= 1
                return False

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every queued delivery to be done (retries included); False
        if some were not. Shutting down: deliver what is queued while there is time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self) -> None:
        """Refuse new deliveries and end the retry waits; queued ones get one attempt each."""
        with self._lock:
            self._closed = True
            for work in self._workers.values():
                work.put(None)
        self._sender.stopping.set()

    def _work(self, channel_id: str, work: queue.Queue) -> None:
        wake = None  # (monotonic) when the digest of a window this worker held for is due
        while True:
            timeout = IDLE_SECONDS if wake is None else min(IDLE_SECONDS, max(0.0, wake - time.monotonic()))
            try:
                item = work.get(timeout=timeout)
            except queue.Empty:
                if wake is not None:
                    wake = self._send_digests(channel_id)
                    continue
                with self._lock:  # nothing came: end, unless something arrived just now
                    if work.empty():
                        del self._workers[channel_id]
                        return
                continue
            if item is None:
                return
            channel, message, report = item
            try:
                if isinstance(message, _Due):
                    self._digests.send(channel, message.digest, self._deliver)
                    continue
                record = self._held(channel, message)
                if record is None:
                    record = self._deliver(channel, message)
                elif wake is None:
                    wake = self._wake(channel_id)
                if report is not None:
                    report(record)
            except Exception:  # a bug here must not end this channel's deliveries
                log.exception("Channels: delivery to channel %s failed", channel_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _held(self, channel: dict, message: Message) -> dict | None:
        """The message's `held` record when its channel's window already sent its share; None: send it."""
        if self._digests is None or not self._digests.applies(channel, message.event):
            return None
        try:
            return self._digests.admit(channel, message)
        except Exception as exc:  # the store refused the count: send it alone rather than lose it
            log.warning("Channels: cannot count a message into channel %s's digest window: %s", channel["_id"], exc)
            return None

    def _wake(self, channel_id: str) -> float | None:
        """When this worker should send its channel's next pending digest (monotonic), if any."""
        due = self._digests.next_due(channel_id)
        return None if due is None else time.monotonic() + max(0.0, (due - utcnow()).total_seconds())

    def _send_digests(self, channel_id: str) -> float | None:
        """Send the channel's digests that are due (those another node claimed first are its own);
        the next wake-up."""
        try:
            for digest in self._digests.due(channel_id):
                self._digests.send(self._ds.channels.get(channel_id), digest, self._deliver)
            return self._wake(channel_id)
        except Exception as exc:  # the store failed: any node's sweep finds the digest later
            log.warning("Channels: cannot send the digest of channel %s: %s", channel_id, exc)
            return None

    def _deliver(self, channel: dict, message: Message, attempts: int | None = None) -> dict:
        try:
            secret = self._open_secret(channel)
        except ValueError as exc:
            outcome = Outcome(False, None, 0, str(exc))
        else:
            outcome = self._sender.send(channel, secret, message, attempts)
        return self._record(channel, message, outcome)

    def _record(self, channel: dict, message: Message, outcome: Outcome) -> dict:
        record = {
            "channel_id": channel["_id"],
            "user_id": channel.get("user_id"),
            "kind": channel["kind"],
            "event": message.event,
            "job_id": message.job.get("_id"),
            "execution_id": message.execution.get("_id"),
            "ok": outcome.ok,
            "status_code": outcome.status_code,
            "attempt": outcome.attempts,
            "error": outcome.error,
            "status": SENT if outcome.ok else FAILED,
            **getattr(message, "record_fields", {}),
            "created_at": utcnow(),
        }
        if self._metrics is not None:
            self._metrics.alert_delivered(channel["kind"], message.event, outcome.ok)
        if not outcome.ok:
            log.warning(
                "Alert not delivered: job %r, event %s, channel %r (%s): %s",
                message.job.get("name"),
                message.event,
                channel.get("name"),
                channel["kind"],
                outcome.error,
            )
        try:
            record["_id"] = self._ds.channel_deliveries.insert(dict(record))
        except Exception as exc:
            log.warning("Channels: cannot record a delivery to channel %s: %s", channel["_id"], exc)
        return record


@dataclass
class _Due:
    """A digest found due by a sweep, queued on its channel's worker like a message."""

    digest: dict
