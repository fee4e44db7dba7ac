"""Unix cron schedules and the APScheduler trigger, on fixed clocks (no sleeping); a few tests time the search.
tests/test_cron_corpus.py compares the engine with croniter and a brute-force oracle."""

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from texium.core.errors import ValidationError
from texium.core.scheduling import cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # clocks move by 30 minutes
WED = datetime(2024, 1, 3, 10, 0, tzinfo=UTC)  # a Wednesday


def fires(count=5, now=WED, timezone_name="UTC", **fields):
    return cron.next_fire_times(cron.normalize(fields, timezone_name), count, now)


# ---- day_of_week: Unix numbering ----------------------------------------------------------------


def test_monday_at_15_runs_on_a_monday_at_15():
    times = fires(minute="0", hour="15", day_of_week="1")
    assert all(t.weekday() == 0 and (t.hour, t.minute, t.second) == (15, 0, 0) for t in times)
    assert times[0] == datetime(2024, 1, 8, 15, 0, tzinfo=UTC)
    assert all(b - a == timedelta(days=7) for a, b in zip(times, times[1:]))


def test_next_run_is_strictly_after_now():
    monday_15 = datetime(2024, 1, 8, 15, 0, tzinfo=UTC)
    assert fires(1, now=monday_15, minute=0, hour=15, day_of_week=1) == [monday_15 + timedelta(days=7)]
    assert fires(1, now=monday_15 - timedelta(microseconds=1), minute=0, hour=15) == [monday_15]


@pytest.mark.parametrize("sunday", ["0", "7", 0, 7, "sun", "SUN", "Sun"])
def test_sunday_spellings(sunday):
    times = fires(minute=0, hour=12, day_of_week=sunday)
    assert [t.weekday() for t in times] == [6] * 5


def test_weekdays_range_is_monday_to_friday():
    times = fires(20, minute=0, hour=9, day_of_week="1-5")
    assert {t.weekday() for t in times} == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("*/2", {6, 1, 3, 5}),  # Sun, Tue, Thu, Sat
        ("1-5/2", {0, 2, 4}),  # Mon, Wed, Fri
        ("1,3,5", {0, 2, 4}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("fri-sun", {4, 5, 6}),
        ("5-7", {4, 5, 6}),
        ("6,0", {5, 6}),
    ],
)
def test_day_of_week_forms(spec, expected):
    times = fires(30, minute=0, hour=0, day_of_week=spec)
    assert {t.weekday() for t in times} == expected


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("5-0", {4, 5, 6}),  # cron reads a range ending in Sunday as ending in 7
        ("fri-sun", {4, 5, 6}),
        ("sun-sun", {6}),  # was every day
        ("0-0", {6}),
        ("7-7", {6}),
        ("mon-fri/2", {0, 2, 4}),
        ("3-0/2", {2, 4, 6}),  # Wed, Fri, Sun
        ("1/2", {0, 2, 4}),  # 'a/n' runs to Saturday
        ("7/3", {6, 2, 5}),  # from Sunday, like 'sun/3'
    ],
)
def test_day_of_week_ranges_and_steps(spec, expected):
    times = fires(30, minute=0, hour=0, day_of_week=spec)
    assert {t.weekday() for t in times} == expected


# ---- other fields ----------------------------------------------------------------------------------


def test_every_five_minutes():
    times = fires(12, now=datetime(2024, 1, 3, 10, 2, 30, tzinfo=UTC), minute="*/5")
    assert times[0] == datetime(2024, 1, 3, 10, 5, tzinfo=UTC)
    assert all(b - a == timedelta(minutes=5) for a, b in zip(times, times[1:]))


def test_every_second():
    times = fires(3, now=datetime(2024, 1, 3, 10, 0, 0, 500000, tzinfo=UTC), second="*/1")
    assert [t.second for t in times] == [1, 2, 3]
    assert fires(1, now=datetime(2024, 1, 3, 10, 0, tzinfo=UTC), second="*")[0].second == 1


