"""Bearer tokens in URLs (a heartbeat monitor's ping URL, a job's trigger URL): 128 random bits,
shown once and stored as their SHA-256 only, so a reader of the database cannot use them; and the
per-token rate limit that answers a flood with 429."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque

from texium.core.errors import TooManyRequests


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits


class RateLimiter:
    """At most `per_minute` events per key in any 60 s, in bounded memory (a flood of keys
    forgets the oldest half). Per node: a limit against floods, not an exact quota."""

    MAX_KEYS = 100_000

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Count one event for `key`; 0 when allowed, else the seconds until it would be."""
        now = time.monotonic()
        with self._lock:
            events = self._seen.get(key)
            if events is None:
                if len(self._seen) >= self.MAX_KEYS:
                    for old in list(self._seen)[: self.MAX_KEYS // 2]:
                        del self._seen[old]
                events = self._seen[key] = deque()
            while events and now - events[0] > 60:
                events.popleft()
            if len(events) >= self.per_minute:
                return 60 - (now - events[0])
            events.append(now)
            return 0.0

    def admit(self, key: str, what: str) -> None:
        """Count one event for `key`, or refuse it: TooManyRequests carrying `retry_after`
        (the HTTP layer sends it as Retry-After)."""
        wait = self.wait(key)
        if wait:
            refusal = TooManyRequests(f"Too many {what}; try again in {int(wait) + 1} s")
            refusal.retry_after = int(wait) + 1
            raise refusal
