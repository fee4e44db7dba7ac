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
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from texium.core.errors import ValidationError
from texium.core.scheduling import cron
from texium.core.scheduling.windows import NO_BLACKOUTS, TICK, Blackouts, CalendarReader, JobTimes

MAX_HOURS = 336  # two weeks
DEFAULT_PEAK_THRESHOLD = 10  # starts in one minute above which an hour is a peak
MAX_PEAK_THRESHOLD = 100_000
MAX_SUGGESTIONS = 100  # per peak hour; `jobs` says how many jobs start in its peak minutes
_HOUR, _MINUTE, _SECOND = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
_CHUNK = 4096
_MAX_JITTER = timedelta(seconds=3600)  # spread.MAX_JITTER_SECONDS: how far before the window a base time may lie


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
@dataclass
class _Counts:
    """One job's occurrences in the window (shared by the jobs whose times are the same)."""

    runs: int = 0
    first_run: datetime | None = None
    hours: Counter = field(default_factory=Counter)  # hour index -> runs
    minutes: Counter = field(default_factory=Counter)  # minute index -> starts
    excluded: Counter = field(default_factory=Counter)  # hour index -> occurrences excluded
    calendars: set = field(default_factory=set)  # names of the calendars that excluded some


class _Window:
    """The forecast's span, (after, until], and the base times of each schedule in it."""

    def __init__(self, now: datetime, start: datetime, end: datetime):
        self.now, self.start, self.end = now, start, end
        self.after, self.until = now, end - TICK
        self._base: dict[tuple, tuple[list, datetime | None, int, int]] = {}
        self._spans: dict[Blackouts, list] = {}

    def base_times(self, base, exact: bool) -> tuple[list[datetime], datetime | None, int, int]:
        """(the schedule's times from a jitter's reach before the window to its end, the first
        time after them, starts per entry, seconds from an entry's first start to its last).
        A repeating schedule firing at several seconds of a minute is searched per minute."""
        key = (base, exact)  # the schedule itself, kept alive by the key (cron caches the objects)
        if key not in self._base:
            weight, span, search = 1, 0, base
            if not exact and len(base.seconds) > 1 and not base.fixed:
                per_minute = cron.schedule_for(base.fields | {"second": str(base.seconds[0])})
                if not per_minute.fixed:  # the same daylight-saving rules (see cron.py)
                    search = per_minute
                    weight, span = len(base.seconds), base.seconds[-1] - base.seconds[0]
            times, after = [], self.after - _MAX_JITTER - _SECOND * (span + 1)
            while True:
                found = search.fire_times_between(after, self.until, _CHUNK)
                times += found
                if len(found) < _CHUNK:
                    break
                after = found[-1]
            following = search.next_after(times[-1] if times else self.until)
            self._base[key] = (times, following, weight, span)
        return self._base[key]

    def spans(self, blackouts: Blackouts) -> list:
        """The blackout spans in the window, once per Blackouts (CalendarReader shares them)."""
        if blackouts not in self._spans:
            self._spans[blackouts] = blackouts.spans_between(self.now, self.end)
        return self._spans[blackouts]


def _entries(window: _Window, times: JobTimes, after: datetime, until: datetime):
    """(first start, starts, seconds to the last start) of a job's times in (after, until],
    ascending; an entry of several starts lies within one minute."""
    if times.run_at is not None:
        if after < times.run_at <= until:
            yield times.run_at, 1, 0
        return
    schedule = times.cron
    base = getattr(schedule, "base", schedule)  # a JitteredSchedule delays the times of its base
    jittered = base is not schedule
    found, following, weight, span = window.base_times(base, exact=jittered)
    if not jittered:
        first = bisect_right(found, after - _SECOND * span)
        for i in range(first, bisect_right(found, until)):
            yield found[i], weight, span
        return
    for i in range(bisect_right(found, after - _MAX_JITTER - _SECOND), len(found)):
        at = found[i]
        delayed = at + schedule.delay(at, found[i + 1] if i + 1 < len(found) else following)
        if delayed > until:
            break
        if delayed > after:
            yield delayed, 1, 0


