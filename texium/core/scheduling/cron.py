"""Unix cron schedules: parsed and searched here, handed to APScheduler 3 as a trigger.

One engine serves the preview (next_fire_times) and firing (build_trigger), so both always agree.
The API speaks Unix cron (README "Cron fields"):

- Fields: second, minute, hour, day_of_month, month, day_of_week, week (ISO week 1-53). Each is
  a list of items: `*`, `n`, `a-b`, `*/n`, `a-b/n` and `a/n` (a up to the field's top). Names work
  wherever numbers do, also in ranges and with steps: jan..dec, sun..sat (`jan-jun/2`, `3-dec`,
  `mon-fri/2`). A step may exceed its range (`5-5/1`) but not the field's cycle: `*/60` minutes
  is :00 only, as in cron, and `*/61` is refused (cron would read it as :00 too).
- day_of_week: 0 = Sunday ... 6 = Saturday, 7 = Sunday too; a range ending in Sunday wraps to 7
  (`5-0` and `fri-sun` are Fri, Sat, Sun; `sun-sun` is Sunday). day_of_month also takes `last`,
  `1st fri` .. `5th fri` and `last fri`.
- When day_of_month and day_of_week are both restricted (neither starts with '*'), a day matches
  if EITHER matches (Vixie cron); otherwise both must match.
- A schedule that can never fire (day_of_month 31 in month 2) is refused by normalize().
- `H` (Jenkins): an item `H`, `H/n`, `H(a-b)` or `H(a-b)/n` stands for a value hashed from a seed
  (the job's id) and the field's name (spread.stable_hash): `H` one value of the field's range
  (day_of_month 1-28, week 1-52, day_of_week 0-6, so every month and year has it), `H(a-b)` one
  of a..b, `H/n` and `H(a-b)/n` every n-th from a hashed start below n. It is resolved into plain
  cron text (`H/15` -> `7-59/15`) before the schedule is built; `H/n` then counts as a `*` field
  (as `*/n` would) for the day rule below and for daylight saving.

Daylight saving: the search walks wall-clock time in the job's zone and resolves each change.
A schedule is "fixed" when none of second, minute, hour starts with '*' (cron's own test).
- Spring forward (a gap): a matching wall time that does not exist runs once, later. A fixed
  schedule runs it at the moment of the change (02:30 in Berlin -> 03:00 CEST), as Debian's Vixie
  cron ("soon after the change"), croniter 7 and cronsim do; skipped times merge into one run. A
  repeating schedule keeps its elapsed-time rhythm: the time runs shifted by the gap (02:30 ->
  03:30 CEST, i.e. with the offset from before the change) and merges with a run due then, so
  every minute/hour simply continues (cron would skip it; croniter is inconsistent). Wall times
  that exist that day (01:59; 02:35 in Lord Howe's half-hour gap) always run.
- Fall back (a fold): a fixed schedule runs once, in the first copy of the repeated time (as
  Debian's cron; croniter 7 runs it twice). A repeating schedule fires in both copies, so every
  hour and every minute keep their rhythm.
- A job's `dst_policy` overrides these defaults (check_dst_policy): `spring_forward` `shift`,
  `at_change` (the two rules above, for any schedule) or `skip` (a wall time that does not exist
  does not run that day); `fall_back` `once` (only the first copy's times; the second copy's are
  skipped) or `twice` (both copies). It is part of the schedule's cache key.
Fire times are aware UTC datetimes, strictly increasing. The search assumes, as the tz database
does, that offsets stay within +-18 h and that a zone does not change offset twice within a UTC
day and change back. Everything here is pure: no I/O beyond zoneinfo, no settings, no clock.
"""

import re
from bisect import bisect_left, bisect_right
from calendar import monthrange
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from texium.core.errors import ValidationError
from texium.core.scheduling.spread import stable_hash

CRON_FIELDS = ("second", "minute", "hour", "day_of_month", "month", "day_of_week", "week")
DEFAULTS = {name: "*" for name in CRON_FIELDS} | {"second": "0"}
MAX_COUNT = 1000  # upper bound for next_fire_times, so a preview cannot spin for long
MAX_FIELD_LENGTH = 256
SPRING_FORWARD = ("shift", "at_change", "skip")  # what a wall time in a spring-forward gap does
FALL_BACK = ("once", "twice")  # in which copies of a repeated wall time a schedule fires
_DST_CHOICES = {"spring_forward": SPRING_FORWARD, "fall_back": FALL_BACK}

