"""Per-job daylight-saving rules (`dst_policy`, issue 21): the cron engine for each policy, fixed
and repeating schedules, in Europe/Berlin (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00)
and Australia/Lord_Howe (half-hour changes: 2026-04-05 02:00 -> 01:30, 2026-10-04 02:00 -> 02:30);
then the API: the field validated, stored, and applied by the cron preview and the job's
next_run_time."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from texium.core.errors import ValidationError
from texium.core.scheduling import cron

BERLIN, LORD_HOWE = "Europe/Berlin", "Australia/Lord_Howe"


def walls(zone: str, since: datetime, count: int, policy: dict | None = None, **fields) -> list[str]:
    """The next fire times as local wall clock with the offset, e.g. '29 03:00+0200'."""
    schedule = cron.schedule_for({**fields, "timezone": zone, "dst_policy": policy})
    times = cron.next_fire_times(fields, count, since, schedule)
    return [t.astimezone(ZoneInfo(zone)).strftime("%d %H:%M%z") for t in times]


BERLIN_SPRING = datetime(2026, 3, 28, 12, tzinfo=UTC)
BERLIN_FALL = datetime(2026, 10, 24, 12, tzinfo=UTC)
HOWE_SPRING = datetime(2026, 10, 3, 0, tzinfo=UTC)
HOWE_FALL = datetime(2026, 4, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["29 03:00+0200", "30 02:30+0200"]),  # the default of a fixed job: at the change
        ("at_change", ["29 03:00+0200", "30 02:30+0200"]),
        ("shift", ["29 03:30+0200", "30 02:30+0200"]),
        ("skip", ["30 02:30+0200", "31 02:30+0200"]),
    ],
)
def test_berlin_spring_forward_of_a_fixed_job(policy, expected):
    given = policy and {"spring_forward": policy}
    assert walls(BERLIN, BERLIN_SPRING, 2, given, minute="30", hour="2") == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["29 01:30+0100", "29 03:00+0200", "29 03:30+0200", "30 01:00+0200"]),  # shifted by the gap
        ("shift", ["29 01:30+0100", "29 03:00+0200", "29 03:30+0200", "30 01:00+0200"]),
        ("at_change", ["29 01:30+0100", "29 03:00+0200", "30 01:00+0200", "30 01:30+0200"]),
        ("skip", ["29 01:30+0100", "30 01:00+0200", "30 01:30+0200", "30 02:00+0200"]),
    ],
)
def test_berlin_spring_forward_of_a_repeating_job(policy, expected):
    since = datetime(2026, 3, 29, 0, 15, tzinfo=UTC)  # 01:15 CET
    given = policy and {"spring_forward": policy}
    assert walls(BERLIN, since, 4, given, minute="*/30", hour="1-2") == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["25 02:30+0200", "26 02:30+0100"]),  # the default of a fixed job: the first copy
        ("once", ["25 02:30+0200", "26 02:30+0100"]),
        ("twice", ["25 02:30+0200", "25 02:30+0100", "26 02:30+0100"]),
    ],
)
def test_berlin_fall_back_of_a_fixed_job(policy, expected):
    given = policy and {"fall_back": policy}
    assert walls(BERLIN, BERLIN_FALL, len(expected), given, minute="30", hour="2") == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["25 02:00+0200", "25 02:30+0200", "25 02:00+0100", "25 02:30+0100", "25 03:00+0100"]),
        ("twice", ["25 02:00+0200", "25 02:30+0200", "25 02:00+0100", "25 02:30+0100", "25 03:00+0100"]),
        ("once", ["25 02:00+0200", "25 02:30+0200", "25 03:00+0100", "25 03:30+0100", "25 04:00+0100"]),
    ],
)
def test_berlin_fall_back_of_a_repeating_job(policy, expected):
    since = datetime(2026, 10, 24, 23, 45, tzinfo=UTC)  # 01:45 CEST
    given = policy and {"fall_back": policy}
    assert walls(BERLIN, since, 5, given, minute="*/30") == expected


@pytest.mark.parametrize(
    ("policy", "fixed", "repeating"),
    [
        (None, ["04 02:30+1100", "05 02:15+1100"], ["04 01:45+1030", "04 02:30+1100", "04 02:45+1100"]),
        ("at_change", ["04 02:30+1100", "05 02:15+1100"], ["04 01:45+1030", "04 02:30+1100", "04 02:45+1100"]),
        # 02:15 does not exist: shifted by the half-hour gap to 02:45
        ("shift", ["04 02:45+1100", "05 02:15+1100"], ["04 01:45+1030", "04 02:30+1100", "04 02:45+1100"]),
        ("skip", ["05 02:15+1100", "06 02:15+1100"], ["04 01:45+1030", "04 02:30+1100", "04 02:45+1100"]),
    ],
)
def test_lord_howe_half_hour_spring_forward(policy, fixed, repeating):
    given = policy and {"spring_forward": policy}
    assert walls(LORD_HOWE, HOWE_SPRING, 2, given, minute="15", hour="2") == fixed
    since = datetime(2026, 10, 3, 15, 0, tzinfo=UTC)  # 01:30 +1030
    # every 15 minutes within 01:00-02:59: 02:00 and 02:15 fall in the gap
    shifted = walls(LORD_HOWE, since, 3, given, minute="*/15", hour="1-2")
    assert shifted == repeating
    if policy == "skip":  # where the policies differ for a repeating job: a time alone in the gap
        assert walls(LORD_HOWE, since, 2, given, minute="10", hour="*/1") == ["04 03:10+1100", "04 04:10+1100"]
    elif policy in (None, "shift"):
        assert walls(LORD_HOWE, since, 2, given, minute="10", hour="*/1") == ["04 02:40+1100", "04 03:10+1100"]


@pytest.mark.parametrize(
    ("policy", "fixed", "repeating"),
    [
        (None, ["05 01:45+1100", "06 01:45+1030"], ["05 01:30+1100", "05 01:45+1100", "05 01:30+1030"]),
        ("once", ["05 01:45+1100", "06 01:45+1030"], ["05 01:30+1100", "05 01:45+1100", "05 02:00+1030"]),
        ("twice", ["05 01:45+1100", "05 01:45+1030"], ["05 01:30+1100", "05 01:45+1100", "05 01:30+1030"]),
    ],
)
def test_lord_howe_half_hour_fall_back(policy, fixed, repeating):
    given = policy and {"fall_back": policy}
    assert walls(LORD_HOWE, HOWE_FALL, 2, given, minute="45", hour="1") == fixed
    since = datetime(2026, 4, 4, 14, 20, tzinfo=UTC)  # 01:20 +1100
    assert walls(LORD_HOWE, since, 3, given, minute="*/15") == repeating


def test_the_policy_is_part_of_the_schedule_cache_key():
    fields = {"minute": "30", "hour": "2", "timezone": BERLIN}
    plain = cron.schedule_for(fields)
    assert cron.schedule_for({**fields, "dst_policy": None}) is plain
    assert cron.schedule_for({**fields, "dst_policy": {"fall_back": None}}) is plain
    skipping = cron.schedule_for({**fields, "dst_policy": {"spring_forward": "skip"}})
    assert skipping is not plain
    assert skipping.dst_policy == {"spring_forward": "skip", "fall_back": "once"}
    repeating = cron.schedule_for({**fields, "minute": "*/30"})
    assert repeating.dst_policy == {"spring_forward": "shift", "fall_back": "twice"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"spring_forward": "later"}, "Invalid field dst_policy.spring_forward: must be one of shift, at_change, skip"),
        ({"fall_back": "thrice"}, "Invalid field dst_policy.fall_back: must be one of once, twice"),
        ({"fall_back": 2}, "Invalid field dst_policy.fall_back: must be one of once, twice"),
        ({"autumn": "once"}, "Invalid field dst_policy.autumn: unknown"),
        ("skip", "Invalid field dst_policy: must be an object"),
    ],
)
def test_bad_policies_name_the_key(value, message):
    with pytest.raises(ValidationError) as raised:
        cron.check_dst_policy(value)
    assert raised.value.detail.startswith(message)


# ---- through a real server -----------------------------------------------------------------------

PREVIEW = "/api/scheduler/cron/preview"
BERLIN_230 = {"minute": "30", "hour": "2", "timezone": BERLIN}


def local(texts: list[str], zone: str = BERLIN) -> list[str]:
    return [datetime.fromisoformat(t).astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in texts]


def next_change(forward: bool, zone: str = BERLIN) -> datetime:
    """The UTC day of the zone's next spring-forward (or fall-back) change after today (in
    Berlin the change is at 01:00 UTC, so the local day is the same)."""
    tz, day = ZoneInfo(zone), datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        before, after = day.astimezone(tz).utcoffset(), (day + timedelta(days=1)).astimezone(tz).utcoffset()
        if before != after and (after > before) == forward and day > datetime.now(UTC):
            return day
        day += timedelta(days=1)


def on(day: datetime) -> dict:
    """Cron fields for that one day of the year."""
    return {"month": str(day.month), "day_of_month": str(day.day)}


def mmdd(day: datetime, wall: str) -> str:
    return f"{day:%m-%d} {wall}"


def test_cron_preview_applies_the_policy(api):
    day = next_change(forward=True)
    spring = {**BERLIN_230, **on(day)}  # once a year, on the change day
    default = api.get(PREVIEW, params={**spring, "count": 1}).json()
    assert local(default["next_run_times"]) == [mmdd(day, "03:00+0200")]
    assert default["dst_policy"] == {"spring_forward": "at_change", "fall_back": "once"}
    shifted = api.get(PREVIEW, params={**spring, "count": 1, "spring_forward": "shift"}).json()
    assert local(shifted["next_run_times"]) == [mmdd(day, "03:30+0200")]
    assert shifted["dst_policy"] == {"spring_forward": "shift", "fall_back": "once"}
    day = next_change(forward=False)
    fall = {**BERLIN_230, **on(day)}
    twice = api.get(PREVIEW, params={**fall, "count": 2, "fall_back": "twice"}).json()
    assert local(twice["next_run_times"]) == [mmdd(day, "02:30+0200"), mmdd(day, "02:30+0100")]
    bad = api.get(PREVIEW, params={**fall, "fall_back": "thrice"})
    assert bad.status_code == 400 and "dst_policy.fall_back" in bad.json()["detail"]


def test_a_job_stores_its_policy_and_runs_by_it(api):
    owner, day = api.create_user(), next_change(forward=True)
    spring = {**BERLIN_230, **on(day)}
    job_id = api.create_job(owner, **spring, dst_policy={"spring_forward": "shift"})
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert job["dst_policy"] == {"spring_forward": "shift"}
    assert local([job["next_run_time"]]) == [mmdd(day, "03:30+0200")]

    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"dst_policy": {"spring_forward": "skip"}}).status_code == 200
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert job["dst_policy"] == {"spring_forward": "skip"}
    # that day's 02:30 does not exist and is skipped; the same date next year is not a change day
    following = datetime.fromisoformat(job["next_run_time"])
    assert following.year == day.year + 1 and following.strftime("%m-%d") == f"{day:%m-%d}"
    assert following.astimezone(ZoneInfo(BERLIN)).strftime("%H:%M") == "02:30"

    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"dst_policy": None}).status_code == 200
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert job["dst_policy"] is None and local([job["next_run_time"]]) == [mmdd(day, "03:00+0200")]

    defaulted = api.get(f"/api/scheduler/jobs/{api.create_job(owner, minute='0')}").json()["data"]
    assert defaulted["dst_policy"] is None


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"spring_forward": "later"}, "dst_policy.spring_forward"),
        ({"fall_back": "never"}, "dst_policy.fall_back"),
        ({"winter": "once"}, "dst_policy.winter"),
        ([], "dst_policy"),
    ],
)
def test_bad_policies_are_a_400_naming_the_field(api, value, field):
    owner = api.create_user()
    body = {"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "x", "dst_policy": value}
    created = api.post("/api/scheduler/jobs", json=body)
    assert created.status_code == 400 and created.json()["detail"].startswith(f"Invalid field {field}")
    job_id = api.create_job(owner)
    updated = api.put(f"/api/scheduler/jobs/{job_id}", json={"dst_policy": value})
    assert updated.status_code == 400 and updated.json()["detail"].startswith(f"Invalid field {field}")
