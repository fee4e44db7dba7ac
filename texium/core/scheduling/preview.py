"""A job's next runs as the firing core will really make them, every rule applied.

Built on the planner's own JobTimes (the job's schedule with `H` resolved, jitter added and its
`dst_policy`, inside `start_at`..`end_at`, less its calendars' blackouts), so the first run listed
is the job's `next_run_time`. Pure: the caller reads the job and its blackouts and passes the
clock, so the job page, the forecast and jobs as code can all call it.

What a run lists: `scheduled_at` (UTC), `local_time` (in the job's zone), `delay_seconds` (its
jitter, when the job has any), `dst` and `dst_note` when a clock change shaped it. Entries that do
not run are listed too, and do not count toward `count`: occurrences inside a blackout
(`excluded_by`: the calendar's name; at most `count` of one blackout stretch, the rest only
counted in `excluded_not_listed`) and times the job's `dst_policy` skips (`dst: "skipped"`;
`scheduled_at` null for a wall time that does not exist). `max_runs` ends the list after the
runs left (`max_runs - run_count`), `end_at` after the last time before it; `ends` says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from texium.core.scheduling import cron
from texium.core.scheduling.clockchanges import clock_marks
from texium.core.scheduling.windows import EXCLUDED_COUNT_LIMIT, MAX_STRETCHES, TICK, JobTimes

MAX_PREVIEW = 1000  # runs one preview lists at most


def _base_and_delay(schedule, moment: datetime) -> tuple[datetime, timedelta]:
    """The undelayed occurrence behind a (maybe jittered, maybe one-off) time, and its delay."""
    origin = getattr(schedule, "origin", None) if schedule is not None else None
    if origin is None:
        return moment, timedelta(0)
    base = origin(moment)
    return base, moment - base


def why_not_running(doc: dict) -> str | None:
    """Why the job runs nothing now (disabled, paused, a schedule that cannot be built), or None."""
    if not doc.get("is_enabled", True):
        return doc.get("disabled_reason") or "The job is disabled"
    if doc.get("is_paused"):
        reason = "The job is paused"
        if doc.get("pause_note"):
            reason += f": {doc['pause_note']}"
        until = doc.get("paused_until")
        if isinstance(until, datetime):
            reason += f" (until {until.astimezone(UTC).isoformat()})"
        return reason
    if doc.get("schedule_error"):
        return f"The job's schedule cannot be built: {doc['schedule_error']}"
    return None


def job_preview(doc: dict, times: JobTimes, count: int, now: datetime) -> dict:
    """The next `count` runs of the job document `doc` (with `times` built from it and its
    blackouts) after `now`, or after just before its `next_run_time` when that is already due.
    A paused or disabled job has none, and `reason` says why."""
    answer = {
        "timezone": doc.get("timezone") or "UTC",
        "resolved": {},
        "jitter_seconds": doc.get("jitter_seconds") or 0,
        "dst_policy": None,
        "runs": [],
        "excluded_not_listed": 0,
        "ends": None,
        "reason": why_not_running(doc),
    }
    if answer["reason"] is not None:
        return answer
    zone, schedule = ZoneInfo(answer["timezone"]), times.cron
    base_schedule = getattr(schedule, "base", schedule)
    if base_schedule is not None:  # a one-off (`run_at`) has neither
        answer["resolved"] = cron.hashed(doc, str(doc["_id"]))
        answer["dst_policy"] = base_schedule.dst_policy
    due = doc.get("next_run_time")
    after = min(now, due - TICK) if isinstance(due, datetime) else now
    left = None
    if doc.get("max_runs") is not None:
        left = max(0, doc["max_runs"] - (doc.get("run_count") or 0))
    runs, counted, excluded_in_stretch, listed_excluded, previous = answer["runs"], 0, 0, 0, after

    def entry(moment: datetime | None, **fields) -> dict:
        shown = {"scheduled_at": moment, "local_time": moment.astimezone(zone).isoformat() if moment else None}
        return shown | fields

    for _ in range(MAX_PREVIEW + MAX_STRETCHES):
        if counted >= count:
            break
        if left is not None and counted >= left:
            answer["ends"] = f"max_runs reached: {doc['max_runs']} runs of at most {doc['max_runs']}"
            break
        moment = times.next_in_window(after)
        if moment is None:
            ends = times.end_at is not None and (times.run_at is None or times.run_at > times.end_at)
            answer["ends"] = "end_at reached" if ends else "no later occurrence"
            break
        base, delay = _base_and_delay(schedule, moment)
        fields: dict = {}
        if base_schedule is not None:
            for mark in clock_marks(base_schedule, previous, base, fires=[base]):
                shown = {"dst": mark.effect, "dst_note": mark.note}
                if mark.wall is not None:  # a skipped wall time: listed on its own
                    runs.append(entry(mark.instant, **shown, wall_time=mark.wall.isoformat()))
                else:
                    fields.update(shown)
        if answer["jitter_seconds"]:
            fields["delay_seconds"] = int(delay.total_seconds())
        previous = base
        blackout = times.blackouts.covering(moment) if times.blackouts else None
        if blackout is None:
            excluded_in_stretch = 0
            runs.append(entry(moment, **fields))
            counted += 1
            after = moment
        elif excluded_in_stretch < count and listed_excluded < MAX_PREVIEW:
            runs.append(entry(moment, excluded_by=blackout[1], **fields))
            excluded_in_stretch, listed_excluded = excluded_in_stretch + 1, listed_excluded + 1
            after = moment
        else:  # the rest of this stretch: counted, then on past its end
            rest = times.raw_between(moment - TICK, blackout[0] - TICK, EXCLUDED_COUNT_LIMIT)
            answer["excluded_not_listed"] += len(rest)
            after = max(rest[-1] if rest else moment, blackout[0] - TICK)
            previous = _base_and_delay(schedule, rest[-1])[0] if rest else previous
    else:
        answer["ends"] = "no time outside the calendars' blackouts found"
    return answer
