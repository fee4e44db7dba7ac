"""Texium's core: datastore, services and the scheduler. Configured through constructors only."""
