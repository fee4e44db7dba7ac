"""How many connections the server holds, and what it does when the process runs out of files.

Whoever reaches the port can open connections without a key, so they are bounded: at most
MAX_CONNECTIONS in all and MAX_CONNECTIONS_PER_ADDRESS from one client address (never more than
half of all, so one address cannot take every slot; TRUSTED_PROXIES carry many clients and are
only counted in the total). Both bounds stay under the open-file limit, which start-up raises
to its hard limit. A connection over a bound is closed as soon as it is accepted.

When accept() still fails for want of file handles (jobs can hold files too), Tornado's accept
loop would retry at once, forever: a core spinning and a traceback per pass. Here accepting
pauses for a moment instead, and the warning is logged at most once per interval.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

import tornado.httpserver
from tornado.ioloop import IOLoop

log = logging.getLogger("texium.server")

# Files kept for everything but connections: the store, logs, the event loop, job threads,
# scripts' pipes, outbound sockets.
RESERVED_FILES = 64
# accept() errors that mean "no handle or memory for one more connection right now".
OUT_OF_HANDLES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE_SECONDS = 0.5
WARNING_INTERVAL_SECONDS = 10.0
ACCEPTS_PER_PASS = 128  # as Tornado: other work runs between batches


def raise_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (systemd's default soft limit is 1024);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


class RateLimitedWarning:
    """One log line per interval for an event that may repeat thousands of times a second."""

    def __init__(self, interval: float = WARNING_INTERVAL_SECONDS):
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more since the last such line)"
            args = (*args, self._suppressed)
        self._last, self._suppressed = now, 0
        log.warning(message, *args)


@dataclass
class ConnectionLimits:
    """Open connections counted in all and per client address."""

    total: int
    per_address: int
    unlimited: tuple = ()  # networks counted only in the total (trusted proxies)
    open_total: int = 0
    _by_address: Counter = field(default_factory=Counter)

    @classmethod
    def for_file_limit(cls, total: int, per_address: int, file_limit: int, unlimited: tuple = ()) -> ConnectionLimits:
        """The settings' bounds, lowered to what the open-file limit allows."""
        fitting = max(1, file_limit - RESERVED_FILES)
        if total > fitting:
            log.warning(
                "MAX_CONNECTIONS=%d does not fit the open-file limit of %d (%d kept for the store and jobs): "
                "serving at most %d connections; raise the limit (LimitNOFILE=, ulimit -n)",
                total,
                file_limit,
                RESERVED_FILES,
                fitting,
            )
            total = fitting
        return cls(total=total, per_address=max(1, min(per_address, total // 2)), unlimited=unlimited)

    def admit(self, address: str) -> str | None:
        """Count a new connection; returns why it is refused (then nothing is counted)."""
        if self.open_total >= self.total:
            return f"MAX_CONNECTIONS ({self.total}) reached"
        limited = not self._is_unlimited(address)
        if limited and self._by_address[address] >= self.per_address:
            return f"{self.per_address} connections from {address} (MAX_CONNECTIONS_PER_ADDRESS)"
        self.open_total += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.open_total -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def _is_unlimited(self, address: str) -> bool:
        if not self.unlimited:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.unlimited)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with ConnectionLimits and an accept loop that backs off when the
    process is out of file handles."""

    def initialize(self, *args, limits: ConnectionLimits, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.limits = limits
        self._addresses: dict[object, str] = {}
        self._refused_warning = RateLimitedWarning()
        self._out_of_handles_warning = RateLimitedWarning()

    def add_sockets(self, sockets) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_from(sock)

    def _accept_from(self, sock):
        """Like tornado.netutil.add_accept_handler, but out of handles it stops listening for
        ACCEPT_PAUSE_SECONDS (the pending connections wait in the kernel's backlog)."""
        loop = IOLoop.current()
        state = {"removed": False, "paused": None}

        def accept(fd, events) -> None:
            for _ in range(ACCEPTS_PER_PASS):
                if state["removed"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in OUT_OF_HANDLES:
                        raise
                    self._out_of_handles_warning(
                        "Cannot accept connections: %s (%d open); pausing %.1fs",
                        exc.strerror,
                        self.limits.open_total,
                        ACCEPT_PAUSE_SECONDS,
                    )
                    loop.remove_handler(sock)
                    state["paused"] = loop.call_later(ACCEPT_PAUSE_SECONDS, resume)
                    return
                self._handle_connection(connection, address)

        def resume() -> None:
            state["paused"] = None
            if not state["removed"]:
                loop.add_handler(sock, accept, IOLoop.READ)

        def remove() -> None:
            state["removed"] = True
            if state["paused"] is not None:
                loop.remove_timeout(state["paused"])
            else:
                loop.remove_handler(sock)

        loop.add_handler(sock, accept, IOLoop.READ)
        return remove

    def handle_stream(self, stream, address) -> None:
        client = address[0] if isinstance(address, tuple) and address else str(address)
        refused = self.limits.admit(client)
        if refused:
            self._refused_warning("Refused connections: %s", refused)
            stream.close()
            return
        self._addresses[stream] = client  # given back by on_close
        super().handle_stream(stream, address)

    def on_close(self, server_conn) -> None:
        super().on_close(server_conn)
        client = self._addresses.pop(server_conn.stream, None)
        if client is not None:
            self.limits.release(client)
