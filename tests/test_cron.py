"""Unix cron translation onto APScheduler 3, with fixed clocks (no sleeping, no wall clock)."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from texium.core import cron
from texium.core.errors import ValidationError

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
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


@pytest.mark.parametrize("spec, expected", [
    ("*/2", {6, 1, 3, 5}),          # Sun, Tue, Thu, Sat
    ("1-5/2", {0, 2, 4}),           # Mon, Wed, Fri
    ("1,3,5", {0, 2, 4}),
    ("mon-fri", {0, 1, 2, 3, 4}),
    ("fri-sun", {4, 5, 6}),
    ("5-7", {4, 5, 6}),
    ("6,0", {5, 6}),
])
def test_day_of_week_forms(spec, expected):
    times = fires(30, minute=0, hour=0, day_of_week=spec)
    assert {t.weekday() for t in times} == expected


def test_apscheduler_is_given_day_names_not_unix_numbers():
    trigger = cron.build_trigger(cron.normalize({"day_of_week": "1-5"}, "UTC"))
    assert "day_of_week='mon,tue,wed,thu,fri'" in str(trigger.trigger)


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
        "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29",
        "2024-02-01", "2024-02-05", "2024-02-12", "2024-02-19",
    ]
    trigger = cron.build_trigger(cron.normalize({"day_of_month": 1, "day_of_week": 1}, "UTC"))
    assert isinstance(trigger, BaseTrigger) and isinstance(trigger.trigger, OrTrigger)


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


# ---- daylight saving time --------------------------------------------------------------------------

def local(times, zone):
    return [t.astimezone(zone) for t in times]


def test_nine_oclock_stays_nine_local_across_dst():
    spring = local(fires(4, now=datetime(2024, 3, 29, 12, tzinfo=UTC), timezone_name="Europe/Berlin",
                         minute=0, hour=9), BERLIN)
    assert [(t.day, t.hour, t.minute) for t in spring] == [(30, 9, 0), (31, 9, 0), (1, 9, 0), (2, 9, 0)]
    assert [t.utcoffset() for t in spring] == [timedelta(hours=1)] + [timedelta(hours=2)] * 3
    fall_utc = fires(3, now=datetime(2024, 11, 2, 18, tzinfo=UTC), minute=0, hour=9, timezone="America/New_York")
    assert [(t.day, t.hour) for t in local(fall_utc, NEW_YORK)] == [(3, 9), (4, 9), (5, 9)]
    assert [t.hour for t in fall_utc] == [14, 14, 14]


def test_job_in_the_skipped_hour_runs_once_that_day():
    # 02:30 does not exist on 2024-03-31 in Berlin; APScheduler runs it at 03:30 CEST.
    times = local(fires(3, now=datetime(2024, 3, 30, 12, tzinfo=UTC), timezone_name="Europe/Berlin",
                        minute=30, hour=2), BERLIN)
    assert [(t.day, t.hour, t.minute) for t in times] == [(31, 3, 30), (1, 2, 30), (2, 2, 30)]


def test_job_in_the_repeated_hour_runs_once_like_vixie_cron():
    times = local(fires(3, now=datetime(2024, 10, 26, 12, tzinfo=UTC), timezone_name="Europe/Berlin",
                        minute=30, hour=2), BERLIN)
    assert [(t.day, t.hour, t.minute) for t in times] == [(27, 2, 30), (28, 2, 30), (29, 2, 30)]


def test_hourly_job_keeps_firing_through_the_repeated_hour():
    times = fires(26, now=datetime(2024, 10, 26, 21, 30, tzinfo=UTC), timezone_name="Europe/Berlin", minute=0)
    assert len({t.astimezone(BERLIN).date() for t in times[:25]}) == 1  # 25 runs on a 25-hour day
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:]))


# ---- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("day_of_week", "9"), ("day_of_week", "8"), ("day_of_week", "5-1"), ("day_of_week", "mon-xyz"),
    ("day_of_week", "*/0"), ("day_of_week", "1;2"),
    ("month", "13"), ("month", "0"), ("month", "foo"), ("month", "jan/2"),
    ("hour", "24"), ("hour", "-1"), ("hour", "5-1"),
    ("minute", "60"), ("minute", "*/60"), ("minute", "*/0"), ("minute", "1,,2"), ("minute", "a"),
    ("second", "60"), ("week", "54"), ("week", "0"),
    ("day_of_month", "32"), ("day_of_month", "0"), ("day_of_month", "lastx"), ("day_of_month", "6th fri"),
])
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


@pytest.mark.parametrize("zone", ["Mars/Base", "", "../etc/passwd", 5])
def test_invalid_timezone(zone):
    with pytest.raises(ValidationError) as info:
        cron.normalize({"timezone": zone}, "UTC")
    assert info.value.detail == f"Invalid timezone: {zone!r}"
    with pytest.raises(ValidationError, match="Invalid timezone: 'Mars/Base'"):
        cron.normalize({}, "Mars/Base")


def test_schedule_that_never_fires_is_rejected():
    with pytest.raises(ValidationError, match="day_of_month '31', month '2'"):
        cron.normalize({"day_of_month": 31, "month": 2}, "UTC")


# ---- normalize ---------------------------------------------------------------------------------------

def test_normalize_fills_defaults():
    assert cron.normalize({}, "UTC") == {
        "second": "0", "minute": "*", "hour": "*", "day_of_month": "*", "month": "*",
        "day_of_week": "*", "week": "*", "timezone": "UTC",
    }
    assert cron.DEFAULTS == {**{name: "*" for name in cron.CRON_FIELDS}, "second": "0"}


def test_normalize_converts_strips_and_ignores_other_keys():
    result = cron.normalize(
        {"minute": 5, "hour": " 9 ", "day_of_week": "1-5", "timezone": "Europe/Paris", "name": "x"}, "UTC")
    assert result == {
        "second": "0", "minute": "5", "hour": "9", "day_of_month": "*", "month": "*",
        "day_of_week": "1-5", "week": "*", "timezone": "Europe/Paris",
    }
    assert cron.normalize({"timezone": None}, "Asia/Tokyo")["timezone"] == "Asia/Tokyo"
    assert cron.normalize(result, "UTC") == result


# ---- describe ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, text", [
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
    ({"minute": "0,30", "hour": "9-17", "day_of_week": "1,3"},
     "At minute 0,30 past hour 9-17 on Monday and Wednesday"),
    ({"minute": "*/7"}, "At minute */7 past every hour"),  # restarts at :00, so not "every 7"
    ({"minute": "0", "hour": "0", "day_of_month": "1", "day_of_week": "1"},
     "At 00:00 on day 1 of the month or on Monday"),
    ({"minute": "0", "hour": "0", "day_of_month": "1", "day_of_week": "0-6"}, "At 00:00 every day"),
    ({"minute": "0", "hour": "12", "day_of_week": "6,0", "month": "3"}, "At 12:00 on Saturday and Sunday in March"),
    ({"minute": "0", "hour": "*/6"}, "Every 6 hours"),
])
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
        spell = lambda n: draw(st.sampled_from([str(n), DAY_NAMES[n], DAY_NAMES[n].upper()]))
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
    raw = {"second": second, "minute": minute, "hour": hour, "day_of_month": dom,
           "month": month, "day_of_week": dow_spec, "week": week, "timezone": zone}
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
