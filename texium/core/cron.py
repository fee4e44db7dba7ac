"""Unix cron schedules on top of APScheduler 3.

The API speaks Unix cron (API.md "Cron Schedule Format"); APScheduler 3's CronTrigger does
not quite, so this module owns the translation:

- day_of_week is Unix: 0 = Sunday ... 6 = Saturday, 7 = Sunday too, names sun..sat. APScheduler
  counts 0 = Monday, so the field is expanded here into an explicit list of day *names*
  ('mon,tue,wed,thu,fri'); APScheduler never sees a Unix weekday number.
- When day_of_month and day_of_week are both restricted, a day matches if EITHER matches
  (Vixie cron); APScheduler would require both, so that case is an OrTrigger of two
  CronTriggers. As in Vixie cron, a field that starts with '*' (such as '*/2') counts as
  unrestricted: then both must match.
- When clocks fall back, CronTrigger fires a fixed-time job (say 02:30) in both copies of the
  repeated hour; Vixie cron runs it once, and so do we (UnixCronTrigger skips the second copy).
  Jobs whose second, minute or hour starts with '*' keep firing through the repeated hour.
  When clocks spring forward, a job inside the skipped hour (02:30) runs once, an hour later by
  the wall clock (03:30), because that is what APScheduler computes for a non-existent time.
- A schedule that can never fire (day_of_month 31 in month 2) is rejected: APScheduler would
  otherwise search up to the year 9999 on every call, which takes seconds.

The other fields (second, minute, hour, day_of_month, month, week) go to CronTrigger as given;
its syntax is a superset of Unix there (e.g. 'last' and '2nd fri' for day_of_month).
Everything here is pure: no I/O, no settings, no wall clock.
"""

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from texium.core.errors import ValidationError

CRON_FIELDS = ("second", "minute", "hour", "day_of_month", "month", "day_of_week", "week")
DEFAULTS = {name: "*" for name in CRON_FIELDS} | {"second": "0"}
MAX_COUNT = 1000  # upper bound for next_fire_times, so a preview cannot spin for long

_APS_NAME = {"day_of_month": "day"}  # API field name -> CronTrigger argument
# field -> (lowest, highest, what to say when a value is out of range)
_LIMITS = {
    "second": (0, 59, "must be 0-59"),
    "minute": (0, 59, "must be 0-59"),
    "hour": (0, 23, "must be 0-23"),
    "day_of_month": (1, 31, "must be 1-31, 'last' or e.g. '2nd fri'"),
    "month": (1, 12, "must be 1-12 or jan-dec"),
    "day_of_week": (0, 7, "must be 0-7 or sun-sat"),
    "week": (1, 53, "must be ISO week 1-53"),
}
_UNIX_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # index = Unix number
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
_TOKEN = re.compile(
    r"(?:(?P<star>\*)|(?P<first>[0-9]+|[a-z]+)(?:-(?P<last>[0-9]+|[a-z]+))?)(?:/(?P<step>[0-9]+))?",
    re.IGNORECASE,
)
_DOM_EXTRA = re.compile(r"last|(?:1st|2nd|3rd|4th|5th|last) +(?:mon|tue|wed|thu|fri|sat|sun)", re.I)
# Whether a spec can fire depends only on the calendar (month, day, weekday, ISO week), and
# between 1901 and 2099 the calendar repeats every 28 years; so a spec that ever fires, fires
# within these 40 years. (A 400-year probe, the full Gregorian cycle, can take seconds.)
_PROBE_START = datetime(2001, 1, 1)
_PROBE_END = datetime(2041, 1, 1)


def _invalid(name: str, value, reason: str) -> ValidationError:
    return ValidationError(f"Invalid cron field {name}: {value!r} ({reason})")


def _zone(name) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError (bad path), TypeError (not a str)
        raise ValidationError(f"Invalid timezone: {name!r}") from None


def _tokens(name: str, value: str) -> list[str]:
    tokens = [token.strip() for token in value.split(",")]
    if "" in tokens:
        raise _invalid(name, value, "empty item in list")
    return tokens


