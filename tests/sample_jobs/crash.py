import os
import signal
import threading

from texium.jobs.base import JobBase


class CrashAfterJob(JobBase):
    """Returns at once, then kills its own server (SIGKILL) `delay_ms` later: a node that dies
    around the end of a run (before, while or after its end and its chained starts are written)."""

    def run(self, delay_ms=0):
        timer = threading.Timer(float(delay_ms) / 1000, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
        return "done"
