"""Secrets at rest (server passwords, secret job arguments), the outbound connection policy,
and owner-only files on disk."""
