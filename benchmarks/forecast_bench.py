"""Forecast benchmark: how long GET /api/scheduler/forecast's computation takes for many jobs.

Pure (no server): builds job documents as the store keeps them and times
texium.core.views.forecast.forecast() over a week (168 hours) for 1,000 and 10,000 jobs. The
mix: plain schedules (hourly at a fixed minute, every 15 minutes, nightly, every minute on
weekdays), `H` schedules, jittered ones, some with a window or max_runs, and a blackout
calendar on a tenth of them. Usage: python benchmarks/forecast_bench.py [--hours 168]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from texium.core.scheduling import cron
from texium.core.scheduling.windows import Blackouts
from texium.core.views.forecast import forecast

NOW = datetime(2026, 3, 2, 10, 17, 5, tzinfo=UTC)
SCHEDULES = (
    {"minute": "0"},
    {"minute": "*/15"},
    {"minute": "30", "hour": "2"},
    {"minute": "*", "day_of_week": "1-5", "hour": "9-17"},
    {"minute": "H"},
    {"minute": "H/10"},
    {"minute": "H(0-29)", "hour": "H"},
)
CALENDAR = Blackouts(
    [
        {
            "_id": "c",
            "name": "Nights",
            "recurring": [{"minute": "0", "hour": "22", "duration_seconds": 8 * 3600, "timezone": "UTC"}],
        }
    ]
)


def jobs(count: int) -> tuple[list[dict], dict]:
    docs, blackouts = [], {}
    for i in range(count):
        doc = {"_id": f"{i:024x}", "name": f"job {i}", "is_enabled": True, **cron.DEFAULTS, "timezone": "UTC"}
        doc.update(SCHEDULES[i % len(SCHEDULES)])
        if i % 20 == 1:
            doc["jitter_seconds"] = 300
        if i % 50 == 2:
            doc.update(start_at=NOW + timedelta(days=1), end_at=NOW + timedelta(days=3))
        if i % 50 == 3:
            doc.update(max_runs=100, run_count=10)
        if i % 10 == 4:
            doc["exclude_calendars"] = ["c"]
            blackouts[doc["_id"]] = CALENDAR
        docs.append(doc)
    return docs, blackouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=168)
    options = parser.parse_args()
    for count in (1_000, 10_000):
        docs, blackouts = jobs(count)
        clock = time.perf_counter()
        result = forecast(docs, options.hours, NOW, blackouts)
        seconds = time.perf_counter() - clock
        peaks = sum(1 for bucket in result["buckets"] if bucket["peak"])
        print(
            f"{count:>6} jobs, {options.hours} h: {seconds:.2f} s "
            f"({result['total_runs']} runs, {result['total_excluded']} excluded, {peaks} peak hours)"
        )


if __name__ == "__main__":
    main()
