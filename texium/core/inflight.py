"""Identical requests in flight share one computation.

A heavy read (the forecast) asked for again while it is being computed - ten dashboards
refreshing at once - awaits the computation already running instead of starting its own, so
the CPU the firing pass competes with does not grow with the number of viewers. Nothing is
kept once it is done: the next request after it computes afresh (no stale answer). Per
process, on the IOLoop: no locks needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class InFlight:
    """Runs `compute` once per key at a time; callers with the same key meanwhile get its result
    (or its exception). `started` is told of every computation actually started (a metric)."""

    def __init__(self, started: Callable[[], None] = lambda: None):
        self._running: dict[Hashable, asyncio.Future] = {}
        self._started = started

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(compute())
            self._running[key] = future
            self._started()
            future.add_done_callback(lambda done: self._forget(key, done))
        # shielded: a caller that goes away does not cancel the others' computation
        return await asyncio.shield(future)

    def _forget(self, key: Hashable, done: asyncio.Future) -> None:
        if self._running.get(key) is done:
            del self._running[key]
