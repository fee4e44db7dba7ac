"""ReportGenerationJob: execution statistics for the last day / week / month.

A report covers every user's jobs only when the job's owner is an admin; a `user`'s report
covers their own jobs (GET /api/scheduler/reports is admin-only for the same reason).

The report is stored in the `reports` collection and written as JSON (the whole report) and
CSV (one row per job) into REPORT_DIR.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from datetime import timedelta

from texium.core import figures
from texium.core.datastore.base import new_id
from texium.core.security import files
from texium.core.timeutil import to_iso, utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

COLLECTION = "reports"
PERIODS = {"daily": 1, "weekly": 7, "monthly": 30}
DEFAULT_MAX_FAILURES = 50
PAGE_SIZE = 1000
CSV_FIELDS = [
    "job_id",
    "job_name",
    "job_class_string",
    "executions",
    "completed",
    "failed",
    "abandoned",
    "skipped",
    "missed",
    "other",
    "success_rate",
    "avg_duration_ms",
    "max_duration_ms",
    "last_run_at",
]
# Columns with one status each; `other` is the runs of any other status (scheduled, running, ...).
STATUS_COLUMNS = ("completed", "failed", "abandoned", "skipped", "missed")


def _new_stats(job_id, name, class_string) -> dict:
    return {
        "job_id": job_id,
        "job_name": name,
        "job_class_string": class_string,
        "executions": 0,
        "completed": 0,
        "failed": 0,
        "abandoned": 0,
        "skipped": 0,
        "missed": 0,
        "other": 0,
        "success_rate": None,
        "avg_duration_ms": None,
        "max_duration_ms": None,
        "last_run_at": None,
        "_statuses": Counter(),
        "_durations": [],
    }


def _finish(stats: dict) -> dict:
    """The counts from the status tally, by the definitions of texium/core/figures.py (the ones
    GET /api/scheduler/stats uses); success_rate stays None when no run ended."""
    durations = stats.pop("_durations")
    found = figures.compute(stats.pop("_statuses"))
    stats["executions"] = found["total_executions"]
    for column in STATUS_COLUMNS:
        stats[column] = found[f"{column}_executions"]
    stats["other"] = stats["executions"] - stats["completed"] - stats["failed"] - stats["abandoned"]
    stats["success_rate"] = found["success_rate"] if found["ended_executions"] else None
    if durations:
        stats["avg_duration_ms"] = round(sum(durations) / len(durations), 1)
        stats["max_duration_ms"] = max(durations)
    if stats["last_run_at"] is not None:
        stats["last_run_at"] = to_iso(stats["last_run_at"])
    return stats


def _csv_cell(value):
    """Spreadsheet-safe: text starting with = + - @ would be run as a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class ReportGenerationJob(JobBase):
    """Job to generate reports"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to generate reports",
            "arguments": [
                {
                    "name": "report_type",
                    "type": "string",
                    "required": False,
                    "description": "pub_kwargs: daily (last 24 h), weekly (last 7 "
                    "days) or monthly (last 30 days); default daily",
                },
                {
                    "name": "max_failures",
                    "type": "integer",
                    "required": False,
                    "description": "pub_kwargs: how many failures (newest first) the "
                    f"report lists (default {DEFAULT_MAX_FAILURES})",
                },
            ],
            "example_arguments": {"pub_args": [], "pub_kwargs": {"report_type": "weekly"}},
            "notes": (
                "Covers executions created in the period ending now: per job the runs (skipped and missed "
                "occurrences are counted apart), completed, failed, success rate (completed / runs that ended, "
                "as in GET /api/scheduler/stats), average and maximum duration, and the failures with their "
                "error line. A job owned by an admin reports on every user's jobs, one owned by a user on that "
                "user's jobs only (covers_user_id). Stored in the reports collection (GET /api/scheduler/reports) "
                "and written as JSON and CSV into REPORT_DIR."
            ),
        }

    def run(self, *args, **kwargs):
        _util.check_arguments(args, kwargs, 0, "no pub_args", ("report_type", "max_failures"))
        report_type = _util.require_str("report_type", kwargs.get("report_type", "daily")).strip().lower()
        if report_type not in PERIODS:
            raise JobError(f"report_type must be one of {', '.join(PERIODS)}, got {kwargs.get('report_type')!r}")
        max_failures = _util.number(
            "max_failures", kwargs.get("max_failures", DEFAULT_MAX_FAILURES), minimum=0, maximum=10000, integer=True
        )

        period_end = utcnow()
        period_start = period_end - timedelta(days=PERIODS[report_type])
        datastore = self.context.datastore
        executions = datastore.executions

        per_job: dict[str, dict] = {}
        failures: list[dict] = []
        failures_total = 0
        totals = _new_stats(None, None, None)
        flt = {"created_at": {"$gte": period_start, "$lt": period_end}}
        covers_user_id = None if self.context.owner_is_admin() else self.context.user_id
        if covers_user_id is not None:  # names and figures of others' jobs are not a user's to read
            flt["user_id"] = covers_user_id
        offset = 0
        while True:
            if self.context.cancelled.is_set():  # between pages: nothing is written yet
                raise JobError("report stopped: the run was cancelled or passed its time limit; no report was written")
            page = executions.find(flt, sort=[("created_at", 1)], limit=PAGE_SIZE, offset=offset)
            for ex in page:
                key = ex.get("job_id") or f"name:{ex.get('job_name')}"
                stats = per_job.get(key)
                if stats is None:
                    stats = per_job[key] = _new_stats(ex.get("job_id"), ex.get("job_name"), ex.get("job_class_string"))
                # Ascending order: the latest name and class win.
                stats["job_name"] = ex.get("job_name") or stats["job_name"]
                stats["job_class_string"] = ex.get("job_class_string") or stats["job_class_string"]
                for target in (stats, totals):
                    self._count(target, ex)
                if ex.get("status") in figures.ENDED_BADLY:
                    failures_total += 1
                    failures.append(
                        {
                            "execution_id": ex.get("_id"),
                            "job_id": ex.get("job_id"),
                            "job_name": ex.get("job_name"),
                            "status": ex.get("status"),
                            "started_at": to_iso(ex.get("started_at")),
                            "created_at": to_iso(ex.get("created_at")),
                            "duration_ms": ex.get("duration_ms"),
                            "error": _util.first_line(ex.get("error")) or "(no error recorded)",
                        }
                    )
                    if len(failures) > max_failures:  # keep the newest
                        failures.pop(0)
            if len(page) < PAGE_SIZE:
                break
            offset += PAGE_SIZE
        failures.reverse()

        jobs = sorted(
            (_finish(s) for s in per_job.values()), key=lambda s: (-s["executions"], str(s["job_name"] or ""))
        )
        summary = _finish(totals)
        for key in ("job_id", "job_name", "job_class_string", "last_run_at"):
            summary.pop(key)
        summary["jobs"] = len(jobs)
        summary["failures"] = failures_total

        report_id = new_id()
        report_dir = _util.dir_setting(self.context.config, "REPORT_DIR", "reports")
        base = f"texium-report-{report_type}-{_util.compact_stamp(period_end)}-{report_id}"
        json_path = os.path.join(report_dir, base + ".json")
        csv_path = os.path.join(report_dir, base + ".csv")
        report = {
            "_id": report_id,
            "report_type": report_type,
            "title": f"{report_type.capitalize()} execution report",
            "period_start": to_iso(period_start),
            "period_end": to_iso(period_end),
            "period_days": PERIODS[report_type],
            "summary": summary,
            "jobs": jobs,
            "failures": failures,
            "failures_total": failures_total,
            "failures_listed": len(failures),
            "json_path": json_path,
            "csv_path": csv_path,
            "covers_user_id": covers_user_id,  # None: every user's jobs
            "user_id": self.context.user_id,
            "job_id": self.context.job_id,
            "execution_id": self.context.execution_id,
            "created_at": period_end,
        }

        try:
            files.private_dir(report_dir)  # reports name jobs and their errors: owner-only (0700 / 0600)
            file_doc = dict(report, created_at=to_iso(period_end))
            with open(json_path, "w", encoding="utf-8", opener=files.private_opener) as fh:
                json.dump(file_doc, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
            with open(csv_path, "w", encoding="utf-8", newline="", opener=files.private_opener) as fh:
                writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                writer.writeheader()
                for row in jobs:
                    writer.writerow({k: _csv_cell(row.get(k)) for k in CSV_FIELDS})
                writer.writerow(
                    {
                        k: _csv_cell(v)
                        for k, v in dict(
                            summary, job_id="TOTAL", job_name="(all jobs)", job_class_string="", last_run_at=""
                        ).items()
                        if k in CSV_FIELDS
                    }
                )
        except OSError as exc:
            for path in (json_path, csv_path):
                try:
                    os.remove(path)
                except OSError:
                    pass
            raise JobError(f"cannot write the report into REPORT_DIR {report_dir}: {exc.strerror or exc}") from None

        datastore.collection(COLLECTION).insert(report)

        rate = "n/a" if summary["success_rate"] is None else f"{summary['success_rate']}%"
        avg = "n/a" if summary["avg_duration_ms"] is None else f"{summary['avg_duration_ms']:.0f} ms"
        lines = [
            f"{report['title']} {report['period_start']} .. {report['period_end']} (report {report_id})",
            "Jobs of every user" if covers_user_id is None else f"Jobs of user {covers_user_id} (the job's owner)",
            f"{summary['executions']} executions of {len(jobs)} jobs: {summary['completed']} completed, "
            f"{summary['failed']} failed, {summary['abandoned']} abandoned; {summary['skipped']} skipped and "
            f"{summary['missed']} missed (not run); "
            f"success rate {rate}; average duration {avg}",
        ]
        for row in jobs[:20]:
            r = "n/a" if row["success_rate"] is None else f"{row['success_rate']}%"
            lines.append(f"  {row['job_name']}: {row['executions']} runs, {row['failed']} failed, success {r}")
        if len(jobs) > 20:
            lines.append(f"  ... and {len(jobs) - 20} more jobs")
        lines.append(f"Written to {json_path} and {csv_path}")
        return "\n".join(lines)

    @staticmethod
    def _count(stats: dict, ex: dict) -> None:
        status = ex.get("status")
        stats["_statuses"][status] += 1
        duration = ex.get("duration_ms")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and status in figures.ENDED:
            stats["_durations"].append(duration)
        when = ex.get("started_at") or ex.get("created_at")
        if not figures.is_run(status) or when is None:
            return  # an occurrence that did not run is no "last run"
        if stats["last_run_at"] is None or when > stats["last_run_at"]:
            stats["last_run_at"] = when
