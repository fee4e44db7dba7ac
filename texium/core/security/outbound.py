"""Outbound connections the jobs make (webhook, health check): which addresses they may reach.

Refused by default, whatever the spelling of the address (127.1, 2130706433, 0x7f.1, [::1],
::ffff:127.0.0.1, a name that resolves to one of them):

* unspecified / "this network": 0.0.0.0/8, ::  (connecting to 0.0.0.0 reaches the local host)
* loopback: 127.0.0.0/8, ::1
* link-local: 169.254.0.0/16 (the cloud metadata address 169.254.169.254), fe80::/10
* multicast: 224.0.0.0/4, ff00::/8
* reserved: 240.0.0.0/4, 255.255.255.255, the reserved IPv6 blocks (IPv4-compatible, NAT64 ...)

Refused always, private or not:

* cloud metadata services outside the link-local range: fd00:ec2::254 (AWS over IPv6),
  100.100.100.200 (Alibaba), 192.0.0.192 (Oracle), 168.63.129.16 (Azure);
* the machine's own addresses, on every interface (local_addresses): a call to one reaches
  services listening here, as loopback would.

IPv4-mapped IPv6 addresses are judged as the IPv4 address they map. Private ranges (10/8,
172.16/12, 192.168/16, fc00::/7 ...) stay allowed unless `deny_private`, which refuses every
address that is not public. Networks in `allow` are always allowed, whatever the rules above.

The rule is checked on the resolved address at connect time: the policy resolves the name
itself, checks every address, and connects to a checked address (never to the name again), so
a DNS answer that changes between check and connect (DNS rebinding) cannot reach a refused
address. For https the TLS server name (SNI), the certificate check and the Host header keep
the original name. Redirects are never followed: the caller sees the 3xx answer.

The core takes its configuration as arguments; the jobs build the policy from the settings
OUTBOUND_ALLOW and OUTBOUND_DENY_PRIVATE (texium.jobs._util.outbound_policy).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from texium.core.security.local_addresses import machine_addresses

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "OUTBOUND_ALLOW"
DENY_PRIVATE_SETTING = "OUTBOUND_DENY_PRIVATE"
PRIVATE = "a private address"  # the rule OUTBOUND_DENY_PRIVATE adds
METADATA = "a cloud metadata address"
OWN = "an address of this machine"
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
# Metadata services that the link-local rule (169.254.169.254, fe80::/10) does not cover.
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
        "192.0.0.192/32",  # Oracle Cloud
        "168.63.129.16/32",  # Azure wire server (instance provisioning, health, DNS)
    )
)


class OutboundRefused(Exception):
    """The target is an address the policy refuses; the message names the address and the rule."""


def parse_networks(value: Any, name: str = ALLOW_SETTING) -> tuple[Network, ...]:
    """CIDR networks from a list of strings or comma-separated text ("10.0.0.0/8, fd00::/8").

    A bare address is a one-address network. Raises ValueError naming `name` and the bad item.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        raise ValueError(f"{name}: must be a list of CIDR networks, got {type(value).__name__}")
    networks: list[Network] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{name}: {item!r} is not a CIDR network such as 10.0.0.0/8")
        for part in item.split(","):
            text = part.strip()
            if not text:
                continue
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{name}: {text!r} is not a CIDR network such as 10.0.0.0/8 or fd00::/8") from None
            if network not in networks:
                networks.append(network)
    return tuple(networks)


def as_address(value: str | IPAddress) -> IPAddress:
    """An ipaddress object for an address text; an IPv6 zone (%eth0) is dropped."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(str(value).split("%", 1)[0])


def _judged(ip: IPAddress) -> IPAddress:
    """The address whose class counts: the IPv4 address an IPv4-mapped IPv6 address maps."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def special_class(ip: str | IPAddress) -> str | None:
    """The class of `ip` refused by default ("a loopback address", ...), or None for any other address."""
    ip = _judged(as_address(ip))
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    return None


