"""A job that uses up the server process's file handles for a while (tests/test_connections.py)."""

import os

from texium.jobs.base import JobBase


class HandleHogJob(JobBase):
    """Opens /dev/null until the process has no file handle left, holds them, then closes them"""

    def run(self, marker, seconds=4.0):
        # Opened first, so telling the test costs no handle once they are all taken.
        report = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        held = []
        try:
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            os.write(report, str(len(held)).encode())
            self.context.cancelled.wait(float(seconds))
        finally:
            for descriptor in held:
                os.close(descriptor)
            os.close(report)
        return f"held {len(held)} handles"