class _JobCounter:
    """Counts one job's runs and exclusions, hour by hour and minute by minute."""

    def __init__(self, window: _Window, doc: dict, blackouts: Blackouts):
        self.window, self.times = window, JobTimes(doc, blackouts)
        self.after = max(window.after, self.times.start_at - TICK) if self.times.start_at else window.after
        self.until = min(window.until, self.times.end_at) if self.times.end_at else window.until
        spans = window.spans(blackouts) if blackouts else []
        self._from, self._until, self._names = [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]
        limit = doc.get("max_runs")
        self.left = max(0, limit - int(doc.get("run_count") or 0)) if isinstance(limit, int) else None
        self._edges = sorted([self.after, self.until, *self._from, *self._until])

    def _calendar(self, moment: datetime) -> str | None:
        i = bisect_right(self._from, moment) - 1
        return self._names[i] if i >= 0 and moment < self._until[i] else None

    def _add(self, counts: _Counts, moment: datetime, starts: int) -> None:
        hour = int((moment - self.window.start) / _HOUR)
        calendar = self._calendar(moment)
        if calendar is not None:
            counts.excluded[hour] += starts
            counts.calendars.add(calendar)
            return
        if self.left is not None:
            starts = min(starts, self.left)
            self.left -= starts
        counts.runs += starts
        counts.hours[hour] += starts
        counts.minutes[int((moment - self.window.start) / _MINUTE)] += starts
        counts.first_run = counts.first_run or moment

    def count(self) -> _Counts:
        counts = _Counts()
        for first, starts, span in _entries(self.window, self.times, self.after, self.until):
            if self.left == 0:
                break
            last = first + _SECOND * span
            # An entry whose minute crosses the window's or a blackout's edge is counted start by start.
            whole = starts == 1 or bisect_left(self._edges, first) == bisect_right(self._edges, last)
            if whole:
                self._add(counts, first, starts)
                continue
            for second in self.times.cron.seconds:  # several starts per entry: a plain CronSchedule
                moment = first.replace(second=second)
                if self.after < moment <= self.until and self.left != 0:
                    self._add(counts, moment, 1)
        return counts


def _share_key(doc: dict, times_schedule) -> object | None:
    """Jobs with the same plain schedule and nothing of their own (no window, calendars,
    max_runs, run_at, jitter) have the same times: counted once."""
    own = ("run_at", "start_at", "end_at", "max_runs", "jitter_seconds", "exclude_calendars")
    if any(doc.get(name) for name in own):
        return None
    return times_schedule


def forecast(
    job_docs: list[dict],
    hours: int,
    now: datetime,
    blackouts: dict[str, Blackouts] | None = None,
    peak_threshold: int = DEFAULT_PEAK_THRESHOLD,
) -> dict:
    """Runs per UTC hour from the start of the current hour (those after `now`), for `hours` hours.

    `blackouts`: {job id: the Blackouts of the calendars it excludes}. Returns {start, end,
    hours, peak_threshold, total_runs, total_excluded, buckets, jobs, peaks, errors}: `buckets`
    one per hour ({start, runs, jobs, excluded, busiest_minute, peak}), `jobs` one per job with
    runs or exclusions ({job_id, name, runs, first_run, excluded, excluded_by}), busiest first,
    `peaks` one per peak hour ({start, minute, starts, jobs, suggestions}), and `errors` the jobs
    whose schedule cannot be built ({job_id, name, error}).
    """
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"hours must be from 1 to {MAX_HOURS}")
    if not 1 <= peak_threshold <= MAX_PEAK_THRESHOLD:
        raise ValueError(f"peak_threshold must be from 1 to {MAX_PEAK_THRESHOLD}")
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    start = now.replace(minute=0, second=0, microsecond=0)
    end = start + hours * _HOUR
    window, blackouts = _Window(now, start, end), blackouts or {}
    shared: dict[object, _Counts] = {}
    counted: list[tuple[dict, _Counts]] = []
    errors = []
    for doc in job_docs:
        if not doc.get("is_enabled", True) or doc.get("is_paused"):
            continue
        job_id = str(doc.get("_id"))
        try:
            counter = _JobCounter(window, doc, blackouts.get(job_id, NO_BLACKOUTS))
        except Exception as exc:  # ValidationError: a stored schedule that no longer builds
            errors.append({"job_id": job_id, "name": doc.get("name", ""), "error": getattr(exc, "detail", str(exc))})
            continue
        key = _share_key(doc, counter.times.cron)
        counts = shared.get(key) if key is not None else None
        if counts is None:
            counts = counter.count()
            if key is not None:
                shared[key] = counts
        counted.append((doc, counts))
    return _summary(window, hours, peak_threshold, counted, errors)