def is_public(ip: str | IPAddress) -> bool:
    ip = _judged(as_address(ip))
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    return ip.is_global and not site_local and special_class(ip) is None


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound connections may reach (see the module docstring)."""

    allow: tuple[Network, ...] = ()
    deny_private: bool = False
    # The machine's own addresses, asked at each check (they change); a test gives its own.
    own_addresses: Callable[[], Collection[IPAddress]] = field(default=machine_addresses, compare=False)

    @classmethod
    def from_settings(cls, allow: Any = None, deny_private: bool = False) -> OutboundPolicy:
        """From the settings' values: `allow` a list of CIDRs or comma-separated text."""
        return cls(parse_networks(allow), bool(deny_private))

    # -- the rule ---------------------------------------------------------------------------

    def allowed_by_list(self, ip: str | IPAddress) -> bool:
        ip = as_address(ip)
        judged = _judged(ip)
        return any(ip in network or judged in network for network in self.allow)

    def refusal(self, ip: str | IPAddress) -> str | None:
        """Why `ip` may not be reached ("a loopback address", ...), or None when it may."""
        ip = as_address(ip)
        if self.allowed_by_list(ip):
            return None
        judged = _judged(ip)
        rule = special_class(ip)
        if rule is None and any(judged in network for network in METADATA_NETWORKS):
            rule = METADATA
        if rule is None and (ip in (own := self.own_addresses()) or judged in own):
            rule = OWN
        if rule is None and self.deny_private and not is_public(ip):
            rule = PRIVATE
        return rule

    def refusal_message(self, host: str, ip: str | IPAddress, rule: str) -> str:
        """refused: 127.1 resolves to 127.0.0.1, a loopback address (set OUTBOUND_ALLOW to allow it)"""
        shown = str(ip)
        if host.strip("[]").lower() == shown.lower():
            where = f"{shown} is {rule}"
        else:
            where = f"{host} resolves to {shown}, {rule}"
        hint = f"set {ALLOW_SETTING} to allow it"
        if rule == PRIVATE:
            hint = f"{DENY_PRIVATE_SETTING} is on; {hint}"
        return f"refused: {where} ({hint})"

    # -- resolving and connecting -----------------------------------------------------------

    def resolve(self, host: str, port: int) -> list[tuple[int, int, int, tuple]]:
        """[(family, type, proto, sockaddr)] of the addresses of `host` that may be reached.

        Every address the name resolves to is checked; only permitted ones are returned.
        OutboundRefused (naming the first refused address and its rule) when none is permitted;
        socket.gaierror when the name does not resolve.
        """
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        permitted: list[tuple[int, int, int, tuple]] = []
        first_refused: tuple[str, str] | None = None
        for family, socktype, proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = sockaddr[0]
            rule = self.refusal(address)
            if rule is not None:
                first_refused = first_refused or (address, rule)
                continue
            if not any(p[3] == sockaddr for p in permitted):
                permitted.append((family, socktype, proto, sockaddr))
        if not permitted:
            if first_refused is not None:
                raise OutboundRefused(self.refusal_message(host, *first_refused))
            raise socket.gaierror(socket.EAI_NONAME, f"no IPv4 or IPv6 address for {host}")
        return permitted

    def connect(self, host: str, port: int, timeout: float | None) -> tuple[socket.socket, str]:
        """A TCP connection to a permitted address of `host`: (socket, the address connected to).

        Tries each permitted address in turn, like socket.create_connection; raises
        OutboundRefused, socket.gaierror, or the last connection error (OSError / TimeoutError).
        """
        error: OSError | None = None
        for family, socktype, proto, sockaddr in self.resolve(host, port):
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock, sockaddr[0]
        raise error or OSError(f"cannot connect to {host}:{port}")


# --------------------------------------------------------------------------- HTTP


class _Vetted:
    """Opens the connection's socket to an address the policy checked, never to the name again."""

    policy: OutboundPolicy
    peer: str | None = None  # the address actually connected to

    def _vetted_socket(self) -> socket.socket:
        sock, self.peer = self.policy.connect(self.host, self.port, self.timeout)  # type: ignore[attr-defined]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock


class _VettedHTTPConnection(_Vetted, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, policy: OutboundPolicy, timeout: float | None):
        super().__init__(host, port, timeout=timeout)
        self.policy = policy

    def connect(self) -> None:
        self.sock = self._vetted_socket()


class _VettedHTTPSConnection(_Vetted, http.client.HTTPSConnection):
    """SNI, the certificate check and the Host header use the original host name."""

    def __init__(self, host: str, port: int, *, policy: OutboundPolicy, timeout: float | None, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.policy = policy
        self.tls_context = context

    def connect(self) -> None:
        sock = self._vetted_socket()
        try:
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@dataclass
class HTTPAnswer:
    status: int
    reason: str
    body: bytes  # at most `read_limit` bytes of the body
    peer: str | None  # the address actually connected to


def http_request(
    policy: OutboundPolicy,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    read_limit: int = 65536,
    tls_context: ssl.SSLContext | None = None,
) -> HTTPAnswer:
    """One HTTP(S) request to `url` through `policy`; the answer, whatever its status.

    Redirects are not followed (a 3xx is returned like any status). user:password@ in the URL
    becomes Basic authentication unless `headers` has an Authorization. Raises OutboundRefused,
    OSError (resolution, connection, TLS, timeouts), http.client.HTTPException or ValueError.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    if scheme == "https":
        context = tls_context or ssl.create_default_context()
        conn: http.client.HTTPConnection = _VettedHTTPSConnection(
            host, port, policy=policy, timeout=timeout, context=context
        )
    else:
        conn = _VettedHTTPConnection(host, port, policy=policy, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Connection": "close", **dict(headers or {})}
    if parts.username is not None and not any(k.lower() == "authorization" for k in all_headers):
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        all_headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    try:
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read(read_limit)
        return HTTPAnswer(response.status, response.reason, data, conn.peer)
    finally:
        conn.close()


# --------------------------------------------------------------------------- signing

SIGNATURE_HEADER = "X-Texium-Signature"


def sign(secret: str, body: bytes) -> str:
    """The X-Texium-Signature value: sha256=<hex HMAC-SHA256 of the exact body>, so a receiver
    can check a webhook (job or alert) came from whoever holds the secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def redact_url(url: str) -> str:
    """The URL without any user:password@ part, for outputs and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
