"""The schedule forecast (texium/core/views/forecast.py) and the dashboard's two summary endpoints
(texium/core/views/dashboard.py): pure tests of the counting, then the endpoints on each provider."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from texium.core.scheduling import cron
from texium.core.scheduling.preview import job_preview
from texium.core.scheduling.windows import Blackouts, JobTimes
from texium.core.views.dashboard import error_summary
from texium.core.views.forecast import MAX_HOURS, forecast, spread_suggestion

NOW = datetime(2026, 3, 2, 10, 17, 5, tzinfo=UTC)  # a Monday
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def job(job_id: str, **fields) -> dict:
    doc = {"_id": job_id, "name": job_id, "is_enabled": True, "is_paused": False, **cron.DEFAULTS, "timezone": "UTC"}
    doc.update(fields)
    return doc


# --------------------------------------------------------------------------- pure
def test_counts_runs_per_hour_from_now_on():
    hourly = job("hourly", minute="0")
    quarterly = job("quarterly", minute="*/15")
    result = forecast([hourly, quarterly], 24, NOW)
    assert result["start"] == START and result["end"] == START + timedelta(hours=24)
    assert len(result["buckets"]) == 24
    first = result["buckets"][0]
    assert (first["start"], first["runs"], first["jobs"]) == (START, 2, 1)  # 10:30, 10:45: 10:00 and 10:15 are past
    assert all(b["runs"] == 5 and b["jobs"] == 2 for b in result["buckets"][1:])
    assert result["total_runs"] == 2 + 23 * 5
    assert [(j["job_id"], j["runs"]) for j in result["jobs"]] == [("quarterly", 94), ("hourly", 23)]
    assert result["jobs"][1]["first_run"] == START + timedelta(hours=1)


def test_a_pile_up_shows_in_its_hour():
    jobs = [job(f"nightly-{i}", minute=str(i % 5), hour="2") for i in range(40)]
    result = forecast(jobs, 48, NOW)
    busiest = max(result["buckets"], key=lambda b: b["runs"])
    assert (busiest["start"], busiest["runs"], busiest["jobs"]) == (datetime(2026, 3, 3, 2, 0, tzinfo=UTC), 40, 40)
    assert busiest["busiest_minute"]["starts"] == 8  # eight jobs at each of 02:00 .. 02:04
    assert sum(1 for b in result["buckets"] if b["runs"]) == 2  # 02:00 on the 3rd and on the 4th


def test_only_enabled_unpaused_jobs_count_and_time_zones_are_honoured():
    jobs = [
        job("paused", minute="0", is_paused=True),
        job("disabled", minute="0", is_enabled=False),
        job("tokyo", minute="0", hour="9", timezone="Asia/Tokyo"),  # 09:00 JST is 00:00 UTC
    ]
    result = forecast(jobs, 24, NOW)
    assert [j["job_id"] for j in result["jobs"]] == ["tokyo"]
    hits = [b["start"] for b in result["buckets"] if b["runs"]]
    assert hits == [datetime(2026, 3, 3, 0, 0, tzinfo=UTC)]


def test_nothing_is_capped_an_every_minute_job_weighs_sixty_an_hour():
    every_minute = job("minutely", minute="*")
    every_second = job("busy", second="*")
    result = forecast([every_minute, every_second], MAX_HOURS, NOW)
    whole_hours = result["buckets"][1:]
    assert all(b["runs"] == 60 + 3600 for b in whole_hours)
    runs = {j["job_id"]: j["runs"] for j in result["jobs"]}
    assert runs["minutely"] == 42 + 60 * (MAX_HOURS - 1)  # 10:18 .. 10:59, then every hour
    assert runs["busy"] == 54 + 42 * 60 + 3600 * (MAX_HOURS - 1)  # from 10:17:06 on


def test_window_max_runs_run_at_and_jitter_follow_the_planner():
    window = job("window", minute="0", start_at=START + timedelta(hours=3), end_at=START + timedelta(hours=5))
    limited = job("limited", minute="*/10", max_runs=5, run_count=2)
    once = job("once", run_at=START + timedelta(hours=2, minutes=7))
    jittered = job("jittered", minute="0", jitter_seconds=600)
    result = forecast([window, limited, once, jittered], 24, NOW)
    runs = {j["job_id"]: j for j in result["jobs"]}
    assert runs["window"]["runs"] == 3 and runs["window"]["first_run"] == START + timedelta(hours=3)
    assert runs["limited"]["runs"] == 3  # 5 at most, 2 already ran
    assert runs["once"]["runs"] == 1 and runs["once"]["first_run"] == START + timedelta(hours=2, minutes=7)
    expected = JobTimes(jittered).raw_between(NOW, START + timedelta(hours=24) - timedelta(microseconds=1), 100)
    assert runs["jittered"]["runs"] == len(expected) and runs["jittered"]["first_run"] == expected[0]
    assert expected[0] != START + timedelta(hours=1)  # delayed, by the planner's own jitter


def test_blackouts_are_excluded_not_counted_as_runs():
    calendar = {
        "_id": "cal",
        "name": "Night freeze",
        "periods": [{"start": "2026-03-02T20:00:00+00:00", "end": "2026-03-02T23:00:00+00:00"}],
    }
    quarterly = job("quarterly", minute="*/15", exclude_calendars=["cal"])
    result = forecast([quarterly], 24, NOW, {"quarterly": Blackouts([calendar])})
    by_hour = {b["start"].hour: b for b in result["buckets"]}
    assert [(by_hour[h]["runs"], by_hour[h]["excluded"]) for h in (19, 20, 21, 22, 23)] == [
        (4, 0),
        (0, 4),
        (0, 4),
        (0, 4),
        (4, 0),
    ]
    (only,) = result["jobs"]
    assert only["excluded"] == 12 and only["excluded_by"] == ["Night freeze"]
    assert result["total_excluded"] == 12 and result["total_runs"] == 2 + 20 * 4


def test_twelve_jobs_at_minute_zero_are_a_peak_with_h_suggestions():
    crowd = [job(f"{i:024x}", minute="0") for i in range(11)] + [job(f"{99:024x}", minute="0-29/10")]
    calm = job("calm", minute="*/15")
    result = forecast([*crowd, calm], 6, NOW, peak_threshold=10)
    assert result["peak_threshold"] == 10
    first, *later = result["buckets"]
    assert not first["peak"] and first["busiest_minute"]["starts"] == 1  # 10:00 is past: 10:20, 10:30, 10:45 remain
    assert all(b["peak"] and b["busiest_minute"]["starts"] == 13 for b in later)  # twelve at hh:00, and calm
    assert [p["start"] for p in result["peaks"]] == [b["start"] for b in later]
    peak = result["peaks"][0]
    assert peak["minute"] == START + timedelta(hours=1) and peak["starts"] == 13
    suggested = {s["job_id"]: s["suggested"]["minute"] for s in peak["suggestions"]}
    assert peak["jobs"] == 13 and len(suggested) == 13
    assert suggested[f"{0:024x}"] == "H" and suggested[f"{99:024x}"] == "H(0-29)/10" and suggested["calm"] == "H/15"
    for suggestion in peak["suggestions"]:
        assert suggestion["schedule"]["minute"] != suggestion["suggested"]["minute"]
        assert {k: v for k, v in suggestion["suggested"].items() if k != "minute"} == {
            k: v for k, v in suggestion["schedule"].items() if k != "minute"
        }
        cron.normalize(suggestion["suggested"], "UTC", suggestion["job_id"])  # a valid schedule for that job
    # Applied, the suggestions spread the crowd: no peak is left.
    spread = [job(s["job_id"], **s["suggested"]) for s in peak["suggestions"]]
    assert not [b for b in forecast(spread, 6, NOW, peak_threshold=10)["buckets"] if b["peak"]]
    assert forecast([*crowd, calm], 6, NOW, peak_threshold=13)["peaks"] == []  # more than 13 makes a peak


def test_no_suggestion_for_a_minute_without_an_h_form():
    assert spread_suggestion(job("a", minute="*")) is None
    assert spread_suggestion(job("b", minute="0,30")) is None
    assert spread_suggestion(job("c", minute="H")) is None
    assert spread_suggestion(job("d", minute="5"))["minute"] == "H"


def test_a_broken_schedule_is_reported_not_raised():
    result = forecast([job("broken", timezone="Mars/Olympus"), job("fine", minute="0")], 2, NOW)
    assert [e["job_id"] for e in result["errors"]] == ["broken"]
    assert "timezone" in result["errors"][0]["error"]
    assert [j["job_id"] for j in result["jobs"]] == ["fine"]


@pytest.mark.parametrize("hours", [0, -1, MAX_HOURS + 1])
def test_hours_out_of_range_are_refused(hours):
    with pytest.raises(ValueError):
        forecast([], hours, NOW)
    with pytest.raises(ValueError):
        forecast([], 1, NOW, peak_threshold=0)


def test_error_summary_is_one_useful_line():
    assert error_summary("") == ""
    assert error_summary("JobError: boom\nmore") == "JobError: boom"
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad value\n'
    assert error_summary(traceback) == "ValueError: bad value"


# --------------------------------------------------------------------------- endpoints
@pytest.mark.parametrize("hours", ["0", "337", "abc", "1.5"])
def test_forecast_endpoint_validates_hours(api, hours):
    response = api.get("/api/scheduler/forecast", params={"hours": hours})
    assert response.status_code == 400
    assert "hours" in response.json()["detail"]


def test_forecast_endpoint_counts_a_new_job(api):
    user = api.create_user()
    job_id = api.create_job(user, name="forecast me", minute="*/30")
    paused = api.create_job(user, name="paused", minute="*")
    assert api.patch(f"/api/scheduler/jobs/{paused}/pause").status_code == 200
    before = datetime.now(UTC)
    response = api.get("/api/scheduler/forecast", params={"hours": 6})
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["hours"] == 6 and len(body["buckets"]) == 6
    mine = next(j for j in body["jobs"] if j["job_id"] == job_id)
    # Every half hour for the 6 hours from this one, less this hour's :00 (past) and its :30 if past.
    expected = {11 - (moment.minute >= 30) for moment in (before, after)}
    assert mine["runs"] in expected, (mine, before, after)
    assert all(j["job_id"] != paused for j in body["jobs"])
    assert "dst" not in mine  # UTC has no clock change
    assert body["total_runs"] == sum(b["runs"] for b in body["buckets"])
    assert api.get("/api/scheduler/forecast").json()["hours"] == 168  # the default: a week


def test_job_summaries_give_each_jobs_latest_runs(api):
    user = api.create_user()
    job_id = api.create_job(user, name="summarised", minute="0", hour="9")
    for _ in range(3):
        run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert api.wait_execution(run)["status"] == "completed"
    response = api.get("/api/scheduler/job-summaries", params={"runs": 2, "user_id": user})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    summary = body["data"][0]
    assert summary["job_id"] == job_id
    assert summary["schedule_description"] == "At 09:00 every day"
    assert [r["status"] for r in summary["recent_runs"]] == ["completed", "completed"]
    assert set(summary["recent_runs"][0]) >= {"_id", "status", "created_at", "duration_ms"}
    assert "output" not in summary["recent_runs"][0], "a strip needs no output"
    assert summary["last_success"]["_id"] == summary["recent_runs"][0]["_id"]
    assert summary["last_failure"] is None
    assert api.get("/api/scheduler/job-summaries", params={"runs": 0}).status_code == 400
    assert api.get("/api/scheduler/job-summaries", params={"user_id": "f" * 24}).status_code == 404


def test_activity_counts_executions_per_bucket_by_status(api):
    user = api.create_user()
    job_id = api.create_job(user, name="active")
    run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(run)["status"] == "completed"
    hourly = api.get("/api/scheduler/activity").json()
    assert hourly["bucket"] == "hour" and len(hourly["buckets"]) == 24
    assert sum(b["counts"].get("completed", 0) for b in hourly["buckets"][-2:]) >= 1  # the hour may just turn
    daily = api.get("/api/scheduler/activity", params={"bucket": "day", "timezone": "Europe/Berlin"}).json()
    assert daily["timezone"] == "Europe/Berlin" and len(daily["buckets"]) == 30
    assert sum(b["total"] for b in daily["buckets"][-2:]) >= 1
    for params in ({"bucket": "week"}, {"timezone": "Nowhere/Else"}):
        response = api.get("/api/scheduler/activity", params=params)
        assert response.status_code == 400 and "detail" in response.json()


def test_forecast_endpoint_excludes_a_calendars_blackout_and_validates_peak_threshold(api):
    user = api.create_user()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    period = {"start": (hour + timedelta(hours=2)).isoformat(), "end": (hour + timedelta(hours=4)).isoformat()}
    calendar = api.post("/api/scheduler/calendars", json={"user_id": user, "name": "Freeze", "periods": [period]})
    assert calendar.status_code == 201, calendar.text
    job_id = api.create_job(user, name="frozen", minute="*/10", exclude_calendars=[calendar.json()["calendar_id"]])
    body = api.get("/api/scheduler/forecast", params={"hours": 6, "user_id": user}).json()
    excluded = [b["excluded"] for b in body["buckets"][1:]]  # other tests' jobs share this server
    assert excluded == [0, 6, 6, 0, 0], excluded
    (mine,) = [j for j in body["jobs"] if j["job_id"] == job_id]
    assert mine["excluded"] == 12 and mine["excluded_by"] == ["Freeze"]
    assert 18 <= mine["runs"] <= 24  # hours 1, 4, 5 and what is left of this one
    for bad in ("0", "abc", "100001"):
        response = api.get("/api/scheduler/forecast", params={"peak_threshold": bad})
        assert response.status_code == 400 and "peak_threshold" in response.json()["detail"]


# --------------------------------------------------------------------------- the fast path
FAST_PATH_SCHEDULES = [
    {"minute": "0"},
    {"minute": "*/15"},
    {"minute": "30", "hour": "2"},
    {"minute": "30", "hour": "2", "dst_policy": {"spring_forward": "skip", "fall_back": "twice"}},
    {"minute": "*", "hour": "1-3", "day_of_week": "0,1-5"},
    {"second": "*/20", "minute": "*/7", "hour": "0-4"},
    {"minute": "0", "day_of_month": "last"},
]
FAST_PATH_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
FAST_PATH_STARTS = [  # the weeks around spring forward and fall back in Europe and the US, and a plain one
    datetime(2026, 3, 25, 7, 13, 2, tzinfo=UTC),
    datetime(2026, 10, 22, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 3, 5, 0, 0, tzinfo=UTC),
    datetime(2026, 4, 1, 12, 0, 1, tzinfo=UTC),
    datetime(2026, 10, 30, 3, 0, tzinfo=UTC),
]


@pytest.mark.parametrize("fields", FAST_PATH_SCHEDULES)
def test_the_arithmetic_count_gives_exactly_the_searched_times(fields):
    """fire_seconds_between reads clean days off the calendar: it must give the search's times,
    daylight-saving days included."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for zone in FAST_PATH_ZONES:
        schedule = cron.schedule_for({**cron.DEFAULTS, **fields, "timezone": zone})
        for start in FAST_PATH_STARTS:
            end = start + timedelta(days=14, seconds=917)
            searched = schedule.fire_times_between(start, end, 10**6)
            counted = schedule.fire_seconds_between(
                int((start - epoch).total_seconds()), int((end - epoch).total_seconds())
            )
            assert counted == [int((t - epoch).total_seconds()) for t in searched], (fields, zone, start)


