"""Spreading a job's load: the stable hash behind cron's `H`, and per-occurrence jitter.

Both are pure functions of the job's id (and the occurrence), never of a process: every node,
every restart and every rerun of a plan computes the same values. Python's hash() is salted per
process, so the hash is SHA-256.

Jitter is applied by the schedule itself (JitteredSchedule yields the delayed times), so every
part of the firing core sees one time per occurrence: the job's `next_run_time`, the record's
`scheduled_at` and key, the planner's missed spans and the dispatcher's check that a held
occurrence still belongs to the schedule as stored.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

MAX_JITTER_SECONDS = 3600
EXAMPLE_SEED = "example"  # the seed of a preview that names no job (README "Spreading the load")
_SECOND = timedelta(seconds=1)
_TINY = timedelta(microseconds=1)


def _aware(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime means UTC, as in cron.py."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stable_hash(*parts: str) -> int:
    """A 64-bit number from `parts`, the same in every process and on every machine."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def stable_hashes(prefix: tuple[str, ...], lasts: list[str]) -> list[int]:
    """[stable_hash(*prefix, last) for last in lasts], hashing the shared prefix once."""
    head, sha256, number = ("\x1f".join(prefix) + "\x1f").encode(), hashlib.sha256, int.from_bytes
    return [number(sha256(head + last.encode()).digest()[:8], "big") for last in lasts]


class JitteredSchedule:
    """A schedule whose every occurrence is delayed by 0..jitter whole seconds, derived from the
    job id and the occurrence's own (undelayed) time. The delay also stays below the gap to the
    next occurrence, so the delayed times keep their order and never pass each other."""

    __slots__ = ("base", "seed", "jitter", "fields")

    def __init__(self, base, seed: str, jitter_seconds: int):
        self.base, self.seed, self.jitter = base, seed, int(jitter_seconds)
        self.fields = base.fields

    def delay(self, at: datetime, following: datetime | None) -> timedelta:
        most = self.jitter
        if following is not None:
            most = min(most, int((following - at).total_seconds()) - 1)
        if most <= 0:
            return timedelta(0)
        return timedelta(seconds=stable_hash(self.seed, "jitter", at.isoformat()) % (most + 1))

    def delay_seconds(self, isoformats: list[str], gaps: list[int | None]) -> list[int]:
        """delay() in whole seconds for many occurrences at once (the forecast): each given by
        its time's isoformat() and the seconds to the next occurrence (None: no next one)."""
        hashes = stable_hashes((self.seed, "jitter"), isoformats)
        delays = []
        for value, gap in zip(hashes, gaps, strict=True):
            most = self.jitter if gap is None else min(self.jitter, gap - 1)
            delays.append(value % (most + 1) if most > 0 else 0)
        return delays

    def _delayed(self, at: datetime) -> datetime:
        return at + self.delay(at, self.base.next_after(at))

    def _last_at_or_before(self, moment: datetime) -> datetime | None:
        """The base's last time in [moment - jitter, moment]: the only one whose delayed time
        can still be after `moment` (an earlier one is delayed to before its successor)."""
        floor, span = moment - self.jitter * _SECOND - _TINY, _SECOND
        while True:
            probe = max(floor, moment - span)
            at = self.base.next_after(probe)
            if at is not None and at <= moment:
                while (following := self.base.next_after(at)) is not None and following <= moment:
                    at = following
                return at
            if probe == floor:
                return None
            span *= 16

    def origin(self, delayed: datetime) -> datetime:
        """The occurrence's own (undelayed) time behind one of this schedule's delayed times."""
        return self._last_at_or_before(_aware(delayed)) or delayed

    def next_after(self, moment: datetime) -> datetime | None:
        """The first delayed time strictly after `moment` (naive = UTC)."""
        if self.jitter <= 0:
            return self.base.next_after(moment)
        moment = _aware(moment)
        last = self._last_at_or_before(moment)
        if last is not None:
            delayed = self._delayed(last)
            if delayed > moment:
                return delayed
        at = self.base.next_after(moment)
        return None if at is None else self._delayed(at)

    def fire_times_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Delayed times t with start < t <= end, ascending, at most `limit`: one walk over the
        base's times (the delayed ones are in the same order)."""
        if self.jitter <= 0:
            return self.base.fire_times_between(start, end, limit)
        start, end = _aware(start), _aware(end)
        at, times = self._last_at_or_before(start) or self.base.next_after(start), []
        while at is not None and len(times) < limit:
            following = self.base.next_after(at)
            delayed = at + self.delay(at, following)
            if delayed > end:
                break
            if delayed > start:
                times.append(delayed)
            at = following
        return times
