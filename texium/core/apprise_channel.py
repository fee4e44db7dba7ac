"""The `apprise` channel kind: the long tail of services (apprise's URLs: `mailto://`, `tgram://`,
`gotify://`, `json://` ...) through the optional `apprise` package (`pip install texium[apprise]`).
The curated kinds stay native (their resolve / close semantics are what matter).

The whole apprise URL is the channel's secret (it holds the service's tokens): encrypted at rest,
shown as `<scheme>://***`, never logged: apprise's own log lines (which may show parts of the URL)
are not passed on, and a failed delivery says only that apprise could not deliver.

Outbound rules: apprise makes its own connections, so they are checked before each send, not at
connect time as for the native kinds. The host of a URL that sends to a host of the user's
choosing is resolved and every address it has must pass OUTBOUND_* (json, xml and form always;
other schemes when their host is a name with a dot, `localhost` or an IP address, e.g. a
self-hosted gotify or ntfy). Schemes whose "host" is a token (tgram, discord, slack ...) send to the
vendor's fixed API host and are not checked. Not covered: a name that resolves elsewhere between
the check and apprise's connection, redirects apprise follows, and hosts given in a URL's
parameters (mailto's `smtp=`). Admins who need those closed leave the extra uninstalled.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from texium.core.security.outbound import OutboundPolicy, OutboundRefused

INSTALL_HINT = "apprise channels need the apprise extra: pip install 'texium[apprise]'"
ALWAYS_CHECKED = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})  # POST to the URL's own host
# apprise's event types, by Texium event.
_TYPES = {"failure": "failure", "timeout": "failure", "recovery": "success", "missed": "warning", "paused": "warning"}

try:
    import apprise

    logging.getLogger("apprise").propagate = False  # its lines may hold the URL's tokens
    logging.getLogger("apprise").addHandler(logging.NullHandler())
except ImportError:  # the optional extra is not installed
    apprise = None


def available() -> bool:
    return apprise is not None


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def masked(url: str) -> str:
    """How the API shows an apprise URL: its scheme only."""
    return f"{scheme(url) or 'apprise'}://***"


def check_url(url: str) -> None:
    """ValueError (saying why, never showing the URL) unless apprise knows the URL."""
    if apprise is None:
        raise ValueError(INSTALL_HINT)
    if not scheme(url) or apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise ValueError(f"not an apprise URL apprise can use (scheme {scheme(url) or 'missing'!r})")


def _checked_host(url: str) -> tuple[str, int] | None:
    """(host, port) the outbound rules check for this URL, or None (see the module docstring)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if not host:
        return None
    if scheme(url) not in ALWAYS_CHECKED:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if "." not in host and host != "localhost":
                return None  # a token, not a host: the vendor's API host is fixed
    return host, port or (443 if scheme(url).endswith("s") else 80)


def check_outbound(policy: OutboundPolicy, url: str) -> None:
    """OutboundRefused when an address the URL's host resolves to is refused by the rules."""
    target = _checked_host(url)
    if target is None:
        return
    host, port = target
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        rule = policy.refusal(sockaddr[0])
        if rule is not None:
            raise OutboundRefused(policy.refusal_message(host, sockaddr[0], rule))


def send(url: str, title: str, body: str, event: str, timeout: float) -> bool:
    """One notification through apprise; whether it was delivered."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return False
    for name in ("socket_connect_timeout", "socket_read_timeout"):  # each request's, as for the native kinds
        if hasattr(plugin, name):
            setattr(plugin, name, timeout)
    notifier = apprise.Apprise()
    notifier.add(plugin)
    kind: Any = _TYPES.get(event, "info")
    return bool(notifier.notify(body=body, title=title, notify_type=kind))
