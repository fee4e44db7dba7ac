"""A user's own job package, as JOB_CLASS_PACKAGES names it (used by the lifecycle tests)."""