def test_first_of_month_at_midnight():
    times = fires(3, now=datetime(2024, 1, 31, 12, tzinfo=UTC), minute=0, hour=0, day_of_month=1)
    assert [t.date().isoformat() for t in times] == ["2024-02-01", "2024-03-01", "2024-04-01"]
    assert all((t.hour, t.minute) == (0, 0) for t in times)


def test_february_in_leap_years():
    last = fires(3, now=datetime(2024, 1, 15, tzinfo=UTC), minute=0, hour=0, day_of_month="last")
    assert [t.day for t in last] == [31, 29, 31]
    leap_day = fires(2, now=datetime(2023, 3, 1, tzinfo=UTC), minute=0, hour=0, day_of_month=29, month=2)
    assert [t.date().isoformat() for t in leap_day] == ["2024-02-29", "2028-02-29"]


def test_day_31_skips_thirty_day_months():
    times = fires(7, now=datetime(2024, 1, 1, tzinfo=UTC), minute=0, hour=0, day_of_month=31)
    assert [t.month for t in times] == [1, 3, 5, 7, 8, 10, 12]


def test_day_of_month_or_day_of_week_when_both_restricted():
    times = fires(8, now=datetime(2024, 1, 1, 12, tzinfo=UTC), minute=0, hour=0, day_of_month=1, day_of_week=1)
    assert [t.date().isoformat() for t in times] == [
        "2024-01-08",
        "2024-01-15",
        "2024-01-22",
        "2024-01-29",
        "2024-02-01",
        "2024-02-05",
        "2024-02-12",
        "2024-02-19",
    ]


def test_a_star_field_means_and_like_vixie_cron():
    times = fires(4, now=datetime(2024, 1, 1, tzinfo=UTC), minute=0, hour=0, day_of_month="*/10", day_of_week=1)
    assert all(t.weekday() == 0 and t.day in (1, 11, 21, 31) for t in times)
    assert fires(2, minute=0, hour=0, day_of_month=1, day_of_week="*")[0].day == 1


def test_week_field_is_iso_week():
    times = fires(3, now=datetime(2024, 1, 1, tzinfo=UTC), minute=0, hour=0, week=2)
    assert all(t.isocalendar()[1] == 2 for t in times)


def test_naive_now_is_utc_and_count_is_checked():
    assert fires(1, now=datetime(2024, 1, 3, 10, 0), minute=0) == [datetime(2024, 1, 3, 11, 0, tzinfo=UTC)]
    assert fires(0) == []
    for bad in (-1, cron.MAX_COUNT + 1, "5", True):
        with pytest.raises(ValidationError, match="count"):
            fires(bad)


def test_day_of_month_extras():
    times = fires(
        6, now=datetime(2024, 1, 1, tzinfo=UTC), minute=0, hour=0, day_of_month="last fri,2nd mon", month="1-3"
    )
    assert [t.date().isoformat() for t in times] == [
        "2024-01-08",
        "2024-01-26",
        "2024-02-12",
        "2024-02-23",
        "2024-03-11",
        "2024-03-29",
    ]
    fifth = fires(3, now=datetime(2024, 1, 1, tzinfo=UTC), minute=0, hour=0, day_of_month="5th fri")
    assert [t.date().isoformat() for t in fifth] == ["2024-03-29", "2024-05-31", "2024-08-30"]


@pytest.mark.parametrize(
    "month, expected",
    [
        ("jan-12", list(range(1, 13))),  # was January only
        ("3-dec", list(range(3, 13))),  # was refused
        ("jan-jun/2", [1, 3, 5]),  # was refused
        ("jan/4", [1, 5, 9]),
        ("FEB,aug-sep", [2, 8, 9]),
    ],
)
def test_month_names_in_ranges_and_steps(month, expected):
    times = fires(24, now=datetime(2023, 12, 31, tzinfo=UTC), minute=0, hour=0, day_of_month=1, month=month)
    assert sorted({t.month for t in times}) == expected


