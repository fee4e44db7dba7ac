"""How Texium counts executions: the one definition of every execution figure.

GET /api/scheduler/stats, ReportGenerationJob and the job document's `total_executions` counter
all use the definitions below, so the same data always gives the same numbers.

Execution statuses, in groups:

* active: `scheduled` (recorded, waiting for a worker) and `running`;
* ended well: `completed`;
* ended badly: `failed`, `abandoned` (the server stopped before the run finished), `timeout`
  (ran past its time limit) and `cancelled` (someone stopped it);
* retried: `retried`, an attempt that failed or timed out and was followed by another attempt
  of the same occurrence. It is a run, but the occurrence's outcome is its last attempt, so it
  is not an ended run in the success rate: a job that fails twice and then succeeds with
  `retries: 2` counts one success;
* did not run: `skipped` (max instances reached: the occurrence was recorded but not run) and
  `missed` (the scheduler could not fire the occurrence in time).

Any other status a record may carry counts as a run that has not ended.

Figures:

* `total_executions`: execution records that are runs, i.e. every status except `skipped` and
  `missed`. The job document's `total_executions` counter is the same figure for one job: the
  runner adds one when it records a run (and takes it off again if that record becomes
  `skipped`), and DataCleanupJob takes off the run records of the job that it deletes.
* `completed_executions` / `failed_executions` / `abandoned_executions` /
  `timeout_executions` / `cancelled_executions` / `retried_executions` /
  `running_executions` / `skipped_executions` / `missed_executions`: records with exactly
  that status (`running_executions` does not include `scheduled`).
* `ended_executions`: runs that ended (completed + failed + abandoned + timeout + cancelled).
* `success_rate`: completed / (runs that ended: completed + failed + abandoned + timeout +
  cancelled) * 100, rounded to 2 decimals; 0.0 when no run has ended. Runs still active and
  occurrences that did not run are not in the denominator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

ACTIVE = ("scheduled", "running")
ENDED_WELL = ("completed",)
ENDED_BADLY = ("failed", "abandoned", "timeout", "cancelled")
ENDED = ENDED_WELL + ENDED_BADLY
RETRIED = "retried"
NOT_RUN = ("skipped", "missed")
STATUSES = ACTIVE + ENDED + (RETRIED,) + NOT_RUN
FINAL = ENDED + (RETRIED,) + NOT_RUN  # a record with one of these never changes status again

# The key of a status tally under which records of statuses not counted one by one are summed.
OTHER = "*"
# The statuses the figures need one by one (everything else only counts towards the total).
COUNTED = ENDED + NOT_RUN + ("running", RETRIED)


def is_run(status: Any) -> bool:
    """Whether a record with this status is a run (counts in total_executions)."""
    return status not in NOT_RUN


def success_rate(completed: int, ended: int) -> float:
    """completed / ended * 100, rounded to 2 decimals; 0.0 when nothing ended."""
    return round(completed / ended * 100, 2) if ended else 0.0


def count_tally(collection, scope: Mapping[str, Any] | None = None) -> Counter:
    """The status tally of the execution records matching `scope`, by count() calls: one per
    status in COUNTED (indexed by (status, created_at), (user_id, status)) and one for all."""
    scope = dict(scope or {})
    counts = Counter({status: collection.count({**scope, "status": status}) for status in COUNTED})
    # Records written between the calls can make this a little off; never below zero.
    counts[OTHER] = max(0, collection.count(scope) - sum(counts.values()))
    return counts


def compute(statuses: Mapping[Any, int]) -> dict:
    """The figures of a status tally (see the module docstring)."""
    n = Counter(statuses)
    records = sum(n.values())
    completed = sum(n[s] for s in ENDED_WELL)
    ended = completed + sum(n[s] for s in ENDED_BADLY)
    return {
        "total_executions": records - sum(n[s] for s in NOT_RUN),
        "completed_executions": n["completed"],
        "failed_executions": n["failed"],
        "abandoned_executions": n["abandoned"],
        "timeout_executions": n["timeout"],
        "cancelled_executions": n["cancelled"],
        "retried_executions": n[RETRIED],
        "running_executions": n["running"],
        "skipped_executions": n["skipped"],
        "missed_executions": n["missed"],
        "ended_executions": ended,
        "success_rate": success_rate(completed, ended),
    }