# field -> (lowest, highest, largest step, what to say when a value is out of range)
_LIMITS = {
    "second": (0, 59, 60, "must be 0-59"),
    "minute": (0, 59, 60, "must be 0-59"),
    "hour": (0, 23, 24, "must be 0-23"),
    "day_of_month": (1, 31, 31, "must be 1-31, 'last' or e.g. '2nd fri'"),
    "month": (1, 12, 12, "must be 1-12 or jan-dec"),
    "day_of_week": (0, 7, 7, "must be 0-7 or sun-sat"),
    "week": (1, 53, 53, "must be ISO week 1-53"),
}
_UNIX_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # index = Unix number
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMES = {"month": {m: i + 1 for i, m in enumerate(_MONTHS)}, "day_of_week": {d: i for i, d in enumerate(_UNIX_DAYS)}}
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ITEM = re.compile(
    r"(?:(?P<star>\*)|(?P<first>[0-9]+|[a-z]+)(?:-(?P<last>[0-9]+|[a-z]+))?)(?:/(?P<step>[0-9]+))?",
    re.IGNORECASE,
)
_HASH_ITEM = re.compile(r"H(?:\((?P<first>[0-9A-Za-z]+)-(?P<last>[0-9A-Za-z]+)\))?(?:/(?P<step>[0-9]+))?")
_HASH_FORMS = "H takes the forms H, H/n, H(a-b) and H(a-b)/n"
# field -> the range a bare `H` or `H/n` picks from: days and weeks every month and year has
_HASH_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day_of_month": (1, 28),
    "month": (1, 12),
    "day_of_week": (0, 6),
    "week": (1, 52),
}
_DOM_EXTRA = re.compile(r"(?P<nth>1st|2nd|3rd|4th|5th|last)(?: +(?P<day>sun|mon|tue|wed|thu|fri|sat))?", re.IGNORECASE)
_NTH = {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "last": -1}

_EPOCH = datetime(1970, 1, 1)
_SECOND, _DAY = timedelta(seconds=1), timedelta(days=1)
_FIRST, _LAST = datetime(1, 1, 8), datetime(9998, 12, 24)  # searches stay inside datetime's range
_HORIZON_YEARS = 400  # the Gregorian calendar repeats every 400 years
_MAX_WINDOWS = 100_000  # a safety net; a search normally looks at a handful of UTC days


def _invalid(name: str, value, reason: str) -> ValidationError:
    return ValidationError(f"Invalid cron field {name}: {value!r} ({reason})")


def _zone(name) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError (bad path), TypeError (not a str)
        raise ValidationError(f"Invalid timezone: {name!r}") from None


# ---- parsing -------------------------------------------------------------------------------------


def _number(name: str, word: str, value: str) -> int:
    if word.isdigit():
        return int(word)
    number = _NAMES.get(name, {}).get(word.lower())
    if number is None:
        raise _invalid(name, value, _LIMITS[name][3])
    return number


def _expand(name: str, item: str, value: str) -> range:
    """One list item -> the numbers it selects, bounds checked."""
    low, high, _, hint = _LIMITS[name]
    match = _ITEM.fullmatch(item)
    if not match:
        raise _invalid(name, value, hint)
    star, first, last, step = match.group("star", "first", "last", "step")
    if star:
        return range(low, (6 if name == "day_of_week" else high) + 1, _step(name, step, value))
    a, b, n = _bounds(name, first, last, step, value)
    return range(a, b + 1, n)


def _step(name: str, step: str | None, value: str) -> int:
    most = _LIMITS[name][2]
    n = 1 if step is None else int(step)
    if not 1 <= n <= most:  # cron takes any step; past one cycle it can only mislead
        raise _invalid(name, value, f"step must be 1-{most}")
    return n


def _bounds(name: str, first: str, last: str | None, step: str | None, value: str) -> tuple[int, int, int]:
    """(a, b, n) of an item's range and step, checked against the field's limits."""
    low, high, _, hint = _LIMITS[name]
    n = _step(name, step, value)
    top = 6 if name == "day_of_week" else high  # 7 is only an alias of Sunday
    a = _number(name, first, value)
    if name == "day_of_week" and last is None and step is not None:
        a %= 7  # '7/2' starts on Sunday, like 'sun/2'
    if last is not None:
        b = _number(name, last, value)
    else:
        b = a if step is None else max(a, top)  # 'a/n' runs from a to the top
    if name == "day_of_week" and b == 0 and a > 0:
        b = 7  # Sunday closes the week: '5-0' and 'fri-sun' are 5-7
    if not (low <= a <= high and low <= b <= high):
        raise _invalid(name, value, hint)
    if a > b:
        raise _invalid(name, value, "range runs backwards")
    return a, b, n


