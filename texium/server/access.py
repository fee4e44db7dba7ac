"""Who may talk to this server, decided per request before any handler runs.

- Host: only names this server answers to (DNS rebinding: a page on another site whose name
  resolves to 127.0.0.1 still sends its own name in Host).
- Authentication: an API key (`Authorization: Bearer <key>` or `X-API-Key`), or the dashboard's
  session cookie (a stored, revocable session), which also needs that session's CSRF token on
  requests that change state.
  Whether keys are required follows the address the server listens on, never the client's.
- Origin: a request that changes state and comes from another site (a foreign `Origin`, or
  `Sec-Fetch-Site: cross-site`) is refused unless it carries a key: a browser page elsewhere
  cannot make use of the loopback-only default, nor of a signed-in dashboard.
- Failed authentications are counted per client address; past a limit, further unknown keys
  from that address answer 429. A valid key is looked up first and never refused.
- The client address comes from proxy headers only when the connection is from TRUSTED_PROXIES.
- The scheme the browser used (for the session cookie's Secure flag and the request's own
  Origin): https when TLS is served here, when a trusted proxy says so in X-Forwarded-Proto, or
  when the request names the host of an https PUBLIC_URL (a proxy in front ends TLS for it).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _as_ip(text: str) -> str | None:
    """The address in a proxy header's field, normalised, or None if it is not one."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def auth_required(mode: str, address: str) -> bool:
    """AUTH_MODE auto: keys are required unless the server listens on loopback only."""
    mode = mode.lower()
    return mode == "on" or (mode == "auto" and not is_loopback(address))


def metrics_public(setting: bool, address: str) -> bool:
    """METRICS_PUBLIC opens GET /metrics only while the server listens on loopback only."""
    return bool(setting) and is_loopback(address)


def https_hosts(public_url: str) -> frozenset[str]:
    """The Host (name[:port]) of an https PUBLIC_URL: requests naming it came through TLS."""
    parts = urlsplit(public_url or "")
    if parts.scheme.lower() != "https" or not parts.hostname:
        return frozenset()
    return frozenset({_without_default_port("https", parts.netloc.rpartition("@")[2].lower())})


def _without_default_port(scheme: str, host: str) -> str:
    default = ":443" if scheme == "https" else ":80"
    return host[: -len(default)] if host.endswith(default) else host


@dataclass
class FailureLimiter:
    """At most `per_minute` failed authentications per client address in any 60 s."""

    per_minute: int
    _seen: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked_for(self, client: str) -> float:
        """Seconds until this client may try again (0 when it may now)."""
        now = time.monotonic()
        with self._lock:
            failures = self._seen.get(client)
            while failures and now - failures[0] > 60:
                failures.popleft()
            if failures is not None and not failures:
                del self._seen[client]
                return 0.0
            if failures and len(failures) >= self.per_minute:
                return 60 - (now - failures[0])
            return 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._seen) > 100_000:  # a flood of addresses: forget the oldest half
                for key in list(self._seen)[:50_000]:
                    del self._seen[key]
            self._seen.setdefault(client, deque()).append(time.monotonic())


@dataclass
class AccessPolicy:
    required: bool
    listen_address: str
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple = ()  # ipaddress networks
    failures: FailureLimiter = field(default_factory=lambda: FailureLimiter(10))
    metrics_public: bool = False  # GET /metrics without a key (METRICS_PUBLIC, on loopback only)
    https_hosts: frozenset = frozenset()  # the Host of an https PUBLIC_URL

    def __post_init__(self) -> None:
        names = {*LOOPBACK_NAMES, *(h.lower() for h in self.allowed_hosts)}
        if self.listen_address not in ("", "0.0.0.0", "::"):
            names.add(self.listen_address.lower().strip("[]"))
        self._hosts = frozenset(name.strip("[]") for name in names)

    def host_allowed(self, host_name: str) -> bool:
        host = host_name.lower().strip("[]")
        if host in self._hosts:
            return True
        # Listening on every interface, any of this machine's addresses is a fair Host; an IP
        # literal cannot come from DNS rebinding, which needs a name the attacker controls.
        return self.listen_address in ("0.0.0.0", "::", "") and _is_ip(host)

    def client_address(self, remote_ip: str, headers) -> str:
        """The peer, or the client a trusted proxy says it forwarded for.

        X-Real-Ip first: a proxy that sets it passes the client's own X-Forwarded-For through
        unchanged, so that header would name whatever the client liked. Otherwise the nearest
        X-Forwarded-For hop that is not itself a trusted proxy (the one our proxies appended).
        Only IP addresses count: anything else in these headers came from the client.
        """
        if not (self.trusted_proxies and self._trusted(remote_ip)):
            return remote_ip
        real = _as_ip(headers.get("X-Real-Ip", ""))
        if real and not self._trusted(real):
            return real
        hops = [_as_ip(hop) for hop in headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed(hops):
            if hop and not self._trusted(hop):
                return hop
        return remote_ip

    def scheme(self, request) -> str:
        """http or https: the scheme the browser used to reach this server."""
        if request.protocol == "https":
            return "https"
        if self.trusted_proxies and self._trusted(request.remote_ip or ""):
            # The proxy nearest to us writes the last value (as Tornado's xheaders reads it).
            forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
            if forwarded in ("http", "https"):
                return forwarded
        if self.https_hosts and _without_default_port("https", request.host.lower()) in self.https_hosts:
            return "https"
        return request.protocol

    def own_origin(self, request) -> str:
        """This server's origin as the browser writes it in Origin (no default port)."""
        scheme = self.scheme(request)
        return f"{scheme}://{_without_default_port(scheme, request.host)}"

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def cross_site(self, headers, own_origin: str) -> str | None:
        """Why this request counts as coming from another site, or None."""
        origin = headers.get("Origin")
        if origin and origin != "null" and origin != own_origin and origin not in self.cors_origins:
            return f"Origin {origin}"
        if origin == "null":
            return "Origin null"
        if headers.get("Sec-Fetch-Site", "").lower() == "cross-site" and origin not in self.cors_origins:
            return "Sec-Fetch-Site cross-site"
        return None
