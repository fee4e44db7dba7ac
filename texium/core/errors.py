"""Errors the core raises; the HTTP layer maps each to one status code."""


class TexiumError(Exception):
    status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class ValidationError(TexiumError):
    """Malformed or invalid input; the message names the field."""

    status = 400


class NotFound(TexiumError):
    status = 404


class Conflict(TexiumError):
    status = 409


class TooManyRequests(TexiumError):
    status = 429


class DatastoreUnavailable(TexiumError):
    status = 503


class DuplicateKeyError(Exception):
    """A write broke a unique index; raised by datastore providers, turned into Conflict by services."""

    def __init__(self, field: str | None = None):
        super().__init__(field or "duplicate key")
        self.field = field


class ServiceUnavailable(TexiumError):
    """The server cannot take this now (it is shutting down); the client may retry elsewhere."""

    status = 503
