"""Texium's HTTP server: Tornado application, handlers and the entry point."""
