"""The addresses of this machine: an outbound call to one of them reaches the machine's own services.

Read with psutil.net_if_addrs(), which asks the kernel (getifaddrs on Linux, BSD and macOS,
GetAdaptersAddresses on Windows) for every address of every interface, IPv4 and IPv6, up or
down. That is complete where the alternatives are not: the host name's DNS answer
(`getaddrinfo(gethostname())`) often names only 127.0.1.1 or nothing, /proc/net/if_inet6 has no
IPv4, and running `ip` needs a program that may be missing. The addresses the host name
resolves to are added all the same (an /etc/hosts entry may name an address that routes here).

Interfaces come and go (DHCP, VPNs, container bridges), so the set is read again when it is
older than a few seconds; reading it takes well under a millisecond.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time

import psutil

log = logging.getLogger("texium.outbound")
REFRESH_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_lock = threading.Lock()
_cached: tuple[float, frozenset[IPAddress]] = (float("-inf"), frozenset())


def _parsed(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def read_machine_addresses() -> frozenset[IPAddress]:
    """Every IPv4 and IPv6 address of this machine's interfaces and of its host name, now."""
    found: set[IPAddress] = set()
    try:
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(_parsed(address.address))
    except (OSError, RuntimeError) as exc:  # pragma: no cover - the kernel refused to list them
        log.warning("cannot list this machine's interface addresses: %s", exc)
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM):
            found.add(_parsed(str(sockaddr[0])))
    except (OSError, UnicodeError):
        pass  # a host name that does not resolve names no address
    found.discard(None)
    return frozenset(found)


def machine_addresses() -> frozenset[IPAddress]:
    """The machine's addresses, read at most every REFRESH_SECONDS."""
    global _cached
    now = time.monotonic()
    with _lock:
        read_at, addresses = _cached
        if now - read_at >= REFRESH_SECONDS:
            addresses = read_machine_addresses()
            _cached = (now, addresses)
        return addresses
