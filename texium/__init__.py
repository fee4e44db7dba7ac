"""Texium: a job-scheduler server with a JSON API over MongoDB or an embedded SQLite store."""

__version__ = "0.1.0"
