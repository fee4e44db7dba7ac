"""What a clock change (daylight saving) does to a schedule's runs, in the form the job preview
and the forecast show.

One detection, the schedule's own (cron.CronSchedule.dst_effect and dst_skipped, which apply
the job's `dst_policy`): the preview asks it run by run (clock_marks), the forecast once per
schedule and change in its span (clock_flags), grouped by effect. The effects: `shifted`,
`at_change` (a wall time that does not exist, run later), `skipped` (a wall time the policy
does not run), `first copy` and `second copy` (a wall time that happens twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from texium.core.scheduling import cron

_TICK = timedelta(seconds=1)
MAX_MARKED = 10_000  # fire times looked at around one change (an every-second job over an hour's gap: 7,200)


@dataclass(frozen=True)
class ClockMark:
    """One run (or wall time) a clock change shaped. `instant` is None for a skipped wall time
    that does not exist; `wall` is given for skipped ones."""

    instant: datetime | None
    effect: str
    note: str
    wall: datetime | None = None


def clock_marks(schedule, start: datetime, end: datetime, fires: list[datetime] | None = None) -> list[ClockMark]:
    """The marks of the wall times skipped in (start, end], then of the fire times in it that a
    change shaped. `fires`: those fire times when the caller has them (the preview: its run)."""
    marks = [ClockMark(instant, "skipped", note, wall) for instant, wall, note in schedule.dst_skipped(start, end)]
    if fires is None:
        fires = schedule.fire_times_between(start, end, MAX_MARKED)
    for fire in fires:
        effect = schedule.dst_effect(fire)
        if effect is not None:
            marks.append(ClockMark(fire, *effect))
    return marks


def clock_flags(schedule, after: datetime, until: datetime) -> list[dict]:
    """Per offset change of the schedule's zone in (after, until] and per effect on the runs
    in that span: {at (the change instant), effect, runs, note (the first run's)}. Only the
    fire times within the change's own size of it can be shaped, so only those are looked at;
    a zone without a change in the span costs two offsets a day."""
    flags: dict[tuple, dict] = {}
    for at, before, offset in cron.offset_changes(schedule.zone_name, after, until):
        reach = abs(offset - before) + _TICK
        for mark in clock_marks(schedule, max(after, at - reach), min(until, at + reach)):
            flag = flags.setdefault((at, mark.effect), {"at": at, "effect": mark.effect, "runs": 0, "note": mark.note})
            flag["runs"] += 1
    return list(flags.values())
