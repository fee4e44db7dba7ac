"""What the store holds back, cluster-wide, for GET /metrics: occurrences waiting under their
job's overlap policy and occurrences a calendar excluded.

Read from the store at scrape time (not counted by one node), so every node reports the same
figures and they always equal the records: a queued occurrence is a `scheduled` record with
`waiting` set (dispatch.py), an excluded one is counted on its job (`excluded_runs`, claims.py).
"""

from __future__ import annotations

QUEUED = {"status": "scheduled", "waiting": {"$ne": None}}
EXCLUDED = {"excluded_runs": {"$gt": 0}}


class Backlog:
    def __init__(self, datastore):
        self._executions = datastore.executions
        self._jobs = datastore.jobs

    def queued(self) -> int:
        """Occurrences waiting for a slot of their job (`queue_one`, `queue_all`), on any node."""
        return self._executions.count(QUEUED)

    def excluded(self) -> int:
        """Occurrences every job has had excluded by the calendars it excludes, in total."""
        return sum(int(job.get("excluded_runs") or 0) for job in self._jobs.find(EXCLUDED))