@pytest.mark.parametrize(
    "minute, expected",
    [
        ("5-5/1", [5]),  # was refused as "step larger than the range"
        ("0-0/1", [0]),  # already accepted; kept consistent with 5-5/1
        ("50-55/10", [50]),
        ("*/60", [0]),  # as in cron: "every 60 minutes" is each hour at :00
        ("45/7", [45, 52, 59]),  # 'a/n' runs to the top
    ],
)
def test_steps_larger_than_the_range(minute, expected):
    times = fires(12, minute=minute)
    assert sorted({t.minute for t in times}) == expected


# ---- daylight saving time --------------------------------------------------------------------------
# Rules (module docstring): a wall time that does not exist runs once, later: a fixed-time schedule
# at the moment of the change, a repeating one (a '*' in second, minute or hour) shifted by the gap.
# A repeated wall time runs once (first copy) for a fixed-time schedule, in both copies otherwise.


def local(times, zone):
    return [t.astimezone(zone) for t in times]


def wall(times, zone):
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in times]


def test_nine_oclock_stays_nine_local_across_dst():
    spring = local(
        fires(4, now=datetime(2024, 3, 29, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute=0, hour=9), BERLIN
    )
    assert [(t.day, t.hour, t.minute) for t in spring] == [(30, 9, 0), (31, 9, 0), (1, 9, 0), (2, 9, 0)]
    assert [t.utcoffset() for t in spring] == [timedelta(hours=1)] + [timedelta(hours=2)] * 3
    fall_utc = fires(3, now=datetime(2024, 11, 2, 18, tzinfo=UTC), minute=0, hour=9, timezone="America/New_York")
    assert [(t.day, t.hour) for t in local(fall_utc, NEW_YORK)] == [(3, 9), (4, 9), (5, 9)]
    assert [t.hour for t in fall_utc] == [14, 14, 14]


# The runs APScheduler's CronTrigger lost after a spring-forward change (reported, checked against
# croniter): it added the wall-clock difference in UTC when moving to the next day.
@pytest.mark.parametrize(
    "zone, now, fields, expected",
    [
        (
            "Europe/Berlin",
            datetime(2024, 3, 30, 23, 30, tzinfo=UTC),
            {"minute": 30, "hour": 0},
            ["04-01 00:30+0200", "04-02 00:30+0200"],
        ),
        (
            "Europe/Berlin",
            datetime(2024, 3, 1, 12, tzinfo=UTC),
            {"minute": 15, "hour": 0, "day_of_month": 1},
            ["04-01 00:15+0200", "05-01 00:15+0200"],
        ),
        (
            "Europe/Berlin",
            datetime(2024, 3, 29, 12, tzinfo=UTC),
            {"minute": 0, "hour": 0, "day_of_week": 1},
            ["04-01 00:00+0200", "04-08 00:00+0200"],
        ),
        (
            "Australia/Lord_Howe",
            datetime(2024, 6, 1, tzinfo=UTC),
            {"minute": 0, "hour": 0, "day_of_month": 1, "month": 1},
            ["01-01 00:00+1100", "01-01 00:00+1100"],
        ),
    ],
)
def test_runs_after_spring_forward_are_not_lost(zone, now, fields, expected):
    times = fires(2, now=now, timezone_name=zone, **fields)
    assert wall(times, ZoneInfo(zone)) == expected
    if zone == "Australia/Lord_Howe":
        assert [t.astimezone(LORD_HOWE).year for t in times] == [2025, 2026]  # CronTrigger said 2026


def test_skipped_time_runs_once_at_the_change_and_existing_times_run():
    # 01:59 exists on 2024-03-31 in Berlin; 02:59 does not and runs at the change, 03:00 CEST.
    times = fires(3, now=datetime(2024, 3, 30, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute=59, hour="1,2")
    assert wall(times, BERLIN) == ["03-31 01:59+0100", "03-31 03:00+0200", "04-01 01:59+0200"]


# On 2024-10-06 Lord Howe's clocks go from 02:00 to 02:30: 02:00 and 02:10 do not exist, 02:35 does.


def test_half_hour_change_keeps_the_skipped_run():
    hours = fires(4, now=datetime(2024, 10, 5, tzinfo=UTC), timezone_name="Australia/Lord_Howe", minute=0, hour="1-3")
    assert wall(hours, LORD_HOWE) == ["10-06 01:00+1030", "10-06 02:30+1100", "10-06 03:00+1100", "10-07 01:00+1100"]


def test_half_hour_change_keeps_the_time_that_exists():
    minutes = fires(
        3, now=datetime(2024, 10, 5, tzinfo=UTC), timezone_name="Australia/Lord_Howe", minute="10,35", hour=2
    )
    assert wall(minutes, LORD_HOWE) == ["10-06 02:30+1100", "10-06 02:35+1100", "10-07 02:10+1100"]


def test_fixed_job_in_the_skipped_hour_runs_once_at_the_change():
    times = fires(3, now=datetime(2024, 3, 30, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute=30, hour=2)
    assert wall(times, BERLIN) == ["03-31 03:00+0200", "04-01 02:30+0200", "04-02 02:30+0200"]
    # Several skipped times are one run, and a run due at the change anyway is not doubled.
    times = fires(
        3, now=datetime(2024, 3, 30, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute="0,20,40", hour="2,3"
    )
    assert wall(times, BERLIN) == ["03-31 03:00+0200", "03-31 03:20+0200", "03-31 03:40+0200"]


def test_repeating_job_in_the_skipped_hour_runs_shifted_by_the_gap():
    now = datetime(2024, 3, 30, 23, tzinfo=UTC)
    times = fires(3, now=now, timezone_name="Europe/Berlin", minute=30, hour="*/2")
    assert wall(times, BERLIN) == ["03-31 00:30+0100", "03-31 03:30+0200", "03-31 04:30+0200"]
    times = fires(4, now=now, timezone_name="Europe/Berlin", minute="*/20", hour=2)
    assert wall(times, BERLIN) == ["03-31 03:00+0200", "03-31 03:20+0200", "03-31 03:40+0200", "04-01 02:00+0200"]
    quarter = fires(12, now=datetime(2024, 3, 31, 0, 20, tzinfo=UTC), timezone_name="Europe/Berlin", minute="*/15")
    assert all(b - a == timedelta(minutes=15) for a, b in zip(quarter, quarter[1:]))  # no double runs


def test_job_in_the_repeated_hour_runs_once_like_vixie_cron():
    times = local(
        fires(3, now=datetime(2024, 10, 26, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute=30, hour=2), BERLIN
    )
    assert [(t.day, t.hour, t.minute) for t in times] == [(27, 2, 30), (28, 2, 30), (29, 2, 30)]
    times = fires(3, now=datetime(2024, 10, 26, 12, tzinfo=UTC), timezone_name="Europe/Berlin", minute=0, hour="1-3")
    assert wall(times, BERLIN) == ["10-27 01:00+0200", "10-27 02:00+0200", "10-27 03:00+0100"]


def test_hourly_job_keeps_firing_through_the_repeated_hour():
    times = fires(26, now=datetime(2024, 10, 26, 21, 30, tzinfo=UTC), timezone_name="Europe/Berlin", minute=0)
    assert len({t.astimezone(BERLIN).date() for t in times[:25]}) == 1  # 25 runs on a 25-hour day
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:]))
    times = fires(6, now=datetime(2024, 10, 26, 23, tzinfo=UTC), timezone_name="Europe/Berlin", minute="*/20", hour=2)
    assert wall(times, BERLIN) == [
        "10-27 02:00+0200",
        "10-27 02:20+0200",
        "10-27 02:40+0200",
        "10-27 02:00+0100",
        "10-27 02:20+0100",
        "10-27 02:40+0100",
    ]


@pytest.mark.parametrize(
    "zone, now",
    [
        ("Europe/Berlin", datetime(2024, 3, 31, 0, 59, 55, tzinfo=UTC)),
        ("Europe/Berlin", datetime(2024, 10, 27, 0, 59, 55, tzinfo=UTC)),
        ("Australia/Lord_Howe", datetime(2024, 10, 5, 15, 29, 55, tzinfo=UTC)),
        ("Australia/Lord_Howe", datetime(2024, 4, 6, 14, 59, 55, tzinfo=UTC)),
    ],
)
def test_every_second_is_every_second_through_a_change(zone, now):
    times = fires(10, now=now, timezone_name=zone, second="*/1")
    assert times == [now + timedelta(seconds=n) for n in range(1, 11)]
    assert all(t.tzinfo is UTC for t in times)


# ---- the trigger and the schedule ------------------------------------------------------------------


def schedule(**fields):
    return cron.schedule_for(cron.normalize(fields, "UTC"))


def test_trigger_follows_apscheduler_semantics():
    trigger = cron.build_trigger(cron.normalize({"minute": "*/5"}, "UTC"))
    assert isinstance(trigger, BaseTrigger)
    at_10 = datetime(2024, 1, 3, 10, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, at_10) == at_10  # first fire time >= now
    assert trigger.get_next_fire_time(at_10, at_10) == at_10 + timedelta(minutes=5)
    assert trigger.get_next_fire_time(None, at_10.astimezone(NEW_YORK)) == at_10
    # Job._get_run_times: walking from a missed run lists each missed run once, then stops.
    runs, run, now = [], at_10, at_10 + timedelta(minutes=12)
    while run is not None and run <= now:
        runs.append(run)
        run = trigger.get_next_fire_time(run, now)
    assert runs == [at_10 + timedelta(minutes=m) for m in (0, 5, 10)]
    assert run == at_10 + timedelta(minutes=15)


def test_next_after_and_fire_times_between():
    every_5 = schedule(minute="*/5")
    at_10 = datetime(2024, 1, 3, 10, 0, tzinfo=UTC)
    assert every_5.next_after(at_10) == at_10 + timedelta(minutes=5)
    assert every_5.next_after(at_10 - timedelta(microseconds=1)) == at_10
    assert every_5.next_after(datetime(2024, 1, 3, 10, 0)) == at_10 + timedelta(minutes=5)  # naive = UTC
    between = every_5.fire_times_between(at_10, at_10 + timedelta(minutes=20), 10)
    assert between == [at_10 + timedelta(minutes=m) for m in (5, 10, 15, 20)]
    assert every_5.fire_times_between(at_10, at_10 + timedelta(hours=5), 3) == between[:3]
    assert every_5.fire_times_between(at_10, at_10, 10) == []


def test_schedules_are_built_once_and_cached():
    first = cron.schedule_for(cron.normalize({"minute": 5, "hour": " 9 "}, "Europe/Paris"))
    assert cron.schedule_for({"minute": "5", "hour": "9", "timezone": "Europe/Paris"}) is first
    assert cron.build_trigger({"minute": "5", "hour": "9", "timezone": "Europe/Paris"}).schedule is first
    assert cron.schedule_for({"minute": "5", "hour": "9", "timezone": "UTC"}) is not first
    assert "minute='5'" in str(cron.build_trigger({"minute": "5", "hour": "9", "timezone": "UTC"}))


def per_call(function, moments):
    started = time.perf_counter()
    for moment in moments:
        function(moment)
    return (time.perf_counter() - started) / len(moments)


@pytest.mark.parametrize("fields", [{"second": "*/1"}, {"minute": "*/5"}, {"minute": "0", "hour": "9,17"}])
def test_next_after_is_cheap(fields):
    # Measured at about 7 us; the bound leaves room for slow machines but not for a slow search.
    every = schedule(**fields, timezone="Europe/Berlin")
    moments = [datetime(2024, 3, 30, tzinfo=UTC) + timedelta(seconds=37 * n) for n in range(3000)]
    assert per_call(every.next_after, moments) < 200e-6


def test_rare_schedule_answers_quickly():
    # Feb 29 on a Sunday in ISO week 9: 2004, 2032, 2060 (dow '*/7' is Sunday, and it is an AND).
    rare = schedule(minute=0, hour=0, day_of_month=29, month=2, day_of_week="*/7", week=9, timezone="Europe/Berlin")
    assert [t.year for t in cron.next_fire_times(rare.fields, 3, datetime(2001, 1, 1))] == [2004, 2032, 2060]
    moments = [datetime(2004, 3, 1, tzinfo=UTC) + timedelta(days=97 * n) for n in range(100)]
    assert per_call(rare.next_after, moments) < 5e-3


# ---- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("day_of_week", "9"),
        ("day_of_week", "8"),
        ("day_of_week", "5-1"),
        ("day_of_week", "mon-xyz"),
        ("day_of_week", "*/0"),
        ("day_of_week", "*/8"),
        ("day_of_week", "1;2"),
        ("month", "13"),
        ("month", "0"),
        ("month", "foo"),
        ("month", "jan-foo"),
        ("month", "*/13"),
        ("hour", "24"),
        ("hour", "-1"),
        ("hour", "5-1"),
        ("hour", "*/25"),
        ("minute", "60"),
        ("minute", "*/61"),
        ("minute", "*/0"),
        ("minute", "1,,2"),
        ("minute", "a"),
        ("minute", "mon"),
        ("minute", "1-"),
        ("minute", "/5"),
        ("minute", "**"),
        ("second", "60"),
        ("week", "54"),
        ("week", "0"),
        ("day_of_month", "32"),
        ("day_of_month", "0"),
        ("day_of_month", "lastx"),
        ("day_of_month", "6th fri"),
        ("day_of_month", "1st"),
        ("day_of_month", "last/2"),
    ],
)
def test_invalid_field_names_field_and_value(field, value):
    with pytest.raises(ValidationError) as info:
        cron.normalize({field: value}, "UTC")
    message = info.value.detail
    assert message.startswith(f"Invalid cron field {field}: {value!r} (")
    assert info.value.status == 400


