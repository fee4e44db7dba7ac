"""The alert checks that look at the clock rather than at a run's outcome (a deadline that
passed, a re-alert or the end of flapping due, a heartbeat monitor late, a digest due): one
daemon thread per node for all of them.

Each check is cheap when nothing is due (one indexed query for due records) and decides who
acts by a conditional write on the record it moves, so every node may run every check and
a node killed half-way leaves the rest to the others. The thread is neither the scheduler's
pass nor the heartbeat: a slow store delays these checks, never firing or the node's lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from texium.core.timeutil import utcnow

log = logging.getLogger("texium.alerts")


class PeriodicChecks:
    def __init__(self, checks: Sequence[tuple[str, Callable[[datetime], object]]], interval: float = 1.0):
        self._checks = list(checks)
        self._interval = interval
        self._stop = threading.Event()
        self._failing: set[str] = set()  # checks whose last run failed (logged once until they work again)
        self._thread = threading.Thread(target=self._loop, name="texium-alert-checks", daemon=True)

    def add(self, name: str, check: Callable[[datetime], object]) -> None:
        """One more check, before start()."""
        self._checks.append((name, check))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        for name, check in self._checks:
            try:
                check(now)
                self._failing.discard(name)
            except Exception as exc:  # the store is down, or a bug: the next round tries again
                if name not in self._failing:
                    log.warning("The %s check failed (retried every %g s): %s", name, self._interval, exc)
                self._failing.add(name)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.run_once()
