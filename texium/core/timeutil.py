"""One notion of time: aware UTC datetimes inside, ISO 8601 with an explicit offset outside."""

from datetime import UTC, datetime

from dateutil import parser as _dateparser


def utcnow() -> datetime:
    # Millisecond precision: what MongoDB stores, so both providers round-trip the same value.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (that is what MongoDB hands back without tz_aware)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_iso(value: datetime | None) -> str | None:
    """Fixed width, microseconds always shown: the same text the embedded store keeps."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 time; a value without an offset is UTC. Raises ValueError."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty time")
    return as_utc(_dateparser.isoparse(text.strip()))
