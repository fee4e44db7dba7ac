"""When a job may fire: its cron schedule (or its one `run_at`), inside `start_at`..`end_at`,
less the blackout periods of the calendars it excludes.

Pure but for CalendarReader, which reads calendars by id for a pass (one indexed query) and keeps
what it parsed under each calendar's `updated_at`, so a pass pays the parse once per change.
An excluded occurrence is never claimed nor recorded `missed`: the planner counts it on the job
(`excluded_runs`) and moves `next_run_time` to the next time that is not excluded.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from datetime import datetime, timedelta

from texium.core.scheduling import cron
from texium.core.scheduling.jobstore import schedule_for
from texium.core.timeutil import parse_iso

TICK = timedelta(microseconds=1)
EXCLUDED_COUNT_LIMIT = 10_000  # occurrences counted one by one in one blackout stretch; beyond: not counted
MAX_STRETCHES = 10_000  # blackouts crossed looking for a time that is not excluded: then "no next time"
CALENDAR_COLLECTION = "scheduler_calendars"


def last_fire_at_or_before(schedule, floor: datetime, now: datetime) -> datetime:
    """The last fire time in (floor, now], or `floor` if there is none; looks back from `now` in
    growing windows so a long outage of a frequent job costs a few steps, not millions."""
    span = 1.0
    while True:
        probe = max(floor, now - timedelta(seconds=span))
        fire = schedule.next_after(probe)
        if fire is not None and fire <= now:
            while True:
                following = schedule.next_after(fire)
                if following is None or following > now:
                    return fire
                fire = following
        if probe == floor:
            return floor
        span *= 16


def recurring_schedule(rule: dict):
    """The cron schedule of a recurring blackout (its cron fields and `timezone`)."""
    return cron.schedule_for(
        {name: rule.get(name, cron.DEFAULTS[name]) for name in cron.CRON_FIELDS}
        | {"timezone": rule.get("timezone") or "UTC"}
    )


class Blackouts:
    """The blackout periods of some calendars: fixed periods and holidays (merged into disjoint
    spans) and recurring ones (a cron schedule and a duration)."""

    def __init__(self, calendars: list[dict] = ()):
        spans = []
        self.recurring: list[tuple[object, timedelta, str]] = []
        for calendar in calendars:
            name = calendar.get("name") or calendar.get("_id")
            for period in [*(calendar.get("periods") or []), *(calendar.get("holidays") or [])]:
                spans.append((parse_iso(period["start"]), parse_iso(period["end"]), name))
            for rule in calendar.get("recurring") or []:
                self.recurring.append((recurring_schedule(rule), timedelta(seconds=rule["duration_seconds"]), name))
        spans.sort(key=lambda span: span[0])
        merged: list[list] = []
        for start, end, name in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, name])
        self._starts = [span[0] for span in merged]
        self._spans = merged

    def __bool__(self) -> bool:
        return bool(self._spans or self.recurring)

    def covering(self, moment: datetime) -> tuple[datetime, str] | None:
        """(when the blackout around `moment` ends, the calendar's name), or None."""
        found = None
        i = bisect_right(self._starts, moment) - 1
        if i >= 0 and self._spans[i][1] > moment:
            found = (self._spans[i][1], self._spans[i][2])
        for schedule, duration, name in self.recurring:
            floor = moment - duration
            fire = last_fire_at_or_before(schedule, floor, moment)
            if fire > floor and (found is None or fire + duration > found[0]):
                found = (fire + duration, name)
        return found

    def spans_between(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        """The blackouts that overlap [start, end), as disjoint (from, until, calendar name)
        spans in order: a moment m is excluded iff from <= m < until for one of them, as in
        covering(). Lets a forecast test many moments with one bisect each."""
        found = [tuple(span) for span in self._spans if span[0] < end and span[1] > start]
        for schedule, duration, name in self.recurring:
            limit = EXCLUDED_COUNT_LIMIT * 10
            found += [
                (fire, fire + duration, name) for fire in schedule.fire_times_between(start - duration, end, limit)
            ]
        found.sort(key=lambda span: span[0])
        merged: list[tuple[datetime, datetime, str]] = []
        for begin, until, name in found:
            if merged and begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], until), merged[-1][2])
            else:
                merged.append((begin, until, name))
        return merged


NO_BLACKOUTS = Blackouts()


def _time(value) -> datetime | None:
    return value if isinstance(value, datetime) else None


