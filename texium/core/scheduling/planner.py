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

from texium.core.scheduling.occurrences import SCHEDULE, missed_key, new_record, run_key
from texium.core.scheduling.windows import NO_BLACKOUTS, TICK, Blackouts, JobTimes, last_fire_at_or_before
from texium.core.timeutil import to_iso

log = logging.getLogger("texium.scheduler")
MISSED_COUNT_LIMIT = 10_000  # occurrences counted one by one in a missed record; beyond: "more than"


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


@dataclass
class Plan:
    """What one pass decided for one job: the occurrences to run, the span missed, and the
    job's new fields. `claim()` is what the job document keeps of it (see claims.py), so that
    any node can make the same records again."""

    job: dict
    runs: list[datetime] = field(default_factory=list)  # occurrences to hold and run (at most one)
    missed: dict | None = None  # {first, last, count, exact, latest, at}: the occurrences missed
    advance: dict = field(default_factory=dict)  # the job's new fields, set by compare-and-set
    excluded: int = 0  # occurrences passed over as inside a blackout (added to the job's excluded_runs)
    events: list[tuple[str, str]] = field(default_factory=list)  # (audit event, description) once claimed

    def claim(self) -> dict | None:
        if not self.runs and not self.missed:
            return None
        missed = self.missed and {k: to_iso(v) if isinstance(v, datetime) else v for k, v in self.missed.items()}
        return {"runs": [to_iso(t) for t in self.runs], "missed": missed}


class Planner:
    def __init__(self, misfire_grace_time: float):
        self._grace = timedelta(seconds=misfire_grace_time)

    def plan(self, doc: dict, now: datetime, blackouts: Blackouts = NO_BLACKOUTS) -> Plan:
        """`doc` is due by the pass's horizon; `now` is the pass's clock; `blackouts` those of
        the calendars the job excludes (their occurrences are neither run nor missed)."""
        first = doc.get("next_run_time")
        try:
            times = JobTimes(doc, blackouts)
        except Exception as exc:
            reason = getattr(exc, "detail", None) or str(exc)
            log.error("Job %s (%s) cannot be scheduled and stops firing: %s", doc["_id"], doc.get("name"), reason)
            return Plan(doc, advance={"next_run_time": None, "schedule_error": reason})
        if not isinstance(first, datetime):  # edited by hand: start again from now
            log.warning("Job %s: next_run_time %r is not a time; it is recomputed", doc["_id"], first)
            return Plan(doc, advance={"next_run_time": times.next_after(now)})
        if first > now:  # due within the lead time: its one occurrence, held before it is due
            plan = Plan(doc)
            if times.excluded_by(first) is None and times.fires_at(first):
                plan.runs.append(first)
                return self._limited(plan, times, first)
            return self._limited(plan, times, first - TICK)  # a calendar or window changed since
        after = times.raw_between(first, now, MISSED_COUNT_LIMIT + 1)
        following = times.raw_between(after[-1], now, 1) if len(after) == MISSED_COUNT_LIMIT + 1 else []
        exact = not following
        due = [first, *after] if times.fires_at(first) else after
        if exact:
            kept = [t for t in due if times.excluded_by(t) is None]
            plan = Plan(doc, excluded=len(due) - len(kept))
            if not kept:
                return self._limited(plan, times, now)
            latest, missed = kept[-1], kept[:-1]
        else:  # a long outage: count no further, but find the latest and the one before it
            plan = Plan(doc)
            latest = last_fire_at_or_before(times.cron, after[-1], now) if times.cron else after[-1]
            missed = [first, last_fire_at_or_before(times.cron, first, latest - TICK)] if times.cron else [first]
        if now - latest <= self._grace:
            plan.runs.append(latest)
        else:
            missed.append(latest)
        if missed:
            count = len(missed) if exact else MISSED_COUNT_LIMIT
            plan.missed = {"first": missed[0], "last": missed[-1], "count": count, "exact": exact}
            plan.missed.update(latest=latest, at=now)
        return self._limited(plan, times, now)

    @staticmethod
    def _limited(plan: Plan, times: JobTimes, after: datetime) -> Plan:
        """The plan's next run time after `after`, with the occurrences skipped as excluded
        counted, and `max_runs`: the claim of the job's last run disables it, saying why."""
        following, excluded = times.next_counting(after)
        plan.excluded += excluded
        plan.advance["next_run_time"] = following
        doc = plan.job
        if plan.runs:
            done = int(doc.get("run_count") or 0) + len(plan.runs)
            plan.advance["run_count"] = done
            limit = doc.get("max_runs")
            if isinstance(limit, int) and done >= limit:
                reason = f"max_runs reached: {done} run{'s' if done != 1 else ''} of at most {limit}"
                plan.advance.update(
                    next_run_time=None, is_enabled=False, disabled_reason=reason, final_run_at=plan.runs[-1]
                )
                plan.events.append(("disabled", f"Job disabled by the scheduler: {reason}"))
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
