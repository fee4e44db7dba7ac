"""DataCleanupJob: delete history older than N days from the collections that hold history."""

from __future__ import annotations

import os
from datetime import timedelta

from texium.core import figures
from texium.core.datastore.base import is_valid_id
from texium.core.timeutil import to_iso, utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

DEFAULT_DAYS = 30
DEFAULT_COLLECTIONS = ["scheduler_executions"]
# History only. Users, servers and job definitions are never cleaned up.
CLEANABLE = (
    "scheduler_executions",
    "scheduler_audit_logs",
    "system_metrics",
    "reports",
    "scheduler_channel_deliveries",  # every message sent to an alert channel
    "scheduler_channel_digests",  # the digests of grouped alerts (events/digests.py)
)
ALIASES = {"executions": "scheduler_executions", "audit_logs": "scheduler_audit_logs", "metrics": "system_metrics"}
ALIASES["channel_deliveries"] = "scheduler_channel_deliveries"
ALIASES["channel_digests"] = "scheduler_channel_digests"
PROTECTED = ("users", "servers", "scheduler_jobs", "jobs")
# An execution in one of these states is still owned by the scheduler.
ACTIVE_STATUSES = list(figures.ACTIVE)
PAGE_SIZE = 500


class DataCleanupJob(JobBase):
    """Job to clean up old data"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    admin_only = True  # deletes every user's history, the audit trail included

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to clean up old data",
            "arguments": [
                {
                    "name": "days_old",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: delete documents created more than this many "
                    f"days ago (default {DEFAULT_DAYS}; 0 = everything up to now)",
                },
                {
                    "name": "collections",
                    "type": "list[string]",
                    "required": False,
                    "description": "pub_kwargs: any of " + ", ".join(CLEANABLE) + " (default ['scheduler_executions'])",
                },
                {
                    "name": "dry_run",
                    "type": "boolean",
                    "required": False,
                    "description": "pub_kwargs: only count what would be deleted (default false)",
                },
            ],
            "example_arguments": {
                "pub_args": [],
                "pub_kwargs": {"days_old": 30, "collections": ["scheduler_executions", "scheduler_audit_logs"]},
            },
            "notes": (
                "Compares created_at with now minus days_old. Executions still running or scheduled are never "
                "deleted; each job's total_executions goes down by the runs of it that were deleted (skipped "
                "and missed occurrences are not runs). Deleting reports also removes their JSON/CSV files. "
                "Users, servers and jobs are refused."
            ),
        }

    def _audit_the_cleanup(self, logs, deleted: int, cutoff) -> None:
        ctx = self.context
        logs.insert(
            {
                "job_id": ctx.job_id,
                "job_name": ctx.job_name,
                "user_id": ctx.user_id,
                "event": "audit_cleanup",
                "user": f"DataCleanupJob (execution {ctx.execution_id})",
                "description": f"Deleted {deleted} audit entries created before {to_iso(cutoff)}",
                "created_at": utcnow(),
            }
        )

    def run(self, *args, **kwargs):
        _util.check_arguments(args, kwargs, 0, "no pub_args", ("days_old", "collections", "dry_run"))
        days = _util.number("days_old", kwargs.get("days_old", DEFAULT_DAYS), minimum=0, maximum=100000)
        dry_run = _util.boolean("dry_run", kwargs.get("dry_run", False))
        requested = kwargs.get("collections")
        names = []
        for name in DEFAULT_COLLECTIONS if requested is None else _util.str_list("collections", requested):
            real = ALIASES.get(name, name)
            if name in PROTECTED or real in PROTECTED:
                raise JobError(f"collections: {name!r} is never cleaned up (only history: {', '.join(CLEANABLE)})")
            if real not in CLEANABLE:
                raise JobError(f"collections: unknown collection {name!r}; choose from {', '.join(CLEANABLE)}")
            if real not in names:
                names.append(real)

        cutoff = utcnow() - timedelta(days=days)
        datastore = self.context.datastore
        counts: dict[str, int] = {}
        notes: list[str] = []
        for name in names:
            self._check_cancelled(counts)
            flt = {"created_at": {"$lt": cutoff}}
            if name == "scheduler_executions":
                flt["status"] = {"$nin": ACTIVE_STATUSES}
            collection = datastore.collection(name)
            if dry_run:
                counts[name] = collection.count(flt)
            elif name == "scheduler_executions":
                counts[name], jobs, runs = self._delete_executions(datastore, flt, self._check_cancelled)
                if jobs:
                    notes.append(f"total_executions of {jobs} job(s) lowered by their {runs} deleted run(s)")
            elif name == "reports":
                counts[name], removed_files = self._delete_reports(collection, flt)
                if removed_files:
                    notes.append(f"removed {removed_files} report file(s)")
            else:
                counts[name] = collection.delete_many(flt)
                if name == "scheduler_audit_logs":  # erasing the trail leaves a trace of itself
                    self._audit_the_cleanup(collection, counts[name], cutoff)

        verb = "Would delete" if dry_run else "Deleted"
        total = sum(counts.values())
        lines = [
            f"{verb} {total} document(s) created before {to_iso(cutoff)} (older than {days:g} days)"
            + (" [dry run: nothing deleted]" if dry_run else "")
        ]
        lines += [f"  {name}: {count}" for name, count in counts.items()]
        lines += [f"  ({note})" for note in notes]
        return "\n".join(lines)

    def _check_cancelled(self, counts: dict | None = None) -> None:
        """Stop between steps when the run was cancelled or passed its time limit."""
        if self.context.cancelled.is_set():
            done = ", ".join(f"{name}: {count}" for name, count in (counts or {}).items())
            raise JobError(
                "cleanup stopped: the run was cancelled or passed its time limit; what was deleted stays deleted"
                + (f" ({done})" if done else "")
            )

    @staticmethod
    def _delete_executions(datastore, flt, check=lambda: None) -> tuple[int, int, int]:
        """Delete the matching executions page by page and take each job's deleted runs off its
        total_executions counter at once, so that it stays equal to the stats' total for the job.
        Returns (deleted, jobs whose counter went down, runs taken off)."""
        executions = datastore.executions
        deleted = lowered = 0
        jobs: set[str] = set()
        # Every status the filter lets through is either a run or not; each delete keeps its
        # status condition, so the number it returns is exactly the runs (or non-runs) deleted.
        run_status = {"$nin": ACTIVE_STATUSES + list(figures.NOT_RUN)}
        not_run_status = {"$in": list(figures.NOT_RUN)}
        offset = 0  # documents of the filter that were not deleted (they stay in front)
        while True:
            check()  # between pages: stop when the run must
            page = executions.find(flt, sort=[("created_at", 1)], limit=PAGE_SIZE, offset=offset)
            groups: dict[tuple, list[str]] = {}
            for doc in page:
                groups.setdefault((doc.get("job_id"), figures.is_run(doc.get("status"))), []).append(doc["_id"])
            deleted_now = 0
            for (job_id, run), ids in groups.items():
                status = run_status if run else not_run_status
                n = executions.delete_many({**flt, "_id": {"$in": ids}, "status": status})
                deleted_now += n
                if run and n and is_valid_id(job_id):
                    job = datastore.jobs.update(job_id, inc={"total_executions": -n})
                    if job is None:
                        continue  # the job was deleted; its history outlived it
                    jobs.add(job_id)
                    lowered += n
                    if job.get("total_executions", 0) < 0:  # runs recorded before they were counted
                        datastore.jobs.update(job_id, fields={"total_executions": 0})
            deleted += deleted_now
            offset += len(page) - deleted_now
            if len(page) < PAGE_SIZE:
                break
        return deleted, len(jobs), lowered

    def _delete_reports(self, collection, flt) -> tuple[int, int]:
        """Delete old reports with their files (only files inside REPORT_DIR)."""
        report_dir = os.path.realpath(_util.dir_setting(self.context.config, "REPORT_DIR", "reports"))
        deleted = removed = 0
        while True:
            self._check_cancelled()
            page = collection.find(flt, sort=[("created_at", 1)], limit=500)
            if not page:
                break
            for doc in page:
                for key in ("json_path", "csv_path"):
                    path = doc.get(key)
                    if not isinstance(path, str):
                        continue
                    real = os.path.realpath(path)
                    if os.path.dirname(real) == report_dir and os.path.isfile(real):
                        try:
                            os.remove(real)
                            removed += 1
                        except OSError:
                            pass
                if collection.delete(doc["_id"]):
                    deleted += 1
            if len(page) < 500:
                break
        return deleted, removed