@pytest.mark.parametrize("value", [None, [1], True, "", "  ", 1.5, {"a": 1}])
def test_field_of_wrong_type_or_empty(value):
    with pytest.raises(ValidationError, match="Invalid cron field hour: "):
        cron.normalize({"hour": value}, "UTC")


def test_messages_give_a_short_reason():
    with pytest.raises(ValidationError) as info:
        cron.normalize({"day_of_week": "9"}, "UTC")
    assert info.value.detail == "Invalid cron field day_of_week: '9' (must be 0-7 or sun-sat)"
    with pytest.raises(ValidationError, match="range runs backwards"):
        cron.normalize({"day_of_week": "5-1"}, "UTC")
    with pytest.raises(ValidationError, match=r"'\*/61' \(step must be 1-60\)"):
        cron.normalize({"minute": "*/61"}, "UTC")


def test_a_field_is_at_most_256_characters():
    longest = ",".join(["1"] * 128)[:255] + "2"
    assert len(longest) == 256 and cron.normalize({"minute": longest}, "UTC")["minute"] == longest
    with pytest.raises(ValidationError, match=r"^Invalid cron field minute: '1,1,.*' \(at most 256 characters\)$"):
        cron.normalize({"minute": longest + ",3"}, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Base", "", "../etc/passwd", 5])
def test_invalid_timezone(zone):
    with pytest.raises(ValidationError) as info:
        cron.normalize({"timezone": zone}, "UTC")
    assert info.value.detail == f"Invalid timezone: {zone!r}"
    with pytest.raises(ValidationError, match="Invalid timezone: 'Mars/Base'"):
        cron.normalize({}, "Mars/Base")


@pytest.mark.parametrize(
    "fields, names",
    [
        ({"day_of_month": 31, "month": 2}, "day_of_month '31', month '2'"),
        ({"day_of_month": "30,31", "month": "feb"}, "day_of_month '30,31', month 'feb'"),
        ({"week": 53, "month": "2-11"}, "month '2-11', week '53'"),
        ({"week": 1, "month": 6}, "month '6', week '1'"),
        ({"day_of_month": "5th mon", "month": 2, "week": "1-8"}, "day_of_month '5th mon', month '2', week '1-8'"),
    ],
)
def test_schedule_that_never_fires_is_rejected_quickly(fields, names):
    started = time.perf_counter()
    with pytest.raises(ValidationError, match=re.escape(f"never fires ({names} never coincide)")):
        cron.normalize(fields, "UTC")
    assert time.perf_counter() - started < 0.5


def test_rare_but_possible_schedules_are_accepted():
    assert cron.normalize({"day_of_month": 29, "month": 2, "week": 9}, "UTC")
    assert cron.normalize({"week": 53, "month": 1, "day_of_month": "1-3"}, "UTC")
    assert cron.normalize({"day_of_month": "5th mon", "month": 2}, "UTC")  # leap years that start on a Monday


# ---- normalize ---------------------------------------------------------------------------------------


def test_normalize_fills_defaults():
    assert cron.normalize({}, "UTC") == {
        "second": "0",
        "minute": "*",
        "hour": "*",
        "day_of_month": "*",
        "month": "*",
        "day_of_week": "*",
        "week": "*",
        "timezone": "UTC",
    }
    assert {**{name: "*" for name in cron.CRON_FIELDS}, "second": "0"} == cron.DEFAULTS


def test_normalize_converts_strips_and_ignores_other_keys():
    result = cron.normalize(
        {"minute": 5, "hour": " 9 ", "day_of_week": "1-5", "timezone": "Europe/Paris", "name": "x"}, "UTC"
    )
    assert result == {
        "second": "0",
        "minute": "5",
        "hour": "9",
        "day_of_month": "*",
        "month": "*",
        "day_of_week": "1-5",
        "week": "*",
        "timezone": "Europe/Paris",
    }
    assert cron.normalize({"timezone": None}, "Asia/Tokyo")["timezone"] == "Asia/Tokyo"
    assert cron.normalize(result, "UTC") == result


# ---- describe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, text",
    [
        # the four examples of API.md "Common Schedule Examples"
        ({"minute": "0", "hour": "9"}, "At 09:00 every day"),
        ({"minute": "0", "hour": "15", "day_of_week": "1"}, "At 15:00 on Monday"),
        ({"minute": "*/5"}, "Every 5 minutes"),
        ({"minute": "0", "hour": "0", "day_of_month": "1"}, "At 00:00 on day 1 of the month"),
        # others
        ({"second": "*"}, "Every second"),
        ({"second": "30", "minute": "*"}, "At second 30 of every minute"),
        ({"minute": "0", "hour": "9", "day_of_week": "1-5"}, "At 09:00 on Monday through Friday"),
        ({"minute": "0", "hour": "9", "timezone": "Europe/Paris"}, "At 09:00 every day (Europe/Paris)"),
        (
            {"minute": "0,30", "hour": "9-17", "day_of_week": "1,3"},
            "At minute 0,30 past hour 9-17 on Monday and Wednesday",
        ),
        ({"minute": "*/7"}, "At minute */7 past every hour"),  # restarts at :00, so not "every 7"
        (
            {"minute": "0", "hour": "0", "day_of_month": "1", "day_of_week": "1"},
            "At 00:00 on day 1 of the month or on Monday",
        ),
        ({"minute": "0", "hour": "0", "day_of_month": "1", "day_of_week": "0-6"}, "At 00:00 every day"),
        ({"minute": "0", "hour": "12", "day_of_week": "6,0", "month": "3"}, "At 12:00 on Saturday and Sunday in March"),
        ({"minute": "0", "hour": "*/6"}, "Every 6 hours"),
    ],
)
def test_describe(fields, text):
    assert cron.describe(cron.normalize(fields, "UTC")) == text


