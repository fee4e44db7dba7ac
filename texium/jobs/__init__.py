"""Texium's built-in jobs. Each module holds one JobBase subclass; see texium.jobs.base."""
