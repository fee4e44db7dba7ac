"""A job's catch-up policy: which of the occurrences a late scheduler finds due still run.

The scheduler is late when the server was down, the store unreachable or the node overloaded.
`catchup_policy` says what then happens to the occurrences it finds due:

- `latest` (the default): the latest one runs if it is inside the window; every earlier one is
  recorded `missed` (one record for the span);
- `none`: nothing runs late: an occurrence reached more than ON_TIME late is `missed`;
- `all`: every occurrence inside the window runs, oldest first, through the job's overlap
  policy; the older ones are `missed`. At most CATCHUP_RUN_LIMIT per pass (the newest), so an
  outage of an every-second job cannot make a million records: the rest are `missed`.

The window is the job's `catchup_window_seconds`, by default the server's misfire grace time.
Pure: the planner (what a pass claims) and dispatch (what may still start) ask the same rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta

LATEST, NONE, ALL = "latest", "none", "all"
CATCHUP_RUN_LIMIT = 1000  # catch-up runs one pass makes for one job; older ones are missed
ON_TIME = timedelta(seconds=5)  # with `none`: a pass or a start this late is not catching up


def policy_of(job: dict) -> str:
    policy = job.get("catchup_policy")
    return policy if policy in (LATEST, NONE, ALL) else LATEST


def window_of(job: dict, grace: timedelta) -> timedelta:
    """How late an occurrence may run: the job's `catchup_window_seconds`, else `grace`."""
    seconds = job.get("catchup_window_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        return timedelta(seconds=seconds)
    return grace


def allowed_lateness(job: dict, grace: timedelta, queued: bool = False) -> timedelta:
    """How late an occurrence of `job` may still start. An occurrence the overlap policy queued
    was on time when it was refused: it waits up to the window whatever the policy."""
    window = window_of(job, grace)
    if policy_of(job) == NONE and not queued:
        return min(window, ON_TIME)
    return window


def describe_window(job: dict) -> str:
    if isinstance(job.get("catchup_window_seconds"), int):
        return f"the job's catchup_window_seconds ({job['catchup_window_seconds']} s)"
    return "the misfire grace time"


def newest(times, floor: datetime, now: datetime, count: int) -> list[datetime]:
    """The last `count` occurrences t of `times` (a JobTimes) with floor < t <= now, found
    without listing every one of a long outage: look back from `now` in growing spans until
    `count` are inside, then walk forward over them in steps of a few thousand."""
    span = timedelta(seconds=1)
    while True:
        probe = max(floor, now - span)
        if probe == floor or len(times.raw_between(probe, now, count)) >= count:
            break
        span *= 16
    step = 8 * count
    found = times.raw_between(probe, now, step)
    while len(found) == step:
        found = times.raw_between(found[-count - 1], now, step)
    return found[-count:]
