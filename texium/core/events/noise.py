"""The noise rules of a job's alerts: which changes of its alert state are worth a message.

A pure state machine over the job's alert fields, so alerts.py can move them with one
compare-and-set (two nodes share them; nothing here is kept in memory):

- `alert_state` (`ok`, `failing`, `missed`): the health the last outcome says (as before).
- `alert_streak`, `alert_streak_started_at`: failed outcomes in a row and when the first ended.
  `failure`/`timeout` is sent when the streak reaches the job's `alert_after_failures` (default 1),
  once per streak (`alert_raised`); `recovery` only ends a streak that was announced, and says
  how many runs failed and for how long.
- `alert_sent_at`: when the last alert was decided; with `realert_every_seconds` a job still
  failing sends `still_failing` each time that long has passed, with no new run needed.
- `alert_changes`, `alert_flapping`: the times (ISO texts) of the recent changes of state (at most
  `flap_threshold` + 1, inside `flap_window_seconds`). More than `flap_threshold` changes in the
  window send one `flapping` alert; then failures and recoveries are held until no change
  happened for a whole window, when one message (`recovery` or `failure`) says the state then.
- `alert_due_at`: when a job needs a look with no new outcome (a re-alert, the end of
  flapping); null otherwise. An indexed field: the periodic check reads only the due jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from texium.core.timeutil import as_utc, parse_iso, to_iso

FAILED = frozenset({"failed", "abandoned", "timeout"})
_MOVES = {  # status -> (new state, its event: sent only when the state was another one)
    "failed": ("failing", "failure"),
    "abandoned": ("failing", "failure"),
    "timeout": ("failing", "timeout"),
    "missed": ("missed", "missed"),
}
MOVING = frozenset({"completed", *_MOVES})
HELD_WHILE_FLAPPING = frozenset({"failure", "timeout", "recovery"})
DEFAULT_FLAP_WINDOW = 3600  # seconds, when a job sets flap_threshold but no flap_window_seconds
# The fields this module moves; the compare-and-set expects them as read.
STATE_FIELDS = (
    "alert_state",
    "alert_streak",
    "alert_streak_started_at",
    "alert_raised",
    "alert_sent_at",
    "alert_changes",
    "alert_flapping",
    "alert_due_at",
)


def transition(state: str | None, status: str) -> tuple[str, str | None]:
    """The job's new alert state after an execution ended with `status`, and the event a plain
    change of state sends (before the noise rules)."""
    state = state or "ok"
    if status == "completed":
        return "ok", "recovery" if state == "failing" else None
    if status in _MOVES:
        new, event = _MOVES[status]
        return new, None if state == new else event
    return state, None  # cancelled, skipped, retried, still running: says nothing about health


@dataclass(frozen=True)
class Rules:
    """A job's noise settings (its fields; missing or null: today's behaviour)."""

    after_failures: int = 1
    realert_seconds: int = 0
    flap_threshold: int = 0
    flap_window_seconds: int = DEFAULT_FLAP_WINDOW

    @classmethod
    def of(cls, job: dict) -> Rules:
        return cls(
            after_failures=max(1, int(job.get("alert_after_failures") or 1)),
            realert_seconds=max(0, int(job.get("realert_every_seconds") or 0)),
            flap_threshold=max(0, int(job.get("flap_threshold") or 0)),
            flap_window_seconds=max(1, int(job.get("flap_window_seconds") or DEFAULT_FLAP_WINDOW)),
        )


@dataclass
class Step:
    """What one outcome or one due check does: the alert fields to write, the event to send
    (None: nothing), and the facts its message adds (messages.facts shows them)."""

    fields: dict
    event: str | None = None
    facts: dict = field(default_factory=dict)


def _time(value: Any) -> datetime | None:
    """A stored time (a datetime, or the ISO text alert_changes keeps: the stores keep no times
    inside lists)."""
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return as_utc(value) if isinstance(value, datetime) else None


class _State:
    """The job's alert fields as read, with the defaults of a job that has none yet."""

    def __init__(self, job: dict):
        self.state = job.get("alert_state") or "ok"
        self.streak = int(job.get("alert_streak") or 0)
        self.since = _time(job.get("alert_streak_started_at"))
        # A job failing before these rules existed (or kept without notify) was announced then.
        self.raised = bool(job.get("alert_raised", self.state == "failing"))
        self.sent_at = _time(job.get("alert_sent_at"))
        self.changes = sorted(t for t in (_time(v) for v in job.get("alert_changes") or ()) if t)
        self.flapping = bool(job.get("alert_flapping"))

    def streak_facts(self, now: datetime) -> dict:
        facts = {"failure_streak": self.streak}
        if self.since is not None:
            facts["failing_for_seconds"] = max(0, int((now - self.since).total_seconds()))
        return facts

    def fields(self, rules: Rules) -> dict:
        due = []
        if self.flapping and self.changes:
            due.append(self.changes[-1] + timedelta(seconds=rules.flap_window_seconds))
        elif self.raised and self.state == "failing" and rules.realert_seconds and self.sent_at is not None:
            due.append(self.sent_at + timedelta(seconds=rules.realert_seconds))
        return {
            "alert_state": self.state,
            "alert_streak": self.streak,
            "alert_streak_started_at": self.since,
            "alert_raised": self.raised,
            "alert_sent_at": self.sent_at,
            "alert_changes": [to_iso(t) for t in self.changes],
            "alert_flapping": self.flapping,
            "alert_due_at": min(due) if due else None,
        }


