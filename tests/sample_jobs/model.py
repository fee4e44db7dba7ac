"""The job of the firing core's model test (tests/firing_model.py)."""

import random
import time

from texium.jobs.base import JobBase, JobError


class JournalJob(JobBase):
    """Writes each start of its body to a journal, works a while, sometimes fails"""

    def run(self, journal, seconds=0.2, fail_one_in=0):
        with open(journal, "a") as log:  # one short line per body start: O_APPEND keeps lines whole
            log.write(f"{self.context.execution_id} {time.time():.3f}\n")
        if self.context.cancelled.wait(float(seconds)):
            raise JobError("stopped when asked")
        if fail_one_in and random.random() < 1 / float(fail_one_in):
            raise JobError("failed, as it does now and then")
        return "worked"