def _name_number(name: str, word: str, value: str, is_last: bool) -> int:
    word = word.lower()
    if name == "month" and word in _MONTHS:
        return _MONTHS.index(word) + 1
    if name == "day_of_week" and word in _UNIX_DAYS:
        number = _UNIX_DAYS.index(word)
        return 7 if number == 0 and is_last else number  # 'fri-sun' means 5-7
    raise _invalid(name, value, _LIMITS[name][2])


def _parse_token(name: str, token: str, value: str) -> tuple[int, int, int]:
    """One list item -> (first, last, step), bounds checked; names become numbers."""
    low, high, hint = _LIMITS[name]
    match = _TOKEN.fullmatch(token)
    if not match:
        raise _invalid(name, value, hint)
    star, first, last, step = match.group("star", "first", "last", "step")
    if step is not None and int(step) < 1:
        raise _invalid(name, value, "step must be at least 1")
    step_n = int(step) if step else 1
    if star:
        return low, (6 if name == "day_of_week" else high), step_n
    first_n = int(first) if first.isdigit() else _name_number(name, first, value, False)
    if step is not None and not first.isdigit() and name != "day_of_week":
        raise _invalid(name, value, "a step needs numbers, e.g. 1-6/2")  # CronTrigger drops it
    if last is None:
        last_n = first_n if step is None else (6 if name == "day_of_week" else high)
    else:
        last_n = int(last) if last.isdigit() else _name_number(name, last, value, True)
    if not (low <= first_n <= high and low <= last_n <= high):
        raise _invalid(name, value, hint)
    if first_n > last_n:
        raise _invalid(name, value, "range runs backwards")
    if name == "day_of_week" and step_n > 7:
        raise _invalid(name, value, "step must be 1-7")
    return first_n, last_n, step_n


def _unix_days(value: str) -> set[int]:
    """The Unix weekdays (0 = Sunday) a day_of_week field selects."""
    days = set()
    for token in _tokens("day_of_week", value):
        first, last, step = _parse_token("day_of_week", token, value)
        days.update(day % 7 for day in range(first, last + 1, step))
    return days


def _aps_day_of_week(value: str) -> str:
    """Unix day_of_week -> CronTrigger day_of_week, as names so 0 can never mean Monday."""
    if value == "*":
        return "*"
    days = _unix_days(value)
    return ",".join(_UNIX_DAYS[d] for d in (1, 2, 3, 4, 5, 6, 0) if d in days)


