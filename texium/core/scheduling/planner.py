"""What a due job document asks for: its occurrences to run, the ones missed, its next run time.

Pure: no store access, so a pass plans every due job before its short write transaction. A
document that cannot be planned (a schedule that no longer builds, a `next_run_time` edited
by hand into something that is not a time) is answered with the fix, never with an exception
that would stop the pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from texium.core.scheduling.jobstore import schedule_for
from texium.core.scheduling.occurrences import SCHEDULE, missed_key, new_record, run_key
from texium.core.timeutil import to_iso

log = logging.getLogger("texium.scheduler")
MISSED_COUNT_LIMIT = 10_000  # occurrences counted one by one in a missed record; beyond: "more than"


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def last_fire_at_or_before(schedule, floor: datetime, now: datetime) -> datetime:
    """The last fire time in (floor, now], or `floor` if there is none; looks back from `now` in
    growing windows so a long outage of a frequent job costs a few steps, not millions."""
    span = 1.0
    while True:
        probe = max(floor, now - timedelta(seconds=span))
        fire = schedule.next_after(probe)
        if fire is not None and fire <= now:
            while True:
                following = schedule.next_after(fire)
                if following is None or following > now:
                    return fire
                fire = following
        if probe == floor:
            return floor
        span *= 16


@dataclass
class Plan:
    """What one pass decided for one job: the occurrences to run, the span missed, and the
    job's new fields. `claim()` is what the job document keeps of it (see claims.py), so that
    any node can make the same records again."""

    job: dict
    runs: list[datetime] = field(default_factory=list)  # occurrences to hold and run (at most one)
    missed: dict | None = None  # {first, last, count, exact, latest, at}: the occurrences missed
    advance: dict = field(default_factory=dict)  # the job's new fields, set by compare-and-set

    def claim(self) -> dict | None:
        if not self.runs and not self.missed:
            return None
        missed = self.missed and {k: to_iso(v) if isinstance(v, datetime) else v for k, v in self.missed.items()}
        return {"runs": [to_iso(t) for t in self.runs], "missed": missed}


class Planner:
    def __init__(self, misfire_grace_time: float):
        self._grace = timedelta(seconds=misfire_grace_time)

    def plan(self, doc: dict, now: datetime) -> Plan:
        """`doc` is due by the pass's horizon; `now` is the pass's clock."""
        first = doc.get("next_run_time")
        try:
            schedule = schedule_for(doc)
        except Exception as exc:
            reason = getattr(exc, "detail", None) or str(exc)
            log.error("Job %s (%s) cannot be scheduled and stops firing: %s", doc["_id"], doc.get("name"), reason)
            return Plan(doc, advance={"next_run_time": None, "schedule_error": reason})
        if not isinstance(first, datetime):  # edited by hand: start again from now
            log.warning("Job %s: next_run_time %r is not a time; it is recomputed", doc["_id"], first)
            return Plan(doc, advance={"next_run_time": schedule.next_after(now)})
        if first > now:  # due within the lead time: its one occurrence, held before it is due
            return Plan(doc, runs=[first], advance={"next_run_time": schedule.next_after(first)})
        after = schedule.fire_times_between(first, now, MISSED_COUNT_LIMIT + 1)
        following = schedule.next_after(after[-1]) if len(after) == MISSED_COUNT_LIMIT + 1 else None
        exact = following is None or following > now
        if exact:
            times = [first, *after]
            latest, missed = times[-1], times[:-1]
        else:  # a long outage: count no further, but find the latest and the one before it
            latest = last_fire_at_or_before(schedule, after[-1], now)
            missed = [first, last_fire_at_or_before(schedule, first, latest - timedelta(microseconds=1))]
        plan = Plan(doc, advance={"next_run_time": schedule.next_after(now)})
        if now - latest <= self._grace:
            plan.runs.append(latest)
        else:
            missed.append(latest)
        if missed:
            count = len(missed) if exact else MISSED_COUNT_LIMIT
            plan.missed = {"first": missed[0], "last": missed[-1], "count": count, "exact": exact}
            plan.missed.update(latest=latest, at=now)
        return plan


def records_of(job: dict, claim: dict, holder) -> list[dict]:
    """The records a claim stands for: the same keys whoever makes them, whenever."""
    records = [
        new_record(job, "scheduled", at, SCHEDULE, holder, run_key(job["_id"], at))
        for at in map(datetime.fromisoformat, claim.get("runs") or [])
    ]
    missed = claim.get("missed")
    if missed:
        span = {
            k: datetime.fromisoformat(v) if k in ("first", "last", "latest", "at") else v for k, v in missed.items()
        }
        records.append(_missed_record(job, span, holder))
    return records


def _missed_record(job: dict, span: dict, holder) -> dict:
    first, last, latest, now, count = span["first"], span["last"], span["latest"], span["at"], span["count"]
    how_many = f"{count} run{'s' if count != 1 else ''}" if span["exact"] else f"more than {count} runs"
    if last == latest:
        why = f"even the latest was {_seconds(now - latest)} s late, past the misfire grace time"
    else:
        why = f"the scheduler was {_seconds(now - first)} s late; only the latest due run ({to_iso(latest)}) ran"
    between = to_iso(first) if first == last else f"{to_iso(first)} to {to_iso(last)}"
    return new_record(
        job,
        "missed",
        first,
        SCHEDULE,
        holder,
        missed_key(job["_id"], first),
        completed_at=now,
        error=f"Missed {how_many} ({between}): {why} (server down, store unavailable or overloaded).",
        missed_count=count,
        missed_until=last,
        late_seconds=_seconds(now - first),
    )
