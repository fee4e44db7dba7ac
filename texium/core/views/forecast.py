"""The schedule forecast: how many runs will really start in each coming hour, and where they pile up.

The dashboard draws it as a heatmap (days x hours) so that a pile-up (forty jobs at 02:00)
shows before it happens. Each job's times come from the planner's own JobTimes
(texium.core.scheduling.windows): cron or `run_at`, `H` resolved, jitter added, `start_at` and
`end_at`, the calendars it excludes, and `max_runs`, so the forecast and the scheduler agree.
An occurrence inside a blackout is not a run: it is counted per hour as `excluded`, and the
job lists the calendars that excluded it. Disabled and paused jobs do not count; runs already
past (earlier in the current hour) do not count.

Nothing is capped: an every-minute job weighs 60 runs an hour. The cost stays low because the
times of one schedule are searched once and shared by every job that has it (the common case,
`H` included: its resolved schedules are few), a schedule firing several seconds of the same
minute is searched per minute (weighted by its seconds), and jitter is derived from the shared
times. Pure and blocking: call it off the IOLoop.

Peaks: an hour whose busiest minute holds more than `peak_threshold` starts is a peak; for the
jobs starting in such minutes the forecast offers the `H` form of their schedule (minute `0` ->
`H`, `*/15` -> `H/15`, `0-29/10` -> `H(0-29)/10`), checked with the job's id as the seed. It is
only a suggestion: the user applies it, or not.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from heapq import merge

from texium.core.errors import ValidationError
from texium.core.scheduling import cron
from texium.core.scheduling.clockchanges import clock_flags
from texium.core.scheduling.spread import MAX_JITTER_SECONDS
from texium.core.scheduling.windows import NO_BLACKOUTS, Blackouts, CalendarReader, JobTimes

MAX_HOURS = 336  # two weeks
DEFAULT_PEAK_THRESHOLD = 10  # starts in one minute above which an hour is a peak
MAX_PEAK_THRESHOLD = 100_000
MAX_SUGGESTIONS = 100  # per peak hour; `jobs` says how many jobs start in its peak minutes
_PAGE = 2000  # job documents read at once
_HOUR, _MINUTE, _SECOND = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)


# --------------------------------------------------------------------------- suggestions
_MINUTE_FORMS = (
    (re.compile(r"\d+"), lambda m: "H"),
    (re.compile(r"\*/(\d+)"), lambda m: f"H/{m[1]}"),
    (re.compile(r"(\d+)-(\d+)/(\d+)"), lambda m: f"H({m[1]}-{m[2]})/{m[3]}"),
)


def schedule_fields(doc: dict) -> dict:
    """A job's cron fields and time zone, as stored (`H` unresolved)."""
    fields = {name: str(doc.get(name, cron.DEFAULTS[name])) for name in cron.CRON_FIELDS}
    return fields | {"timezone": doc.get("timezone") or "UTC"}


def spread_suggestion(doc: dict) -> dict | None:
    """The job's schedule with its fixed minute turned into `H` (a valid schedule for this job's
    id), or None when its minute has no such form (`*`, a list, already `H`)."""
    fields = schedule_fields(doc)
    for pattern, form in _MINUTE_FORMS:
        match = pattern.fullmatch(fields["minute"].strip())
        if match:
            suggested = fields | {"minute": form(match)}
            try:
                cron.normalize(suggested, "UTC", str(doc["_id"]))
            except ValidationError:
                return None
            return suggested
    return None


# --------------------------------------------------------------------------- counting
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JITTER_REACH = MAX_JITTER_SECONDS  # how far before the window a base time may lie and still be delayed into it


def _floor(moment: datetime) -> int:
    """Whole seconds since 1970 at or before `moment` (fire times are whole seconds)."""
    return (moment - _EPOCH) // _SECOND