def _check_field(name: str, value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _invalid(name, value, "must be a string or an integer")
    value = value.strip()
    if not value:
        raise _invalid(name, value, "must not be empty")
    if name == "day_of_week":
        _unix_days(value)
        return value
    for token in _tokens(name, value):
        if not (name == "day_of_month" and _DOM_EXTRA.fullmatch(token)):
            _parse_token(name, token, value)
    try:  # CronTrigger has the last word on what it accepts (e.g. '*/60' is too big a step)
        CronTrigger(**{_APS_NAME.get(name, name): value}, timezone=timezone.utc)
    except ValueError as exc:
        reason = "step is larger than the range" if "step value" in str(exc) else _LIMITS[name][2]
        raise _invalid(name, value, reason) from None
    return value


def normalize(fields: Mapping, timezone_name: str) -> dict:
    """Complete, validated schedule: the 7 fields as stripped strings plus "timezone".

    Missing fields take DEFAULTS; a missing or null "timezone" takes `timezone_name`.
    Keys that are not cron fields are ignored, so a whole job document can be passed.
    Raises ValidationError naming the field and the bad value.
    """
    if not isinstance(fields, Mapping):
        raise ValidationError("Cron fields must be an object")
    result = {name: _check_field(name, fields.get(name, DEFAULTS[name])) for name in CRON_FIELDS}
    tz_name = fields.get("timezone")
    tz_name = timezone_name if tz_name is None else tz_name
    tz_name = tz_name.strip() if isinstance(tz_name, str) else tz_name
    _zone(tz_name)
    result["timezone"] = tz_name
    build_trigger(result)  # rejects schedules that never fire
    return result


class UnixCronTrigger(BaseTrigger):
    """The trigger build_trigger returns: a CronTrigger (or an OrTrigger of two) that runs a
    fixed-time job once, not twice, when clocks fall back. `fields` is the normalized schedule.
    """

    __slots__ = ("fields", "trigger", "once_per_wall_time")

    def __init__(self, fields: dict, trigger: BaseTrigger, once_per_wall_time: bool):
        self.fields = dict(fields)
        self.trigger = trigger
        self.once_per_wall_time = once_per_wall_time

    def get_next_fire_time(self, previous_fire_time, now):
        fire = self.trigger.get_next_fire_time(previous_fire_time, now)
        while fire is not None and self.once_per_wall_time and _second_copy(fire):
            fire = self.trigger.get_next_fire_time(fire, fire)
        return fire

    def __str__(self):
        return "unix-cron[{}]".format(", ".join(f"{k}='{v}'" for k, v in self.fields.items()))

    def __repr__(self):
        return f"<UnixCronTrigger {self.trigger!r}>"


def _second_copy(moment: datetime) -> bool:
    """Is this the second occurrence of a wall time that a fall-back transition repeats?"""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def build_trigger(fields: dict) -> BaseTrigger:
    """APScheduler trigger with Unix cron meaning for fields as returned by normalize()."""
    tz = _zone(fields["timezone"])
    dom, unix_dow = fields["day_of_month"], fields["day_of_week"]
    common = {name: fields[name] for name in ("second", "minute", "hour", "month", "week")}
    dow = _aps_day_of_week(unix_dow)
    if not dom.startswith("*") and not unix_dow.startswith("*"):
        variants = [{"day": dom, "day_of_week": "*"}, {"day": "*", "day_of_week": dow}]
    else:
        variants = [{"day": dom, "day_of_week": dow}]
    try:
        # Drop a half of the OR that never fires: OrTrigger would search it to the year 9999.
        triggers = [
            CronTrigger(year="*", **common, **days, timezone=tz)
            for days in variants
            if CronTrigger(year="*", **common, **days, timezone=tz,
                           end_date=_PROBE_END.replace(tzinfo=tz))
            .get_next_fire_time(None, _PROBE_START.replace(tzinfo=tz)) is not None
        ]
    except ValueError as exc:  # only for fields that did not come through normalize()
        raise ValidationError(f"Invalid cron schedule: {exc}") from None
    if not triggers:
        restricted = ", ".join(
            f"{name} {fields[name]!r}"
            for name in ("day_of_month", "month", "day_of_week", "week")
            if fields[name] != "*"
        )
        raise ValidationError(f"Invalid cron schedule: never fires ({restricted} never coincide)")
    trigger = triggers[0] if len(triggers) == 1 else OrTrigger(triggers)
    fixed_time = not any(fields[name].startswith("*") for name in ("second", "minute", "hour"))
    return UnixCronTrigger(fields, trigger, once_per_wall_time=fixed_time)


def next_fire_times(fields: dict, count: int, now: datetime) -> list[datetime]:
    """The next `count` fire times strictly after `now`, as aware UTC datetimes.

    `now` is passed in (naive means UTC) so callers and tests control the clock. Fewer than
    `count` come back only if the schedule ends (it cannot, once normalize() accepted it).
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ValidationError(f"Invalid count: {count!r} (must be 0-{MAX_COUNT})")
    # Arithmetic in UTC: adding to a local time in a repeated hour silently drops `fold`.
    moment = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
    trigger = build_trigger(fields)
    times: list[datetime] = []
    while len(times) < count:
        # +1 µs: CronTrigger returns times >= now, and rounds up to the next whole second.
        fire = trigger.get_next_fire_time(None, moment + timedelta(microseconds=1))
        if fire is None:
            break
        moment = fire.astimezone(timezone.utc)
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
    days = _unix_days(dow)
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
