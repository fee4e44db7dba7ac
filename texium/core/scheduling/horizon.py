"""A job's runs over the coming days, and what a change of its definition does to them.

Jobs as code shows, per job of a plan, the runs an import adds or removes over the next 7
days, and warns when a job's usual run time is longer than the gap between its runs. Both
come from the planner's own JobTimes (H resolved, jitter added, dst_policy, start_at/end_at,
run_at), less the blackouts of the job's calendars and past its `max_runs`, so they are the
times the firing core will make, as the job preview (preview.py) lists them. Pure: the caller
reads the job, its calendars and its durations and passes the clock.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from texium.core.scheduling.preview import why_not_running
from texium.core.scheduling.windows import TICK, JobTimes

HORIZON = timedelta(days=7)
MAX_RUNS_COUNTED = 20_000  # runs walked per job and horizon (an every-30-seconds job reaches it)


@dataclass
class Runs:
    """The times a job starts in (after, until]; `capped`: MAX_RUNS_COUNTED reached, so the list
    ends before `until` (at its last time)."""

    times: list[datetime]
    capped: bool = False

    @property
    def end(self) -> datetime | None:
        return self.times[-1] if self.capped else None


def runs_between(doc: dict, times: JobTimes | None, after: datetime, until: datetime) -> Runs:
    """The runs the job document `doc` (its JobTimes built with its blackouts; None when its
    schedule cannot be built) starts after `after` up to `until`. As in the job preview, a
    saved job's list starts just before its `next_run_time` when that is due already, and a
    paused or disabled job has none."""
    if times is None or why_not_running(doc) is not None:
        return Runs([])
    due = doc.get("next_run_time")
    if isinstance(due, datetime):
        after = min(after, due - TICK)
    found = times.raw_between(after, until, MAX_RUNS_COUNTED)
    capped = len(found) >= MAX_RUNS_COUNTED
    if times.blackouts and found:
        spans = times.blackouts.spans_between(found[0], found[-1] + TICK)
        starts = [span[0] for span in spans]

        def excluded(moment: datetime) -> bool:
            i = bisect_right(starts, moment) - 1
            return i >= 0 and moment < spans[i][1]

        found = [moment for moment in found if not excluded(moment)]
    if doc.get("max_runs") is not None:
        left = max(0, doc["max_runs"] - (doc.get("run_count") or 0))
        if len(found) > left:
            found, capped = found[:left], False
    return Runs(found, capped)


@dataclass
class RunsChange:
    """How the runs of a job's stored definition and of its new one differ."""

    added: list[datetime] = field(default_factory=list)
    removed: list[datetime] = field(default_factory=list)
    until: datetime | None = None  # counted only up to here (a list was capped), else the horizon

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def compare_runs(old: Runs, new: Runs) -> RunsChange:
    """The runs `new` has that `old` has not, and the other way round (times that occur twice, as
    in a `fall_back: twice` hour, counted twice); a capped list limits both to where it ends."""
    ends = [runs.end for runs in (old, new) if runs.end is not None]
    until = min(ends) if ends else None

    def counted(runs: Runs) -> Counter:
        return Counter(t for t in runs.times if until is None or t <= until)

    before, after = counted(old), counted(new)
    return RunsChange(sorted((after - before).elements()), sorted((before - after).elements()), until)


def shortest_gap(times: list[datetime]) -> timedelta | None:
    """The shortest time between two runs in a row (the job's interval), or None for fewer than two."""
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False) if later > earlier]
    return min(gaps) if gaps else None


def p95(values: list[float]) -> float | None:
    """The 95th percentile by nearest rank (a value that occurred), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