@lru_cache(maxsize=4096)
def _resolve_hash(name: str, value: str, seed: str | None) -> str:
    """A stripped field with its `H` items replaced by the plain items they stand for."""
    if "H" not in value:
        return value
    items = []
    for item in (part.strip() for part in value.split(",")):
        match = _HASH_ITEM.fullmatch(item)
        if match is None:
            if item.startswith("H"):
                raise _invalid(name, value, _HASH_FORMS)
            items.append(item)
            continue
        first, last, step = match.group("first", "last", "step")
        if first is None:
            (a, b), n = _HASH_RANGES[name], _step(name, step, value)
        else:
            a, b, n = _bounds(name, first, last, step, value)
        if seed is None:
            raise _invalid(name, value, "H needs the job's id to take a value")
        number = stable_hash(str(seed), name)
        if step is None:
            items.append(str(a + number % (b - a + 1)))
        else:
            items.append(f"{a + number % min(n, b - a + 1)}-{b}/{n}")
    return ",".join(items)


def _loose(value: str) -> bool:
    """A field that counts as unrestricted for the day rule and daylight saving: `*...`, `H/n`."""
    return value.startswith("*") or value.startswith("H/")


def resolve(fields: Mapping, seed: str | None) -> dict:
    """`fields` (as normalize() returns them) with every `H` replaced by the value `seed` gives."""
    return {**fields, **{name: _resolve_hash(name, _as_text(name, fields[name]), seed) for name in CRON_FIELDS}}


def hashed(fields: Mapping, seed: str | None) -> dict:
    """Only the fields that use `H`, each with the plain text it took for `seed`."""
    resolved = resolve(fields, seed)
    return {name: resolved[name] for name in CRON_FIELDS if resolved[name] != _as_text(name, fields[name])}


def _dom_extra(item: str) -> tuple[int, int | None] | None:
    """'last' -> (-1, None); '2nd fri' -> (2, 5); 'last mon' -> (-1, 1); otherwise None."""
    match = _DOM_EXTRA.fullmatch(item)
    if not match or (match["day"] is None and match["nth"].lower() != "last"):
        return None
    day = None if match["day"] is None else _UNIX_DAYS.index(match["day"].lower())
    return _NTH[match["nth"].lower()], day


@lru_cache(maxsize=4096)
def _parse(name: str, value: str) -> tuple[frozenset, tuple]:
    """A stripped field -> (numbers, day_of_month extras); raises the field's ValidationError."""
    numbers, extras = set(), []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            raise _invalid(name, value, "empty item in list")
        extra = _dom_extra(item) if name == "day_of_month" else None
        if extra:
            extras.append(extra)
        else:
            numbers.update(_expand(name, item, value))
    if name == "day_of_week":
        numbers = {n % 7 for n in numbers}
    return frozenset(numbers), tuple(extras)


