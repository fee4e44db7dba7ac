"""The alerting benchmark's job (loaded through JOB_CLASS_PACKAGES=benchmarks.alerting_jobs)."""

import time

from texium.jobs.base import JobBase


class FlipJob(JobBase):
    """Fails in odd seconds and succeeds in even ones: run every second, every run changes the
    job's alert state, so every run sends an alert (failure, then recovery, ...)"""

    def run(self, *args, **kwargs) -> str:
        if int(time.time()) % 2:
            raise RuntimeError("failing on purpose (odd second)")
        return "ok"


class FailJob(JobBase):
    """Fails every run: the issue's "100 jobs failing each second" (the first failure of each job
    alerts, and a failing job's later runs are no news)."""

    def run(self, *args, **kwargs) -> str:
        raise RuntimeError("failing on purpose")