def _summary(window: _Window, hours: int, threshold: int, counted: list, errors: list) -> dict:
    runs, jobs_in, excluded = [0] * hours, [0] * hours, [0] * hours
    per_minute: Counter = Counter()
    distinct = {id(counts): counts for _, counts in counted}  # shared counts are added once, times their jobs
    weight = Counter(id(counts) for _, counts in counted)
    for key, counts in distinct.items():
        for hour, n in counts.hours.items():
            runs[hour] += n * weight[key]
            jobs_in[hour] += weight[key]
        for hour, n in counts.excluded.items():
            excluded[hour] += n * weight[key]
        for minute, n in counts.minutes.items():
            per_minute[minute] += n * weight[key]
    busiest = [(0, None)] * hours
    for minute, n in per_minute.items():
        if n > busiest[minute // 60][0]:
            busiest[minute // 60] = (n, minute)
    buckets = []
    for i in range(hours):
        most, minute = busiest[i]
        at = window.start + minute * _MINUTE if minute is not None else None
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
            "first_run": counts.first_run,
            "excluded": sum(counts.excluded.values()),
            "excluded_by": sorted(counts.calendars),
        }
        for doc, counts in counted
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
        "peaks": _peaks(window, buckets, threshold, per_minute, counted),
        "errors": errors,
    }


def _peaks(window: _Window, buckets: list, threshold: int, per_minute: Counter, counted: list) -> list[dict]:
    """Each peak hour: its busiest minute, the jobs starting in its crowded minutes, and the `H`
    form of their schedules (at most MAX_SUGGESTIONS)."""
    crowded = {minute for minute, n in per_minute.items() if n > threshold}
    if not crowded:
        return []
    seen: set[int] = set()
    hit: dict[int, set[int]] = {}  # peak hour -> the counts (by id) starting in its crowded minutes
    for _, counts in counted:
        if id(counts) not in seen:
            seen.add(id(counts))
            for minute in counts.minutes:
                if minute in crowded:
                    hit.setdefault(minute // 60, set()).add(id(counts))
    peaks, suggested_for = [], {}
    for i, bucket in enumerate(buckets):
        if not bucket["peak"]:
            continue
        in_peak = hit.get(i, set())
        members = [doc for doc, counts in counted if id(counts) in in_peak]  # in the jobs' order
        suggestions = []
        for doc in members:
            if id(doc) not in suggested_for:  # a job in many peak hours is looked at once
                suggested_for[id(doc)] = spread_suggestion(doc)
            suggested = suggested_for[id(doc)]
            if suggested is not None:
                current = {"job_id": str(doc["_id"]), "name": doc.get("name", ""), "schedule": schedule_fields(doc)}
                suggestions.append(current | {"suggested": suggested})
                if len(suggestions) == MAX_SUGGESTIONS:
                    break
        peaks.append(
            {
                "start": bucket["start"],
                "minute": bucket["busiest_minute"]["at"],
                "starts": bucket["busiest_minute"]["starts"],
                "jobs": len(members),
                "suggestions": suggestions,
            }
        )
    return peaks


class Forecasts:
    """Reads the jobs and the calendars they exclude, then forecasts (blocking: off the IOLoop)."""

    def __init__(self, datastore):
        self._jobs = datastore.jobs
        self._calendars = CalendarReader(datastore)

    def compute(self, scope: dict, hours: int, now: datetime, peak_threshold: int) -> dict:
        docs = self._jobs.find({"is_enabled": True, **scope}, sort=[("created_at", 1)])
        docs = [doc for doc in docs if not doc.get("is_paused")]
        return forecast(docs, hours, now, self._calendars.blackouts_for(docs), peak_threshold)
