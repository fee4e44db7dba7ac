"""Jobs for the operations tests: one that fails a given number of times, one that stops when
asked, one that never listens."""

import os
import time

from texium.jobs.base import JobBase, JobError


class FlakyJob(JobBase):
    """Fails its first `failures` runs (counted in a file), then succeeds"""

    def run(self, counter_path, failures=2):
        with open(counter_path, "a") as log:  # one line per run: the execution that ran
            log.write(self.context.execution_id + "\n")
        with open(counter_path) as log:
            runs = sum(1 for _ in log)
        if runs <= int(failures):
            raise JobError(f"failure number {runs}")
        return f"succeeded on run {runs}"


class PoliteJob(JobBase):
    """Waits, stopping as soon as the run is cancelled or times out"""

    def run(self, seconds=30.0):
        print("waiting")
        if self.context.cancelled.wait(float(seconds)):
            raise JobError("stopped when asked")
        return "waited"


class DeafJob(JobBase):
    """Sleeps through any request to stop (a job that ignores context.cancelled)"""

    def run(self, seconds=3.0, marker=None):
        time.sleep(float(seconds))
        if marker:
            with open(marker, "w") as done:
                done.write(str(os.getpid()))
        return "slept"