# ---- property: random valid specs --------------------------------------------------------------------


def numeric(low, high):
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.integers(1, high - low).map(lambda n: f"*/{n}"),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(value, value, st.integers(1, 5)).map(lambda p: f"{min(p[:2])}-{max(p[:2])}/{p[2]}"),
        st.lists(value, min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
    )


DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def day_of_week(draw):
    """(Unix spec, the Python weekdays it means), built independently of cron.py."""

    def one():
        kind = draw(st.sampled_from(["single", "range", "step", "star-step"]))
        if kind == "star-step":
            n = draw(st.integers(1, 7))
            return f"*/{n}", set(range(0, 7, n))
        a, b = sorted(draw(st.tuples(st.integers(0, 7), st.integers(0, 7))))

        def spell(n):
            return draw(st.sampled_from([str(n), DAY_NAMES[n], DAY_NAMES[n].upper()]))

        if kind == "single":
            return spell(a), {a % 7}
        if kind == "range":
            start = spell(a) if a < 7 else "7"  # 'sun' as a range start means 0
            return f"{start}-{b}", {d % 7 for d in range(a, b + 1)}
        n = draw(st.integers(1, 7))
        return f"{a}-{b}/{n}", {d % 7 for d in range(a, b + 1, n)}

    if draw(st.booleans()):
        return "*", set(range(7))
    parts = [one() for _ in range(draw(st.integers(1, 3)))]
    unix = set().union(*(days for _, days in parts))
    return ",".join(spec for spec, _ in parts), {(d - 1) % 7 for d in unix}


