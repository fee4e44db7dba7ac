import time

from texium.jobs.base import JobBase, JobError


class SlowJob(JobBase):
    """Sleeps, printing before and after: a stand-in for long work"""

    def run(self, seconds=1.0, fail=False):
        print(f"sleeping {seconds}s")
        time.sleep(float(seconds))
        if fail:
            raise JobError("asked to fail")
        return {"slept": seconds}
