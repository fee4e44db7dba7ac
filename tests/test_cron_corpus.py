"""texium.core.scheduling.cron against two references, over a corpus generated from a fixed seed:

1. croniter 7 (5 fields; second=0, week='*'): the next fire times must agree, except where
   croniter's daylight-saving behaviour differs from cron.py's documented rules (see
   `croniter_times`; each exclusion says why).
2. A brute-force oracle written straight from those rules: every minute of 36 hours around a
   clock change, mapped to wall time with zoneinfo. It checks exactly what (1) has to leave out.

Fields are built from lists, ranges, steps, names, and restricted and unrestricted day fields;
zones include 30-minute, midnight and no-DST changes; most starts lie around a change in 2024-2026.
"""

import random
from calendar import monthrange
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from texium.core.errors import ValidationError
from texium.core.scheduling import cron

SEED = 20240331
CASES = 320
COMPARE = 10  # fire times compared per expression
ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
    "America/Santiago",
]  # Santiago changes clocks at midnight
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MINUTE = timedelta(minutes=1)


# ---- the corpus ----------------------------------------------------------------------------------


@cache
def clock_changes(zone: str) -> tuple:
    """UTC instants at which the zone's offset changes in 2024-2026 (day scan, then by minute)."""
    tz, changes = ZoneInfo(zone), []
    offset = lambda t: t.astimezone(tz).utcoffset()  # noqa: E731
    day = datetime(2024, 1, 1, tzinfo=UTC)
    while day.year < 2027:
        if offset(day) != offset(day + timedelta(days=1)):
            t = day
            while offset(t) == offset(day):
                t += MINUTE
            changes.append(t)
        day += timedelta(days=1)
    return tuple(changes)


def item(rng, low, high, names, hot):
    """One list item. Never 'a-a': croniter reads a one-value range as '*' (cron.py does not;
    test_cron.py checks '5-5/1' and 'sun-sun' by hand)."""
    spell = lambda n: names[n] if names and rng.random() < 0.5 else str(n)  # noqa: E731
    pick = lambda: rng.choice(hot) if hot and rng.random() < 0.5 else rng.randint(low, high)  # noqa: E731
    step = rng.randint(1, high - low + 1)
    a, b = sorted(rng.sample(range(low, high + 1), 2))
    return rng.choice(
        [
            lambda: spell(pick()),
            lambda: spell(pick()),
            lambda: f"*/{step}",
            lambda: f"{spell(a)}-{spell(b)}",
            lambda: f"{spell(a)}-{spell(b)}/{step}",
            lambda: f"{spell(a)}/{step}",
        ]
    )()


def field(rng, low, high, star, names=None, hot=None):
    if rng.random() < star:
        return "*"
    return ",".join(item(rng, low, high, names, hot) for _ in range(rng.choice([1, 1, 2, 3])))


def expression(rng) -> tuple:
    """(minute, hour, day_of_month, month, day_of_week). Hours near 0-3 and, half the time, no
    day restriction make many fire times fall on the days and hours clocks change."""
    minute = field(rng, 0, 59, 0.15, hot=[0, 10, 15, 30, 35, 45, 59])
    hour = field(rng, 0, 23, 0.3, hot=[0, 1, 2, 3, 23])
    if rng.random() < 0.5:
        return minute, hour, "*", "*", "*"
    dom = "last" if rng.random() < 0.05 else field(rng, 1, 31, 0.6)
    month = field(rng, 1, 12, 0.6, [None] + MONTHS)
    roll = rng.random()
    if roll < 0.45:
        dow = "*"
    elif roll < 0.55:
        dow = rng.choice(["5-0", "fri-sun", "6-0", "sat-sun", "1-0", "3-0/2", "7"])  # Sunday as 7
    else:
        dow = field(rng, 0, 6, 0, DAYS)
    return minute, hour, dom, month, dow


def build_corpus():
    rng, cases = random.Random(SEED), []
    while len(cases) < CASES:
        spec, zone = expression(rng), rng.choice(ZONES)
        try:
            schedule = cron.schedule_for(fields_of(spec, zone))
        except ValidationError:  # never fires (say, day 31 in month 2): nothing to compare
            continue
        changes = clock_changes(zone)
        if changes and rng.random() < 0.8:
            start = rng.choice(changes) + rng.randint(-rng.choice([180, 20 * 60]), 90) * MINUTE
        else:
            start = datetime(2024, 1, 1, tzinfo=UTC) + rng.randint(0, 3 * 365 * 24 * 60) * MINUTE
        cases.append((spec, zone, start, schedule))
    return cases


def fields_of(spec, zone):
    return dict(
        zip(("minute", "hour", "day_of_month", "month", "day_of_week"), spec), second="0", week="*", timezone=zone
    )


CORPUS = build_corpus()


# ---- croniter, normalised by the documented rules -----------------------------------------------


def is_fixed(spec) -> bool:
    return not spec[0].startswith("*") and not spec[1].startswith("*")


def second_copy(t: datetime, tz: ZoneInfo) -> bool:
    """Is t the later of two instants showing the same wall time (clocks fell back)?"""
    wall = t.astimezone(tz).replace(tzinfo=None)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC) != t