def _ceil(moment: datetime) -> int:
    return -((_EPOCH - moment) // _SECOND)


def _instant(seconds: int) -> datetime:
    return _EPOCH + seconds * _SECOND


@dataclass
class _Counts:
    """The occurrences of the jobs whose times are the same (a group), as compact arrays:
    100,000 jobs must not cost a dict per job and minute."""

    runs: int = 0
    first_run: int | None = None  # seconds since 1970
    minutes: array = field(default_factory=lambda: array("i"))  # minute indexes with runs, ascending
    starts: array = field(default_factory=lambda: array("i"))  # runs in each of those minutes
    excluded: Counter = field(default_factory=Counter)  # hour index -> occurrences excluded
    calendars: set = field(default_factory=set)  # names of the calendars that excluded some
    dst: list = field(default_factory=list)  # the clock changes that shape the runs (clockchanges.clock_flags)
    jobs: list = field(default_factory=list)  # the group's jobs, as indexes in the forecast's order


@dataclass
class _Base:
    """A schedule's times (seconds since 1970) from a jitter's reach before the window to its end."""

    times: list
    following: int | None  # the first time after them
    weight: int  # starts per entry (a schedule firing several seconds of a minute: one entry per minute)
    span: int  # seconds from an entry's first start to its last
    _isoformats: list | None = None

    def isoformats(self) -> list[str]:
        """Each time's isoformat(), as jitter hashes it: shared by every jittered job of the schedule."""
        if self._isoformats is None:
            self._isoformats = [_instant(t).isoformat() for t in self.times]
        return self._isoformats


class _Window:
    """The forecast's span, (after, until] in whole seconds, and the base times of each schedule in it."""

    def __init__(self, now: datetime, start: datetime, end: datetime):
        self.now, self.start, self.end = now, start, end
        self.after, self.until, self.first = _floor(now), _floor(end) - 1, _floor(start)
        self._base: dict[tuple, _Base] = {}
        self._spans: dict[Blackouts, list] = {}
        self._zone_changes: dict[str, bool] = {}
        self._flags: dict[tuple, list] = {}

    def base_times(self, base, exact: bool) -> _Base:
        """A repeating schedule firing at several seconds of a minute is searched per minute
        (unless `exact`: jitter delays each second's start on its own)."""
        key = (base, exact)  # the schedule itself, kept alive by the key (cron caches the objects)
        if key not in self._base:
            weight, span, search = 1, 0, base
            if not exact and len(base.seconds) > 1 and not base.fixed:
                per_minute = cron.schedule_for(base.fields | {"second": str(base.seconds[0])})
                if not per_minute.fixed:  # the same daylight-saving rules (see cron.py)
                    search = per_minute
                    weight, span = len(base.seconds), base.seconds[-1] - base.seconds[0]
            times = search.fire_seconds_between(self.after - _JITTER_REACH - span - 1, self.until)
            following = search.next_after(_instant(times[-1] if times else self.until))
            self._base[key] = _Base(times, None if following is None else _floor(following), weight, span)
        return self._base[key]

    def clock_flags(self, base, after: int, until: int) -> list[dict]:
        """How the clock changes in (after, until] shape the schedule's runs: looked at only when
        its zone has a change in the window (asked once per zone), once per schedule and span."""
        zone = base.zone_name
        if zone not in self._zone_changes:
            self._zone_changes[zone] = bool(cron.offset_changes(zone, self.now, self.end))
        if not self._zone_changes[zone] or after >= until:
            return []
        key = (base, after, until)
        if key not in self._flags:
            self._flags[key] = clock_flags(base, _instant(after), _instant(until))
        return self._flags[key]

    def spans(self, blackouts: Blackouts) -> list[tuple[int, int, str]]:
        """The blackout spans in the window as [from, until) whole seconds, once per Blackouts
        (CalendarReader shares them)."""
        if blackouts not in self._spans:
            found = blackouts.spans_between(self.now, self.end)
            self._spans[blackouts] = [(_ceil(begin), _ceil(until), name) for begin, until, name in found]
        return self._spans[blackouts]


class _JobCounter:
    """Counts one job's runs and exclusions minute by minute; `key` names the jobs whose counts
    are the same (same times, window, calendars and runs left), None for a jittered job."""

    def __init__(self, window: _Window, doc: dict, blackouts: Blackouts):
        self.window, self.times = window, JobTimes(doc, blackouts)
        start_at, end_at = self.times.start_at, self.times.end_at
        self.after = max(window.after, _ceil(start_at) - 1) if start_at else window.after
        self.until = min(window.until, _floor(end_at)) if end_at else window.until
        spans = window.spans(blackouts) if blackouts else []
        self._from, self._until, self._names = [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]
        limit = doc.get("max_runs")
        self.left = max(0, limit - int(doc.get("run_count") or 0)) if isinstance(limit, int) else None
        edges = [self.after + 1, self.until + 1, *self._from, *self._until]  # where a second's fate changes
        self._edges = sorted(edges)
        schedule = self.times.cron
        self.base = getattr(schedule, "base", schedule)  # a JitteredSchedule delays the times of its base
        self.jittered = self.base is not schedule
        times = ("run_at", self.times.run_at) if self.times.run_at is not None else self.base
        self.key = None if self.jittered else (times, self.after, self.until, blackouts or None, self.left)

    def _entries(self):
        """(first start, starts, seconds to the last start) in (after - span, until], ascending;
        an entry of several starts lies within one minute."""
        after, until = self.after, self.until
        if self.times.run_at is not None:  # a one-off: whole seconds, as the API takes it
            at = _floor(self.times.run_at)
            if after < at <= until:
                yield at, 1, 0
            return
        base = self.window.base_times(self.base, exact=self.jittered)
        found = base.times
        if not self.jittered:
            for i in range(bisect_right(found, after - base.span), bisect_right(found, until)):
                yield found[i], base.weight, base.span
            return
        first = bisect_right(found, after - _JITTER_REACH - 1)
        gaps: list = [b - a for a, b in zip(found[first:], found[first + 1 :], strict=False)]
        if found[first:]:
            gaps.append(None if base.following is None else base.following - found[-1])
        delays = self.times.cron.delay_seconds(base.isoformats()[first:], gaps) if found[first:] else []
        for at, delay in zip(found[first:], delays, strict=False):
            delayed = at + delay
            if delayed > until:
                break
            if delayed > after:
                yield delayed, 1, 0

    def _add(self, counts: _Counts, moment: int, starts: int) -> None:
        offset = moment - self.window.first
        i = bisect_right(self._from, moment) - 1
        if i >= 0 and moment < self._until[i]:
            counts.excluded[offset // 3600] += starts
            counts.calendars.add(self._names[i])
            return
        if self.left is not None:
            starts = min(starts, self.left)
            self.left -= starts
        counts.runs += starts
        minute = offset // 60
        if counts.minutes and counts.minutes[-1] == minute:
            counts.starts[-1] += starts
        else:
            counts.minutes.append(minute)
            counts.starts.append(starts)
        if counts.first_run is None:
            counts.first_run = moment

    def count(self) -> _Counts:
        counts, edges = _Counts(), self._edges
        if self.times.run_at is None:
            counts.dst = self.window.clock_flags(self.base, self.after, self.until)
        for first, starts, span in self._entries():
            if self.left == 0:
                break
            last = first + span
            # An entry whose minute crosses the window's or a blackout's edge is counted start by start.
            if starts == 1 or bisect_right(edges, first) == bisect_right(edges, last):
                self._add(counts, first, starts)
                continue
            seconds = self.times.cron.seconds  # several starts per entry: a plain CronSchedule
            for second in seconds:
                moment = first - seconds[0] + second
                if self.after < moment <= self.until and self.left != 0:
                    self._add(counts, moment, 1)
        return counts


def _slim(doc: dict) -> dict:
    """What the answer needs of a job after counting (its id, name and schedule), so 100,000
    jobs do not keep their whole documents."""
    return {name: doc[name] for name in ("_id", "name", *cron.CRON_FIELDS, "timezone") if name in doc}


class _Tally:
    """The forecast being added up, job by job (a job's document is not kept after add())."""

    def __init__(self, now: datetime, hours: int):
        now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
        start = now.replace(minute=0, second=0, microsecond=0)
        self.hours, self.window = hours, _Window(now, start, start + hours * _HOUR)
        self.groups: dict[object, _Counts] = {}
        self.rows: list[tuple[dict, _Counts]] = []  # per job: its slim document and its group's counts
        self.errors: list[dict] = []

    def add(self, doc: dict, blackouts: Blackouts = NO_BLACKOUTS) -> None:
        if not doc.get("is_enabled", True) or doc.get("is_paused"):
            return
        job_id = str(doc.get("_id"))
        try:
            counter = _JobCounter(self.window, doc, blackouts)
        except Exception as exc:  # ValidationError: a stored schedule that no longer builds
            error = getattr(exc, "detail", str(exc))
            self.errors.append({"job_id": job_id, "name": doc.get("name", ""), "error": error})
            return
        counts = self.groups.get(counter.key) if counter.key is not None else None
        if counts is None:
            counts = counter.count()
            self.groups[counter.key if counter.key is not None else object()] = counts
        counts.jobs.append(len(self.rows))
        self.rows.append((_slim(doc), counts))


def forecast(
    job_docs,
    hours: int,
    now: datetime,
    blackouts: dict[str, Blackouts] | None = None,
    peak_threshold: int = DEFAULT_PEAK_THRESHOLD,
) -> dict:
    """Runs per UTC hour from the start of the current hour (those after `now`), for `hours` hours.

    `job_docs`: any iterable of job documents. `blackouts`: {job id: the Blackouts of the
    calendars it excludes}. Returns {start, end, hours, peak_threshold, total_runs,
    total_excluded, buckets, jobs, peaks, errors}: `buckets` one per hour ({start, runs, jobs,
    excluded, busiest_minute, peak}), `jobs` one per job with runs or exclusions ({job_id, name,
    runs, first_run, excluded, excluded_by}), busiest first, `peaks` one per peak hour ({start,
    minute, starts, jobs, suggestions}), and `errors` the jobs whose schedule cannot be built
    ({job_id, name, error}).
    """
    check_arguments(hours, peak_threshold)
    tally, blackouts = _Tally(now, hours), blackouts or {}
    for doc in job_docs:
        tally.add(doc, blackouts.get(str(doc.get("_id")), NO_BLACKOUTS))
    return _summary(tally, peak_threshold)


def check_arguments(hours: int, peak_threshold: int) -> None:
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"hours must be from 1 to {MAX_HOURS}")
    if not 1 <= peak_threshold <= MAX_PEAK_THRESHOLD:
        raise ValueError(f"peak_threshold must be from 1 to {MAX_PEAK_THRESHOLD}")


def _summary(tally: _Tally, threshold: int) -> dict:
    window, hours = tally.window, tally.hours
    runs, jobs_in, excluded, per_minute = [0] * hours, [0] * hours, [0] * hours, [0] * (hours * 60)
    for counts in tally.groups.values():  # a group's counts are added once, times its jobs
        weight, last_hour = len(counts.jobs), -1
        for minute, n in zip(counts.minutes, counts.starts, strict=True):
            per_minute[minute] += n * weight
            hour = minute // 60
            runs[hour] += n * weight
            if hour != last_hour:
                jobs_in[hour] += weight
                last_hour = hour
        for hour, n in counts.excluded.items():
            excluded[hour] += n * weight
    buckets = []
    for i in range(hours):
        minutes = per_minute[i * 60 : i * 60 + 60]
        most = max(minutes)
        at = window.start + (i * 60 + minutes.index(most)) * _MINUTE if most else None  # the earliest busiest
        buckets.append(
            {
                "start": window.start + i * _HOUR,
                "runs": runs[i],
                "jobs": jobs_in[i],
                "excluded": excluded[i],
                "busiest_minute": {"at": at, "starts": most} if at else None,
                "peak": most > threshold,
            }
        )
    jobs = [
        {
            "job_id": str(doc["_id"]),
            "name": doc.get("name", ""),
            "runs": counts.runs,
            "first_run": None if counts.first_run is None else _instant(counts.first_run),
            "excluded": sum(counts.excluded.values()),
            "excluded_by": sorted(counts.calendars),
        }
        | ({"dst": counts.dst} if counts.dst else {})
        for doc, counts in tally.rows
        if counts.runs or counts.excluded
    ]
    jobs.sort(key=lambda job: (-job["runs"], job["name"]))
    return {
        "start": window.start,
        "end": window.end,
        "hours": hours,
        "peak_threshold": threshold,
        "total_runs": sum(runs),
        "total_excluded": sum(excluded),
        "buckets": buckets,
        "jobs": jobs,
        "peaks": _peaks(tally, buckets, threshold, per_minute),
        "errors": tally.errors,
    }


def _peaks(tally: _Tally, buckets: list, threshold: int, per_minute: list) -> list[dict]:
    """Each peak hour: its busiest minute, the jobs starting in its crowded minutes, and the `H`
    form of their schedules (at most MAX_SUGGESTIONS)."""
    crowded = {minute for minute, n in enumerate(per_minute) if n > threshold}
    if not crowded:
        return []
    hit: dict[int, dict[int, _Counts]] = {}  # peak hour -> the groups starting in its crowded minutes
    for counts in tally.groups.values():
        for minute in counts.minutes:
            if minute in crowded:
                hit.setdefault(minute // 60, {})[id(counts)] = counts
    peaks, suggested_for = [], {}
    for i, bucket in enumerate(buckets):
        if not bucket["peak"]:
            continue
        groups = list(hit.get(i, {}).values())
        suggestions = []
        for index in merge(*(counts.jobs for counts in groups)):  # in the jobs' order
            if index not in suggested_for:  # a job in many peak hours is looked at once
                suggested_for[index] = _suggestion(tally.rows[index][0])
            if suggested_for[index] is not None:
                suggestions.append(suggested_for[index])
                if len(suggestions) == MAX_SUGGESTIONS:
                    break
        peaks.append(
            {
                "start": bucket["start"],
                "minute": bucket["busiest_minute"]["at"],
                "starts": bucket["busiest_minute"]["starts"],
                "jobs": sum(len(counts.jobs) for counts in groups),
                "suggestions": suggestions,
            }
        )
    return peaks


def _suggestion(doc: dict) -> dict | None:
    suggested = spread_suggestion(doc)
    if suggested is None:
        return None
    return {"job_id": str(doc["_id"]), "name": doc.get("name", ""), "schedule": schedule_fields(doc)} | {
        "suggested": suggested
    }


class Forecasts:
    """Reads the jobs and the calendars they exclude, then forecasts (blocking: off the IOLoop)."""

    def __init__(self, datastore):
        self._jobs = datastore.jobs
        self._calendars = CalendarReader(datastore)

    def compute(self, scope: dict, hours: int, now: datetime, peak_threshold: int) -> dict:
        """Reads the jobs a page at a time, so only a page of whole documents is held at once."""
        check_arguments(hours, peak_threshold)
        tally, offset, query = _Tally(now, hours), 0, {"is_enabled": True, **scope}
        while True:
            found = self._jobs.find(query, sort=[("created_at", 1), ("_id", 1)], limit=_PAGE, offset=offset)
            page = [doc for doc in found if not doc.get("is_paused")]
            blackouts = self._calendars.blackouts_for(page)
            for doc in page:
                tally.add(doc, blackouts.get(doc["_id"], NO_BLACKOUTS))
            if len(found) < _PAGE:
                break
            offset += _PAGE
        return _summary(tally, peak_threshold)
