"""The job contract, re-exported: it lives in `texium.core.job` (jobs depend on the core)."""

from texium.core.job import JobBase, JobContext, JobError, JobTimeout

__all__ = ["JobBase", "JobContext", "JobError", "JobTimeout"]