def catch_up(t: datetime, tz: ZoneInfo, spec) -> bool:
    """Is t a run for a wall time that clocks skipped, i.e. its own wall time does not match and
    clocks went forward in the three hours before it?"""
    wall = t.astimezone(tz).replace(tzinfo=None)
    jumped = (t - timedelta(hours=3)).astimezone(tz).utcoffset() < t.astimezone(tz).utcoffset()
    asked = as_croniter(spec)
    return jumped and not croniter.match(cron_text(asked), wall, day_or=day_or(asked))


def cron_text(spec) -> str:
    return " ".join("L" if value == "last" else value for value in spec)


def day_or(spec) -> bool:
    # croniter counts '*/2' as a restriction; Vixie cron (and cron.py) only a field that does
    # not start with '*'. day_or=False gives croniter's AND reading for those.
    return not spec[2].startswith("*") and not spec[4].startswith("*")


def as_croniter(spec) -> tuple:
    """The same schedule, spelled so that croniter reads it as Vixie cron and cron.py do."""
    if day_or(spec) and ["*"] in croniter.expand(cron_text(spec))[0][2::2]:
        # A day field that lists every value ('0-6', 'sun-5,6') is '*' to croniter, so it asks
        # for both day fields; to Vixie cron and cron.py it is a restriction, so either field
        # matches, which is every day: '*' and '*'.
        return (*spec[:2], "*", spec[3], "*")
    return spec


def croniter_times(spec, zone, start, count):
    tz, times, asked = ZoneInfo(zone), [], as_croniter(spec)
    it = croniter(cron_text(asked), start.astimezone(tz), day_or=day_or(asked))
    for _ in range(count + 200):
        t = it.get_next(datetime).astimezone(UTC)
        # Exclusion 1, fall back: croniter runs a fixed-time job in both copies of the repeated
        # hour; Vixie cron and cron.py run it once, in the first. Drop croniter's second copies.
        if is_fixed(spec) and second_copy(t, tz):
            continue
        # Exclusion 2, spring forward, repeating jobs only (a '*' in minute or hour): croniter
        # is not consistent ('30 *' skips the missing 02:30 in Lord Howe, '30 */2' runs it at
        # 03:00 in Berlin); cron.py runs it shifted by the gap. Compare only runs for wall
        # times that exist; the oracle below checks the shifted ones.
        if not is_fixed(spec) and catch_up(t, tz, spec):
            continue
        times.append(t)
        if len(times) == count:
            return times
    return times


@pytest.mark.parametrize("case", range(CASES))
def test_next_fire_times_agree_with_croniter(case):
    spec, zone, start, schedule = CORPUS[case]
    expected = croniter_times(spec, zone, start, COMPARE)
    tz, ours, moment = ZoneInfo(zone), [], start
    while len(ours) < COMPARE:
        moment = schedule.next_after(moment)
        if is_fixed(spec) or not catch_up(moment, tz, spec):  # exclusion 2, on our side
            ours.append(moment)
    assert ours == expected, f"{cron_text(spec)!r} in {zone} after {start}"


# ---- the oracle ----------------------------------------------------------------------------------


def wall_matches(sets, spec, wall: datetime) -> bool:
    minutes, hours, doms, months, dows = sets
    has = lambda values, v: values == ["*"] or v in values  # noqa: E731
    if not (has(minutes, wall.minute) and has(hours, wall.hour) and has(months, wall.month)):
        return False
    by_dom = has(doms, wall.day) or ("l" in doms and wall.day == monthrange(wall.year, wall.month)[1])
    by_dow = has(dows, wall.isoweekday() % 7)
    return (by_dom or by_dow) if day_or(spec) else (by_dom and by_dow)


def oracle(spec, zone, start, end):
    """Fire times in (start, end] by the rules in cron.py's docstring, minute by minute."""
    tz, sets = ZoneInfo(zone), croniter.expand(cron_text(spec))[0]
    fixed, fires = is_fixed(spec), set()
    t = start.replace(second=0, microsecond=0) - timedelta(hours=3)  # a gap just before start
    previous = t.astimezone(tz).utcoffset()
    while t <= end:
        local = t.astimezone(tz)
        if wall_matches(sets, spec, local.replace(tzinfo=None)) and not (fixed and second_copy(t, tz)):
            fires.add(t)
        if local.utcoffset() > previous:  # clocks went forward at t: walk the skipped walls
            wall = local.replace(tzinfo=None) - (local.utcoffset() - previous)
            while wall < local.replace(tzinfo=None):
                if wall_matches(sets, spec, wall):
                    fires.add(t if fixed else (wall - previous).replace(tzinfo=UTC))
                wall += MINUTE
        previous = local.utcoffset()
        t += MINUTE
    return sorted(f for f in fires if start < f <= end)


DST_CASES = [
    case
    for case in range(CASES)
    if CORPUS[case][1] in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago")
]


@pytest.mark.parametrize("case", DST_CASES)
def test_fire_times_around_clock_changes_follow_the_rules(case):
    spec, zone, start, schedule = CORPUS[case]
    end = start + timedelta(hours=36)
    assert schedule.fire_times_between(start, end, 10_000) == oracle(spec, zone, start, end), (
        f"{cron_text(spec)!r} in {zone} after {start}"
    )
