"""Heavy read-only summaries (the dashboard's, the schedule forecast), computed on request
threads, never on the scheduler's path."""