def test_the_forecast_of_a_dst_week_matches_the_plain_search():
    """Per hour, the forecast's runs are the search's fire times of each job, on DST days too."""
    now = datetime(2026, 3, 26, 9, 41, 30, tzinfo=UTC)  # Europe changes on the 29th, 01:00 UTC
    docs = [
        job(f"j{i}-{zone}", timezone=zone, **fields)
        for i, fields in enumerate(FAST_PATH_SCHEDULES)
        for zone in FAST_PATH_ZONES
    ]
    result = forecast(docs, 168, now)
    expected = Counter()
    for doc in docs:
        for t in JobTimes(doc).raw_between(now, result["end"] - timedelta(microseconds=1), 10**6):
            expected[int((t - result["start"]) / timedelta(hours=1))] += 1
    assert [b["runs"] for b in result["buckets"]] == [expected[i] for i in range(168)]
    assert result["total_runs"] == sum(expected.values())


# --------------------------------------------------------------------------- daylight saving flags
SPRING_2027 = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # Berlin: 02:00 CET -> 03:00 CEST
FALL_2027 = datetime(2027, 10, 31, 1, 0, tzinfo=UTC)  # Berlin: 03:00 CEST -> 02:00 CET


def test_the_forecast_flags_the_runs_a_clock_change_shapes():
    """Per job whose zone changes its clock in the span: the change, what it does to the runs
    (the preview's own words), and how many runs it touches; jobs with the same schedule share it."""
    now = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    berlin = {"timezone": "Europe/Berlin"}
    docs = [
        job("hourly", minute="0", **berlin),
        job("hourly-twin", minute="0", **berlin),
        job("fixed", minute="30", hour="2", **berlin),
        job("fixed-skip", minute="30", hour="2", dst_policy={"spring_forward": "skip"}, **berlin),
        job("every-second", second="*", **berlin),
        job("utc", minute="0"),
        job("after-noon", minute="30", hour="12", **berlin),  # never near 02:00: untouched
    ]
    result = forecast(docs, 48, now)
    flags = {j["job_id"]: j.get("dst") for j in result["jobs"]}
    assert flags["hourly"] == [
        {
            "at": SPRING_2027,
            "effect": "shifted",
            "runs": 1,
            "note": "02:00:00 does not exist on 2027-03-28: runs shifted by the gap",
        }
    ]
    assert flags["hourly-twin"] is flags["hourly"]  # one computation for the group
    assert flags["fixed"] == [
        {
            "at": SPRING_2027,
            "effect": "at_change",
            "runs": 1,
            "note": "02:30:00 does not exist on 2027-03-28: runs at the change (03:00:00)",
        }
    ]
    assert [(f["effect"], f["runs"]) for f in flags["fixed-skip"]] == [("skipped", 1)]
    assert [(f["effect"], f["runs"]) for f in flags["every-second"]] == [("shifted", 3600)]  # the whole gap
    assert flags["utc"] is None and flags["after-noon"] is None
    # The same words as the job preview's, run for run.
    preview = job_preview(docs[2], JobTimes(docs[2]), 2, now)
    assert [(r["scheduled_at"], r.get("dst")) for r in preview["runs"]] == [
        (SPRING_2027, "at_change"),
        (datetime(2027, 3, 29, 0, 30, tzinfo=UTC), None),
    ]
    assert preview["runs"][0]["dst_note"] == flags["fixed"][0]["note"]


def test_the_forecast_flags_both_copies_of_a_repeated_hour_and_only_inside_its_span():
    now = datetime(2027, 10, 30, 12, 0, tzinfo=UTC)
    docs = [
        job("quarterly", minute="*/15", timezone="Europe/Berlin"),
        job("fixed", minute="30", hour="2", timezone="Europe/Berlin"),
    ]
    flags = {j["job_id"]: j["dst"] for j in forecast(docs, 24, now)["jobs"]}
    assert [(f["at"], f["effect"], f["runs"]) for f in flags["quarterly"]] == [
        (FALL_2027, "first copy", 4),
        (FALL_2027, "second copy", 4),
    ]
    assert [(f["effect"], f["runs"]) for f in flags["fixed"]] == [("skipped", 1), ("first copy", 1)]
    assert "second copy is skipped" in flags["fixed"][0]["note"]
    # A span that ends before the change: nothing to flag.
    assert all("dst" not in j for j in forecast(docs, 12, now)["jobs"])