def _stable_event(state: _State) -> tuple[str | None, dict]:
    """The event that says the state of a job that stopped flapping, and its facts."""
    state.flapping, state.changes = False, []
    state.raised = state.state == "failing"
    event = {"ok": "recovery", "failing": "failure", "missed": "missed"}.get(state.state)
    return event, {"alert_note": f"no longer flapping: the job is {state.state} and stable"}


def _flap_ended(state: _State, rules: Rules, now: datetime) -> bool:
    window = timedelta(seconds=rules.flap_window_seconds)
    return state.flapping and (not state.changes or state.changes[-1] + window <= now)


def advance(job: dict, status: str, at: datetime, now: datetime) -> Step:
    """The alert fields after an outcome with `status` that ended `at` (now: the moment of the
    decision, kept as alert_sent_at when an event is sent)."""
    rules, s = Rules.of(job), _State(job)
    before = s.state
    new_state, plain = transition(before, status)
    event, facts = None, {}
    stable = _flap_ended(s, rules, at)
    if stable:
        s.flapping, s.changes = False, []
    if status in FAILED:
        if before != "failing":
            s.streak, s.since, s.raised = 0, at, False
        s.streak += 1
        if not s.raised and s.streak >= rules.after_failures:
            event, s.raised = ("timeout" if status == "timeout" else "failure"), True
            facts = {"failure_streak": s.streak} if rules.after_failures > 1 else {}
    elif status == "completed":
        if s.raised and before == "failing":
            event, facts = "recovery", s.streak_facts(at)
        s.streak, s.since, s.raised = 0, None, False
    elif status == "missed":
        event = plain
        s.streak, s.since, s.raised = 0, None, False
    s.state = new_state
    if rules.flap_threshold:
        window = timedelta(seconds=rules.flap_window_seconds)
        recent = [t for t in s.changes if t + window > at] + ([at] if new_state != before else [])
        s.changes = recent[-(rules.flap_threshold + 1) :]
        if not s.flapping and len(s.changes) > rules.flap_threshold:
            s.flapping, event = True, "flapping"
            facts = {"alert_note": f"{len(s.changes)} changes of state in {window_words(window)}; now {new_state}"}
        elif s.flapping and event in HELD_WHILE_FLAPPING:
            event, facts = None, {}
    elif s.flapping:  # the rule was switched off: flapping ends with this outcome
        stable, s.flapping, s.changes = True, False, []
    if stable and not s.flapping and event is None:
        event, facts = _stable_event(s)
    if event is not None:
        s.sent_at = now
    return Step(s.fields(rules), event, facts)


def tick(job: dict, now: datetime) -> Step:
    """What a job whose alert_due_at has come sends with no new outcome: the end of flapping,
    or `still_failing` again (nothing when neither is due any more)."""
    rules, s = Rules.of(job), _State(job)
    event, facts = None, {}
    if s.flapping:
        if _flap_ended(s, rules, now) or not rules.flap_threshold:
            event, facts = _stable_event(s)
    elif (
        s.raised
        and s.state == "failing"
        and rules.realert_seconds
        and s.sent_at is not None
        and s.sent_at + timedelta(seconds=rules.realert_seconds) <= now
    ):
        event, facts = "still_failing", s.streak_facts(now)
    if event is not None:
        s.sent_at = now
    return Step(s.fields(rules), event, facts)


def mute_reason(job: dict, now: datetime, calendars: Any = None) -> str | None:
    """Why the job's alerts are muted now (recorded, not sent), or None: its `mute_until` is
    ahead, or a calendar of its `mute_calendars` (a maintenance window) covers now.
    `calendars`: the firing core's CalendarReader (None: calendars are not looked at)."""
    until = _time(job.get("mute_until"))
    if until is not None and until > now:
        return f"muted until {to_iso(until)}"
    ids = [c for c in job.get("mute_calendars") or () if isinstance(c, str)]
    if ids and calendars is not None:
        covering = calendars.blackouts_named(ids).covering(now)
        if covering is not None:
            return f"maintenance window {covering[1]} until {to_iso(covering[0])}"
    return None


def window_words(span: timedelta) -> str:
    return duration_words(int(span.total_seconds()))


def duration_words(seconds: int) -> str:
    """3725 -> '1 h 2 min 5 s' (a message's duration, to the second)."""
    seconds = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return " ".join(parts)
