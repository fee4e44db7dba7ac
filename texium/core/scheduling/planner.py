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

from texium.core.scheduling.catchup import (
    ALL,
    CATCHUP_RUN_LIMIT,
    NONE,
    ON_TIME,
    allowed_lateness,
    describe_window,
    newest,
    policy_of,
)
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
    runs: list[datetime] = field(default_factory=list)  # occurrences to hold and run, oldest first
    catchup: int = 0  # how many of the first `runs` are catch-up runs (older than the latest due one)
    missed: dict | None = None  # {first, last, count, exact, latest, at}: the occurrences missed
    advance: dict = field(default_factory=dict)  # the job's new fields, set by compare-and-set
    excluded: int = 0  # occurrences passed over as inside a blackout (added to the job's excluded_runs)
    events: list[tuple[str, str]] = field(default_factory=list)  # (audit event, description) once claimed

    def claim(self) -> dict | None:
        if not self.runs and not self.missed:
            return None
        missed = self.missed and {k: to_iso(v) if isinstance(v, datetime) else v for k, v in self.missed.items()}
        claim = {"runs": [to_iso(t) for t in self.runs], "missed": missed}
        if self.catchup:
            claim["catchup"] = self.catchup
        return claim


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
        policy, lateness = policy_of(doc), allowed_lateness(doc, self._grace)
        if exact:
            kept = [t for t in due if times.excluded_by(t) is None]
            plan = Plan(doc, excluded=len(due) - len(kept))
            if not kept:
                return self._limited(plan, times, now)
            latest = kept[-1]
            late_enough = [t for t in kept if now - t <= lateness]
            runs = late_enough[-CATCHUP_RUN_LIMIT:] if policy == ALL else late_enough[-1:]
            missed = kept[: len(kept) - len(runs)]
        else:  # a long outage: count no further, but find the latest and the ones it needs
            plan = Plan(doc)
            latest = last_fire_at_or_before(times.cron, after[-1], now) if times.cron else after[-1]
            if policy == ALL:
                floor = max(first - TICK, now - lateness - TICK)
                inside = newest(times, floor, now, CATCHUP_RUN_LIMIT)
                runs = [t for t in inside if times.excluded_by(t) is None]
                plan.excluded += len(inside) - len(runs)
            else:
                runs = [latest] if now - latest <= lateness else []
            before = runs[0] if runs else latest + TICK
            missed = [first, last_fire_at_or_before(times.cron, first, before - TICK)] if times.cron else [first]
        plan.runs = runs
        plan.catchup = max(0, len(runs) - 1)  # the ones `latest` would have recorded missed
        if missed:
            count = len(missed) if exact else MISSED_COUNT_LIMIT
            plan.missed = {"first": missed[0], "last": missed[-1], "count": count, "exact": exact}
            why = self._why_missed(doc, runs, missed[0], latest, now)
            plan.missed.update(latest=latest, at=now, ran=len(runs), why=why)
        return self._limited(plan, times, now)

    def _why_missed(self, doc: dict, runs: list[datetime], first: datetime, latest: datetime, now: datetime) -> str:
        """Why the occurrences of a missed record did not run, in words (kept in the claim)."""
        policy, window = policy_of(doc), describe_window(doc)
        if policy == NONE:
            return f"the job's catchup_policy is none: an occurrence more than {_seconds(ON_TIME)} s late is not run"
        if not runs:
            return f"even the latest was {_seconds(now - latest)} s late, past {window}"
        late = f"the scheduler was {_seconds(now - first)} s late"
        if policy == ALL:
            capped = f", at most {CATCHUP_RUN_LIMIT} per pass" if len(runs) == CATCHUP_RUN_LIMIT else ""
            return f"{late}; catchup_policy all ran the {len(runs)} inside {window}{capped}, from {to_iso(runs[0])}"
        return f"{late}; only the latest due run ({to_iso(latest)}) ran"

    @staticmethod
    def _limited(plan: Plan, times: JobTimes, after: datetime) -> Plan:
        """The plan's next run time after `after`, with the occurrences skipped as excluded
        counted, and `max_runs`: the claim of the job's last run disables it, saying why."""
        following, excluded = times.next_counting(after)
        plan.excluded += excluded
        plan.advance["next_run_time"] = following
        doc = plan.job
        if plan.runs:
            limit = doc.get("max_runs")
            left = limit - int(doc.get("run_count") or 0) if isinstance(limit, int) else len(plan.runs)
            if 0 < left < len(plan.runs):  # catch-up runs beyond max_runs: the oldest are the job's last
                plan.runs = plan.runs[:left]
                plan.catchup = min(plan.catchup, left)
            done = int(doc.get("run_count") or 0) + len(plan.runs)
            plan.advance["run_count"] = done
            if isinstance(limit, int) and done >= limit:
                reason = f"max_runs reached: {done} run{'s' if done != 1 else ''} of at most {limit}"
                plan.advance.update(
                    next_run_time=None, is_enabled=False, disabled_reason=reason, final_run_at=plan.runs[-1]
                )
                plan.events.append(("disabled", f"Job disabled by the scheduler: {reason}"))
        return plan


def records_of(job: dict, claim: dict, holder) -> list[dict]:
    """The records a claim stands for: the same keys whoever makes them, whenever."""
    catchup, trigger = int(claim.get("catchup") or 0), claim.get("trigger") or SCHEDULE
    extra = {"backfill_id": claim["backfill_id"]} if claim.get("backfill_id") else {}  # see backfill.py
    records = [
        new_record(job, "scheduled", at, trigger, holder, run_key(job["_id"], at), catchup=index < catchup, **extra)
        for index, at in enumerate(map(datetime.fromisoformat, claim.get("runs") or []))
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
    why = span.get("why")  # claims written before catch-up policies have none: the latest policy's words
    if not why and last == latest:
        why = f"even the latest was {_seconds(now - latest)} s late, past the misfire grace time"
    elif not why:
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