GARBAGE = st.one_of(st.text(max_size=5), st.integers(-3, 99), st.none(), st.booleans())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    second=numeric(0, 59),
    minute=numeric(0, 59),
    hour=numeric(0, 23),
    dom=st.one_of(numeric(1, 31), st.just("last")),
    month=numeric(1, 12),
    dow=day_of_week(),
    week=st.one_of(st.just("*"), st.just("*"), st.just("*"), numeric(1, 53)),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    broken=st.one_of(st.none(), st.tuples(st.sampled_from(cron.CRON_FIELDS + ("timezone",)), GARBAGE)),
    now=st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
)
def test_random_specs_only_raise_validation_errors(second, minute, hour, dom, month, dow, week, zone, broken, now):
    dow_spec, weekdays = dow
    raw = {
        "second": second,
        "minute": minute,
        "hour": hour,
        "day_of_month": dom,
        "month": month,
        "day_of_week": dow_spec,
        "week": week,
        "timezone": zone,
    }
    if broken:
        raw[broken[0]] = broken[1]
        weekdays = set(range(7)) if broken[0] == "day_of_week" else weekdays
    try:
        fields = cron.normalize(raw, "UTC")
    except ValidationError:
        return
    assert isinstance(cron.describe(fields), str)
    times = cron.next_fire_times(fields, 4, now)
    assert len(times) == 4
    assert all(t.tzinfo is UTC for t in times)
    assert all(a < b for a, b in zip([now] + times, times))
    if fields["day_of_month"].startswith("*") or fields["day_of_week"] == "*":  # no OR: weekday must match
        zone_info = ZoneInfo(fields["timezone"])
        assert {t.astimezone(zone_info).weekday() for t in times} <= weekdays