def _as_text(name: str, value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _invalid(name, value, "must be a string or an integer")
    return value.strip()


def _check_field(name: str, value, seed: str | None = None) -> str:
    text = _as_text(name, value)
    if not text:
        raise _invalid(name, text, "must not be empty")
    if len(text) > MAX_FIELD_LENGTH:  # the message quotes only the start of such a value
        raise _invalid(name, text[:40] + "...", f"at most {MAX_FIELD_LENGTH} characters")
    _parse(name, _resolve_hash(name, text, seed))
    return text


def normalize(fields: Mapping, timezone_name: str, seed: str | None = None) -> dict:
    """Complete, validated schedule: the 7 fields as stripped strings plus "timezone".

    Missing fields take DEFAULTS; a missing or null "timezone" takes `timezone_name`.
    Keys that are not cron fields are ignored, so a whole job document can be passed.
    `H` is kept as written and checked with the values `seed` (the job's id) gives it.
    Raises ValidationError naming the field and the bad value, or saying it never fires.
    """
    if not isinstance(fields, Mapping):
        raise ValidationError("Cron fields must be an object")
    result = {name: _check_field(name, fields.get(name, DEFAULTS[name]), seed) for name in CRON_FIELDS}
    tz_name = fields.get("timezone")
    tz_name = timezone_name if tz_name is None else tz_name
    result["timezone"] = tz_name.strip() if isinstance(tz_name, str) else tz_name
    schedule_for(result, seed)  # checks the zone, and refuses schedules that never fire
    return result


def check_dst_policy(value) -> dict | None:
    """A job's `dst_policy` checked: an object with `spring_forward` and/or `fall_back` (each
    optional; null or missing keeps the default of the schedule's kind). Returns the keys given
    (None when none is), or raises ValidationError naming `dst_policy.<key>`."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("Invalid field dst_policy: must be an object (spring_forward, fall_back) or null")
    unknown = sorted(str(key) for key in value if key not in _DST_CHOICES)
    if unknown:
        raise ValidationError(f"Invalid field dst_policy.{unknown[0]}: unknown (give spring_forward, fall_back)")
    policy = {}
    for key, choices in _DST_CHOICES.items():
        choice = value.get(key)
        if choice is None:
            continue
        if choice not in choices:
            raise ValidationError(f"Invalid field dst_policy.{key}: must be one of {', '.join(choices)}")
        policy[key] = choice
    return policy or None


def _dst_key(value) -> tuple:
    policy = check_dst_policy(value) or {}
    return policy.get("spring_forward"), policy.get("fall_back")


# ---- offsets of a zone ---------------------------------------------------------------------------


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    return tz.fromutc(instant.replace(tzinfo=tz)).utcoffset()


@lru_cache(maxsize=8192)
def _changes_on(zone_name: str, day: int) -> tuple:
    """(instant, offset before, offset after) of each offset change in one UTC day (days since
    1970): compare the offsets at both ends of the day, then bisect to the second."""
    tz, start = _zone(zone_name), _EPOCH + timedelta(days=day)
    at = lambda second: _offset(tz, start + timedelta(seconds=second))  # noqa: E731
    lo, before, end = -1, at(-1), at(86399)
    changes = []
    while before != end:
        hi = 86399
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if at(mid) == before else (lo, mid)
        changes.append((start + timedelta(seconds=hi), before, at(hi)))
        lo, before = hi, changes[-1][2]
    return tuple(changes)


def offset_changes(zone_name: str, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """(instant as aware UTC, offset before, offset after) of each offset change of the zone in
    [start, end], ascending: a day at a time from the cached per-day search (cheap for a zone
    that has none: two offsets a day)."""
    first, last = _utc(start), _utc(end)
    found = []
    for day in range((first - _EPOCH).days, (last - _EPOCH).days + 1):
        for at, before, after in _changes_on(zone_name, day):
            if first <= at <= last:
                found.append((at.replace(tzinfo=UTC), before, after))
    return found


@lru_cache(maxsize=4096)
def _near(zone_name: str, day: int) -> tuple[timedelta, tuple]:
    """Offset changes within two UTC days either side of `day`, and the offset before them."""
    changes = tuple(c for d in range(day - 2, day + 2) for c in _changes_on(zone_name, d))
    if changes:
        return changes[0][1], changes
    return _offset(_zone(zone_name), _EPOCH + timedelta(days=day)), ()


def _aware(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime means UTC (never the machine's local time)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc(moment: datetime) -> datetime:
    """-> naive UTC, whole seconds: fire times are whole seconds, so "after" loses nothing."""
    return _aware(moment).replace(tzinfo=None, microsecond=0)


# ---- the schedule --------------------------------------------------------------------------------


class CronSchedule:
    """A parsed schedule: sorted value lists, the zone, and a cache of matching days per month.
    Build it through schedule_for(), which caches it; `next_after` is the one search. `loose`
    names fields that count as `*` although their text does not start with it (`H/n`); `dst`
    is the job's (spring_forward, fall_back), None for the default of the schedule's kind."""

    def __init__(self, key: tuple, loose: tuple = (), dst: tuple = (None, None)):
        self.fields = dict(zip((*CRON_FIELDS, "timezone"), key))
        self.zone_name = key[-1]
        self.zone = _zone(self.zone_name)
        values = {name: _parse(name, _check_field(name, self.fields[name])) for name in CRON_FIELDS}
        self.seconds, self.minutes, self.hours, self.months = (
            tuple(sorted(values[name][0])) for name in ("second", "minute", "hour", "month")
        )
        self.month_set = frozenset(self.months)
        (self.doms, self.dom_extras), self.dows = values["day_of_month"], values["day_of_week"][0]
        self.weeks = None if self.fields["week"] == "*" else values["week"][0]
        starred = {name: name in loose or self.fields[name].startswith("*") for name in CRON_FIELDS}
        self.either = not starred["day_of_month"] and not starred["day_of_week"]
        self.fixed = not (starred["second"] or starred["minute"] or starred["hour"])
        self.spring_forward = dst[0] or ("at_change" if self.fixed else "shift")
        self.fall_back = dst[1] or ("once" if self.fixed else "twice")
        self.dst_policy = {"spring_forward": self.spring_forward, "fall_back": self.fall_back}  # as applied
        self._month_days: dict[int, tuple] = {}
        self._day_seconds: list[int] | None = None  # fire_seconds_between's times of a matching day
        self._gaps: dict[datetime, tuple[list, frozenset]] = {}  # dst_effect's skipped walls per change
        if not self._fires_ever():
            restricted = ", ".join(
                f"{name} {self.fields[name]!r}"
                for name in ("day_of_month", "month", "day_of_week", "week")
                if self.fields[name] != "*"
            )
            raise ValidationError(f"Invalid cron schedule: never fires ({restricted} never coincide)")

    def _fires_ever(self) -> bool:
        """Whether a month has a matching day depends on the year only through its leapness, the
        weekday of 1 January and the leapness of the year before (ISO weeks); every combination
        occurs in any 28 years of 1901-2099, and the 400-year cycle repeats them all."""
        return any(self._match_days(year, month) for year in range(2001, 2029) for month in self.months)

    # -- the calendar ---------------------------------------------------------------------------
    def _days(self, year: int, month: int) -> tuple:
        key = year * 12 + month
        days = self._month_days.get(key)
        if days is None:
            if len(self._month_days) > 512:
                self._month_days.clear()
            days = self._month_days[key] = self._match_days(year, month)
        return days

    def _match_days(self, year: int, month: int) -> tuple:
        first, length = monthrange(year, month)  # weekday of the 1st, Monday = 0
        every = range(1, length + 1)
        by_dom = {d for d in every if d in self.doms} | set(self._extra_days(first, length))
        by_dow = {d for d in every if (first + d) % 7 in self.dows}  # Unix weekday of day d
        days = by_dom | by_dow if self.either else by_dom & by_dow
        if self.weeks is not None:
            days = {d for d in days if date(year, month, d).isocalendar()[1] in self.weeks}
        return tuple(sorted(days))

    def _extra_days(self, first: int, length: int):
        for nth, unix_day in self.dom_extras:
            if unix_day is None:
                yield length
                continue
            day = 1 + ((unix_day - 1) % 7 - first) % 7  # first such weekday of the month
            day = day + 7 * ((length - day) // 7) if nth < 0 else day + 7 * (nth - 1)
            if day <= length:
                yield day

    def _next_day(self, year: int, month: int, day: int):
        """First matching (year, month, day) on or after the given one; None past the horizon.
        Skips months that cannot match, and looks at most 400 years ahead."""
        months, stop = self.months, min(year + _HORIZON_YEARS, _LAST.year - 1)
        while year <= stop:
            if month in self.month_set:
                days = self._days(year, month)
                i = bisect_left(days, day)
                if i < len(days):
                    return year, month, days[i]
            i = bisect_right(months, month)
            year, month = (year, months[i]) if i < len(months) else (year + 1, months[0])
            day = 1
        return None

    def _next_time(self, hour: int, minute: int, second: int):
        """First matching time of day strictly after the given one, or None."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, hour)
        if i < len(hours) and hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes) and minutes[j] == minute:
                k = bisect_right(seconds, second)
                if k < len(seconds):
                    return hour, minute, seconds[k]
                j += 1
            if j < len(minutes):
                return hour, minutes[j], seconds[0]
            i += 1
        return (hours[i], minutes[0], seconds[0]) if i < len(hours) else None

    def _next_wall(self, after: datetime) -> datetime | None:
        """First matching wall-clock time strictly after `after` (naive, whole seconds)."""
        y, m, d = after.year, after.month, after.day
        if m in self.month_set and d in self._days(y, m):
            time = self._next_time(after.hour, after.minute, after.second)
            if time:
                return datetime(y, m, d, *time)
        found = self._next_day(y, m, d + 1)
        return None if found is None else datetime(*found, self.hours[0], self.minutes[0], self.seconds[0])

    # -- wall clock -> instants -----------------------------------------------------------------
    def _gap_fire(self, t: datetime, at: datetime, before: timedelta, after: timedelta):
        """The fire time for matching walls that the spring-forward change at `at` skipped."""
        first, end = at + before, at + after  # the skipped walls: first <= wall < end
        if self.spring_forward == "skip":
            return None
        if self.spring_forward == "at_change":
            wall = self._next_wall(first - _SECOND) if at > t else None
            return at if wall is not None and wall < end else None
        wall = self._next_wall(max(first - _SECOND, t + before))
        return wall - before if wall is not None and wall < end else None

    def _first_in_stretch(self, t, start, stop, offset, change):
        """First fire time after t in [start, stop), where the offset is constant; `change`
        is the offset change that began this stretch, if it was recent."""
        lo = max(t, start - _SECOND) + offset  # fire walls are strictly later than this
        gap = None
        if change is not None:
            at, before = change[0], change[1]
            if before > offset and self.fall_back == "once":  # fold: the repeated walls ran before it
                lo = max(lo, at + before - _SECOND)
            elif before < offset:
                gap = self._gap_fire(t, at, before, offset)
        wall = self._next_wall(lo)
        regular = wall - offset if wall is not None and wall - offset < stop else None
        hits = [h for h in (regular, gap) if h is not None and h < stop]
        return min(hits) if hits else None

    def _first_in_day(self, t: datetime):
        """First fire time in (t, end of t's UTC day], or None."""
        day = (t - _EPOCH).days
        end = _EPOCH + timedelta(days=day + 1)
        offset, changes = _near(self.zone_name, day)
        recent, later = None, []
        for change in changes:
            if change[0] <= t:
                recent, offset = change, change[2]
            elif change[0] <= end:
                later.append(change)
        start = t
        for change in later + [None]:
            stop = end + _SECOND if change is None else change[0]
            hit = self._first_in_stretch(t, start, stop, offset, recent)
            if hit is not None:
                return hit
            if change is None:
                return None
            recent, start, offset = change, change[0], change[2]
        return None

    def _skip_to(self, t: datetime):
        """Where to look next after an empty day: far ahead when no offset change is near.
        A fire time s has a wall within 18 h of s, and walls up to t's cannot recur without a
        change near t; so nothing fires before the next matching wall minus two days."""
        offset, changes = _near(self.zone_name, (t - _EPOCH).days)
        if changes:
            return t
        wall = self._next_wall(t + offset)
        return None if wall is None else max(t, wall - offset - 2 * _DAY)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after `moment` (naive = UTC), as an aware UTC datetime."""
        t = max(_utc(moment), _FIRST)
        for _ in range(_MAX_WINDOWS):
            if t is None or t >= _LAST:
                return None
            hit = self._first_in_day(t)
            if hit is not None:
                return hit.replace(tzinfo=UTC)
            t = self._skip_to(_EPOCH + timedelta(days=(t - _EPOCH).days + 1))
        return None

    def fire_times_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Fire times t with start < t <= end, ascending, at most `limit` (to find missed runs)."""
        end, times, t = _aware(end), [], start
        while len(times) < limit and (t := self.next_after(t)) is not None and t <= end:
            times.append(t)
        return times

    def fire_seconds_between(self, start: int, end: int) -> list[int]:
        """Fire times t with start < t <= end as seconds since 1970 (UTC), ascending: the same
        times as fire_times_between, for counting many (the forecast). A UTC day with no offset
        change near it (_near) is the matching walls of that day less one constant offset, read
        off the calendar without a search; a day with a change near, or a zone whose offset is
        not whole minutes, is searched (so every daylight-saving rule is the search's own)."""
        if self._day_seconds is None:
            self._day_seconds = [h * 3600 + m * 60 + s for h in self.hours for m in self.minutes for s in self.seconds]
        times, pattern = [], self._day_seconds
        for day in range(start // 86400, end // 86400 + 1):
            lo, hi = max(start, day * 86400 - 1), min(end, day * 86400 + 86399)  # (lo, hi] in this day
            offset, changes = _near(self.zone_name, day)
            shift = int(offset.total_seconds())
            if changes or shift % 60:
                found = self.fire_times_between(_EPOCH + lo * _SECOND, _EPOCH + hi * _SECOND, 86401)
                times += [int((t.replace(tzinfo=None) - _EPOCH).total_seconds()) for t in found]
                continue
            for wall_day in range((lo + 1 + shift) // 86400, (hi + shift) // 86400 + 1):
                d = (_EPOCH + wall_day * _DAY).date()
                if d.month in self.month_set and d.day in self._days(d.year, d.month):
                    base = wall_day * 86400 - shift
                    times += [base + s for s in pattern if lo < base + s <= hi]
        return times

    # -- what daylight saving did to a fire time (for the job preview) --------------------------
    def _matches(self, wall: datetime) -> bool:
        return self._next_wall(wall - _SECOND) == wall

    def _walls_between(self, first: datetime, end: datetime, limit: int = MAX_COUNT) -> list[datetime]:
        """Matching wall times w with first <= w < end (a gap or a fold: at most an hour or so)."""
        walls, wall = [], self._next_wall(first - _SECOND)
        while wall is not None and wall < end and len(walls) < limit:
            walls.append(wall)
            wall = self._next_wall(wall)
        return walls

    def dst_effect(self, fire: datetime) -> tuple[str, str] | None:
        """How a clock change shaped this fire time: (`shifted` | `at_change` | `first copy` |
        `second copy`, a note in words), or None when no change touched it."""
        t = _utc(fire)
        for at, before, after in _near(self.zone_name, (t - _EPOCH).days)[1]:
            if after > before:  # spring forward: walls at+before .. at+after do not exist
                if at not in self._gaps:  # asked for every fire time near the change (the forecast)
                    walls = self._walls_between(at + before, at + after, limit=86_400)  # every second of a gap
                    self._gaps[at] = (walls, frozenset(walls))
                skipped, skipped_set = self._gaps[at]
                if not skipped or self.spring_forward == "skip":
                    continue
                day = f"{(at + before):%Y-%m-%d}"
                if t == at and self.spring_forward == "at_change":
                    shown = ", ".join(f"{w:%H:%M:%S}" for w in skipped)
                    return "at_change", f"{shown} does not exist on {day}: runs at the change ({at + after:%H:%M:%S})"
                if self.spring_forward == "shift" and (t + before) in skipped_set:
                    return "shifted", f"{t + before:%H:%M:%S} does not exist on {day}: runs shifted by the gap"
            else:  # fall back: walls at+after .. at+before happen twice
                wall = t + (before if t < at else after)
                if at + after <= wall < at + before:
                    copy = "first copy" if t < at else "second copy"
                    note = f"{wall:%H:%M:%S} happens twice on {wall:%Y-%m-%d}: this run is in the {copy}"
                    if copy == "first copy" and self.fall_back == "once":
                        note += " (the second copy is skipped)"
                    return copy, note
        return None

    def dst_skipped(self, start: datetime, end: datetime) -> list[tuple[datetime | None, datetime, str]]:
        """The matching wall times in (start, end] that the job's `dst_policy` does not run:
        (the instant, or None for a wall time that does not exist; the wall time; a note).
        Offset changes are looked for a day at a time near start and end and by weekly samples
        in between (a zone changes its offset months apart)."""
        first, last = _utc(start), _utc(end)
        first_day, stop = (first - _EPOCH).days, (last - _EPOCH).days
        offset_on = lambda day: _offset(self.zone, _EPOCH + timedelta(days=day))  # noqa: E731
        days = set()
        for day in range(first_day, stop + 1, 7):
            if day + 7 > stop or offset_on(day) != offset_on(day + 7):
                days.update(range(day, min(day + 8, stop + 1)))
        found = []
        for at, before, after in sorted({c for d in days for c in _changes_on(self.zone_name, d)}):
            if after > before and self.spring_forward == "skip":
                for wall in self._walls_between(at + before, at + after):
                    if first < at <= last:
                        found.append((None, wall, f"{wall:%H:%M:%S} does not exist on {wall:%Y-%m-%d}: skipped"))
            elif after < before and self.fall_back == "once":
                for wall in self._walls_between(at + after, at + before):
                    instant = wall - after
                    if first < instant <= last:
                        note = f"{wall:%H:%M:%S} happens twice on {wall:%Y-%m-%d}: the second copy is skipped"
                        found.append((instant.replace(tzinfo=UTC), wall, note))
        return found


@lru_cache(maxsize=1024)
def _schedule(key: tuple, loose: tuple, dst: tuple) -> CronSchedule:
    return CronSchedule(key, loose, dst)


def schedule_for(fields: Mapping, seed: str | None = None) -> CronSchedule:
    """The built schedule for cron fields (missing ones take DEFAULTS, `H` the values `seed`
    gives, `dst_policy` the job's daylight-saving rules), cached by their resolved text, so
    firing never rebuilds one. Raises ValidationError like normalize()."""
    texts = [(name, _as_text(name, fields.get(name, DEFAULTS[name]))) for name in CRON_FIELDS]
    tz_name = fields.get("timezone")
    if not isinstance(tz_name, str):
        raise ValidationError(f"Invalid timezone: {tz_name!r}")
    key = tuple(_resolve_hash(name, text, seed) for name, text in texts)
    loose = tuple(name for name, text in texts if _loose(text))
    return _schedule((*key, tz_name.strip()), loose, _dst_key(fields.get("dst_policy")))


class UnixCronTrigger(BaseTrigger):
    """The APScheduler trigger build_trigger returns: a thin face on a cached CronSchedule (or
    on a job's JitteredSchedule around one)."""

    __slots__ = ("fields", "schedule")

    def __init__(self, schedule):
        self.schedule = schedule
        self.fields = dict(schedule.fields)

    def get_next_fire_time(self, previous_fire_time, now):
        """First fire time >= now, or just after previous_fire_time if that is earlier (the way
        CronTrigger lets APScheduler list missed runs without repeating one)."""
        start = _aware(now)
        if previous_fire_time is not None:
            previous = _aware(previous_fire_time)
            start = min(start, previous + timedelta(microseconds=1))
            if start == previous:
                start += timedelta(microseconds=1)
        return self.schedule.next_after(start - timedelta(microseconds=1))

    def next_after(self, moment: datetime) -> datetime | None:
        return self.schedule.next_after(moment)

    def fire_times_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        return self.schedule.fire_times_between(start, end, limit)

    def __str__(self):
        return "unix-cron[{}]".format(", ".join(f"{k}='{v}'" for k, v in self.fields.items()))

    def __repr__(self):
        return f"<UnixCronTrigger {self}>"


def build_trigger(fields: Mapping) -> BaseTrigger:
    """APScheduler trigger with Unix cron meaning for fields as returned by normalize()."""
    return UnixCronTrigger(schedule_for(fields))


def next_fire_times(fields: dict, count: int, now: datetime, schedule=None) -> list[datetime]:
    """The next `count` fire times strictly after `now` (naive means UTC), as aware UTC datetimes,
    of `schedule` (by default the one `fields` build). `now` is passed in so callers and tests
    control the clock."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ValidationError(f"Invalid count: {count!r} (must be 0-{MAX_COUNT})")
    schedule, times, moment = schedule or schedule_for(fields), [], now
    while len(times) < count and (moment := schedule.next_after(moment)) is not None:
        times.append(moment)
    return times


# ---- describe -------------------------------------------------------------------------------


def _single(value: str) -> bool:
    return value.isdigit()


def _every(value: str) -> int | None:
    """'*' -> 1, '*/n' -> n, anything else -> None."""
    if value == "*":
        return 1
    match = re.fullmatch(r"\*/([0-9]+)", value)
    return int(match.group(1)) if match else None


def _plural(n: int, unit: str) -> str:
    return f"Every {unit}" if n == 1 else f"Every {n} {unit}s"


def _describe_time(s: str, m: str, h: str) -> tuple[str, bool]:
    """(phrase, is_time_of_day). Steps read as "every n" only when they divide evenly, since
    '*/7' minutes restarts at :00 each hour and is not really every 7 minutes."""
    es, em, eh = _every(s), _every(m), _every(h)
    if _single(s) and _single(m) and _single(h):
        clock = f"{int(h):02d}:{int(m):02d}" + (f":{int(s):02d}" if int(s) else "")
        return f"At {clock}", True
    if es and em == 1 and eh == 1 and 60 % es == 0:
        return _plural(es, "second"), False
    if s == "0" and em and eh == 1 and 60 % em == 0:
        return _plural(em, "minute"), False
    if _single(s) and em == 1 and eh == 1:
        return f"At second {int(s)} of every minute", False
    if s == "0" and m == "0" and eh and 24 % eh == 0:
        return _plural(eh, "hour"), False
    sec = None if s == "0" else ("every second" if es == 1 else f"second {s}")
    mins = "every minute" if em == 1 else f"minute {m}"
    hours = "every hour" if eh == 1 else f"hour {h}"
    return "At " + (f"{sec} of " if sec else "") + f"{mins} past {hours}", False


def _describe_days(days: set[int]) -> str:
    order = [d for d in (1, 2, 3, 4, 5, 6, 0) if d in days]  # Monday first, so weekends group
    names = [_DAY_NAMES[d] for d in order]
    positions = [(d - 1) % 7 for d in order]
    if len(order) >= 3 and positions[-1] - positions[0] == len(order) - 1:
        return f"{names[0]} through {names[-1]}"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _describe_dom(dom: str) -> str:
    if dom.lower() == "last":
        return "the last day of the month"
    if re.fullmatch(r"[0-9,\- ]+", dom):
        return f"day {dom} of the month"
    return f"day-of-month {dom}"


def describe(fields: dict) -> str:
    """Plain-English reading of a normalized schedule, for the dashboard's cron editor.
    Common shapes get a sentence; anything else is listed field by field, but always truthfully.
    """
    text, time_of_day = _describe_time(fields["second"], fields["minute"], fields["hour"])
    dom, dow = fields["day_of_month"], fields["day_of_week"]
    days = _parse("day_of_week", dow)[0]
    dow_all = dow == "*" or len(days) == 7
    either = not dom.startswith("*") and not dow.startswith("*")
    if either and dow_all:  # "day X or any weekday" is every day
        dom = "*"
    day_text = ""
    if dom != "*" and not dow_all:
        joiner = " or on " if either else ", only on "
        day_text = f"on {_describe_dom(dom)}{joiner}{_describe_days(days)}"
    elif dom != "*":
        day_text = f"on {_describe_dom(dom)}"
    elif not dow_all:
        day_text = f"on {_describe_days(days)}"
    if day_text:
        text += " " + day_text
    elif time_of_day:
        text += " every day"
    month = fields["month"]
    if month != "*":
        if month.isdigit():
            text += f" in {_MONTH_NAMES[int(month) - 1]}"
        elif month.lower() in _MONTHS:
            text += f" in {_MONTH_NAMES[_MONTHS.index(month.lower())]}"
        else:
            text += f" in month {month}"
    if fields["week"] != "*":
        text += f" in ISO week {fields['week']}"
    if fields["timezone"] != "UTC":
        text += f" ({fields['timezone']})"
    return text