class JobTimes:
    """The occurrences of one job document with its window, `run_at` and blackouts applied."""

    def __init__(self, doc: dict, blackouts: Blackouts = NO_BLACKOUTS):
        self.run_at = _time(doc.get("run_at"))
        self.cron = None if self.run_at else schedule_for(doc)
        self.start_at, self.end_at = _time(doc.get("start_at")), _time(doc.get("end_at"))
        self.blackouts = blackouts

    def _in_window(self, moment: datetime) -> bool:
        return (self.start_at is None or moment >= self.start_at) and (self.end_at is None or moment <= self.end_at)

    def raw_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Occurrences t with after < t <= until inside the window, blackouts not applied."""
        if self.run_at is not None:
            hit = after < self.run_at <= until and self._in_window(self.run_at)
            return [self.run_at] if hit and limit > 0 else []
        if self.start_at is not None:
            after = max(after, self.start_at - TICK)
        if self.end_at is not None:
            until = min(until, self.end_at)
        return self.cron.fire_times_between(after, until, limit) if after < until else []

    def _raw_next(self, after: datetime) -> datetime | None:
        if self.run_at is not None:
            return self.run_at if self.run_at > after and self._in_window(self.run_at) else None
        if self.start_at is not None:
            after = max(after, self.start_at - TICK)
        following = self.cron.next_after(after)
        if following is None or (self.end_at is not None and following > self.end_at):
            return None
        return following

    def excluded_by(self, moment: datetime) -> str | None:
        """The name of the calendar whose blackout holds `moment`, or None."""
        hit = self.blackouts.covering(moment) if self.blackouts else None
        return hit[1] if hit else None

    def next_counting(self, after: datetime) -> tuple[datetime | None, int]:
        """(the first occurrence after `after` that is not excluded, or None; how many excluded
        occurrences lie before it, counted up to EXCLUDED_COUNT_LIMIT per blackout stretch)."""
        excluded = 0
        for _ in range(MAX_STRETCHES):
            following = self._raw_next(after)
            if following is None:
                return None, excluded
            hit = self.blackouts.covering(following) if self.blackouts else None
            if hit is None:
                return following, excluded
            inside = self.raw_between(following - TICK, hit[0] - TICK, EXCLUDED_COUNT_LIMIT)
            excluded += len(inside)
            after = max(inside[-1] if inside else following, hit[0] - TICK)
        return None, excluded

    def next_after(self, after: datetime) -> datetime | None:
        return self.next_counting(after)[0]

    def fires_at(self, moment: datetime) -> bool:
        """Whether `moment` is an occurrence inside the window (blackouts not applied)."""
        return self._raw_next(moment - TICK) == moment

    def next_in_window(self, after: datetime) -> datetime | None:
        """The first occurrence after `after` inside the window, blackouts not applied (the
        job preview lists excluded ones too)."""
        return self._raw_next(after)


class CalendarReader:
    """Reads the calendars jobs exclude, by id; parses each once per `updated_at`."""

    def __init__(self, datastore):
        self._calendars = datastore.collection(CALENDAR_COLLECTION)
        self._parsed: dict[str, tuple[object, Blackouts]] = {}
        self._lock = threading.Lock()

    def blackouts_for(self, docs: list[dict]) -> dict[str, Blackouts]:
        """{job id: its Blackouts} for the job documents that exclude calendars (one query)."""
        wanted = {job["_id"]: [c for c in job.get("exclude_calendars") or [] if isinstance(c, str)] for job in docs}
        ids = sorted({c for ids in wanted.values() for c in ids})
        if not ids:
            return {}
        found = {doc["_id"]: doc for doc in self._calendars.find({"_id": {"$in": ids}})}
        return {job_id: self._combined([found[c] for c in ids if c in found]) for job_id, ids in wanted.items() if ids}

    def blackouts_of(self, doc: dict) -> Blackouts:
        """The Blackouts of one job document (saved or not)."""
        return self.blackouts_for([{**doc, "_id": "job"}]).get("job", NO_BLACKOUTS)

    def blackouts_named(self, ids: list[str]) -> Blackouts:
        """The Blackouts of the calendars with these ids (a job's mute_calendars)."""
        return self.blackouts_of({"exclude_calendars": list(ids)})

    def _combined(self, calendars: list[dict]) -> Blackouts:
        if len(calendars) == 1:
            return self._one(calendars[0])
        return Blackouts(calendars)

    def _one(self, calendar: dict) -> Blackouts:
        version = calendar.get("updated_at")
        with self._lock:
            cached = self._parsed.get(calendar["_id"])
            if cached is not None and cached[0] == version:
                return cached[1]
        parsed = Blackouts([calendar])
        with self._lock:
            if len(self._parsed) > 1000:
                self._parsed.clear()
            self._parsed[calendar["_id"]] = (version, parsed)
        return parsed
