"""MaintenanceJob: datastore housekeeping and cache clearing."""

from __future__ import annotations

import time

from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

TASKS = ("rebuild_indexes", "optimize_queries", "clear_cache", "vacuum")
DEFAULT_TASKS = ["rebuild_indexes", "optimize_queries", "clear_cache"]


class MaintenanceJob(JobBase):
    """Job for maintenance tasks"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    admin_only = True  # rebuilds and vacuums the whole store

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job for maintenance tasks",
            "arguments": [
                {
                    "name": "tasks",
                    "type": "list[string]",
                    "required": False,
                    "description": "pub_kwargs: any of "
                    + ", ".join(TASKS)
                    + " (default: "
                    + ", ".join(DEFAULT_TASKS)
                    + ")",
                },
            ],
            "example_arguments": {
                "pub_args": [],
                "pub_kwargs": {"tasks": ["rebuild_indexes", "optimize_queries", "clear_cache"]},
            },
            "notes": (
                "rebuild_indexes drops and recreates the datastore's indexes; optimize_queries refreshes the "
                "query planner (SQLite ANALYZE + PRAGMA optimize, MongoDB plan-cache clear); clear_cache drops "
                "the server's in-process caches; vacuum gives unused space back (SQLite VACUUM, MongoDB compact "
                "where permitted). Tasks run in the order given; one failing task does not stop the others but "
                "fails the execution. An unknown task name fails before anything runs."
            ),
        }

    def run(self, *args, **kwargs):
        _util.check_arguments(args, kwargs, 0, "no pub_args", ("tasks",))
        tasks = DEFAULT_TASKS if kwargs.get("tasks") is None else _util.str_list("tasks", kwargs["tasks"])
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise JobError(
                f"unknown maintenance task{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; choose from {', '.join(TASKS)}"
            )

        datastore = self.context.datastore
        failed = []
        lines = [f"Maintenance on the {getattr(datastore, 'provider', '?')} datastore: {', '.join(tasks)}"]
        for task in tasks:
            started = time.monotonic()
            try:
                result = getattr(self, "_" + task)(datastore)
            except Exception as exc:  # noqa: BLE001 - report per task, keep going
                elapsed = round((time.monotonic() - started) * 1000, 1)
                self.context.logger.warning("maintenance task %s failed: %s", task, exc, exc_info=True)
                failed.append(task)
                lines.append(f"{task}: FAILED after {elapsed} ms: {type(exc).__name__}: {exc}")
                continue
            elapsed = round((time.monotonic() - started) * 1000, 1)
            lines.append(f"{task}: ok in {elapsed} ms - {result}")
        if failed:
            for line in lines:
                self.write(line)
            raise JobError(f"maintenance task{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ tasks

    @staticmethod
    def _rebuild_indexes(datastore) -> str:
        rebuilt = list(datastore.rebuild_indexes())
        shown = ", ".join(map(str, rebuilt[:12])) + (f", ... ({len(rebuilt) - 12} more)" if len(rebuilt) > 12 else "")
        return f"rebuilt {len(rebuilt)} indexes" + (f": {shown}" if rebuilt else "")

    @staticmethod
    def _optimize_queries(datastore) -> str:
        return str(datastore.optimize())

    def _clear_cache(self, datastore) -> str:
        hook = (self.context.hooks or {}).get("clear_cache")
        if hook is None:
            return "nothing to clear (this process has no cache hook)"
        result = hook()
        if result is None:
            return "in-process caches cleared"
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            return f"cleared {result:g} cached entries"
        if isinstance(result, dict):
            return "cleared " + ", ".join(f"{k}: {v}" for k, v in result.items())
        return str(result)

    @staticmethod
    def _vacuum(datastore) -> str:
        return str(datastore.vacuum())
