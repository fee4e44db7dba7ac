"""Calendars: named blackout periods that jobs exclude (`exclude_calendars`).

A calendar holds fixed `periods` ({start, end}), `recurring` blackouts (cron fields, a time zone
and a `duration_seconds` from each fire time) and `holidays` imported from an iCalendar file,
expanded into periods by `recurring-ical-events` (RRULEs, EXDATEs and time zones done by the
library, not by us) over ICS_YEARS from the import. The firing core reads calendars itself
(texium.core.scheduling.windows); this module validates and stores them, owned like servers
(`user_id`; a `user` sees their own).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from texium.core.datastore.base import Datastore
from texium.core.errors import Conflict, NotFound, ValidationError
from texium.core.records.listing import Page, list_page
from texium.core.records.users import owned_by
from texium.core.scheduling import cron
from texium.core.timeutil import as_utc, to_iso, utcnow
from texium.core.validation import request_schema, require_id, validate_body

# The fields, their types, limits and defaults: components/schemas in texium/openapi.yaml.
CALENDAR_CREATE, CALENDAR_UPDATE = request_schema("CalendarCreate"), request_schema("CalendarUpdate")
ICS_YEARS = 5  # holidays are expanded from a day before the import up to this many years after
MAX_HOLIDAYS = 5000


def _periods(periods: list[dict], field: str) -> list[dict]:
    """{start, end} pairs as UTC ISO texts, each ending after it starts (400 naming the item)."""
    clean = []
    for index, period in enumerate(periods):
        times = {}
        for end in ("start", "end"):
            where = f"{field}[{index}].{end}"
            try:
                if not isinstance(period.get(end), str) or "T" not in period[end]:
                    raise ValueError
                parsed = datetime.fromisoformat(period[end].replace("Z", "+00:00"))
            except ValueError:
                raise ValidationError(f"Invalid field {where}: must be an ISO 8601 time with an offset") from None
            if parsed.tzinfo is None:
                raise ValidationError(f"Invalid field {where}: must be an ISO 8601 time with an offset")
            times[end] = as_utc(parsed)
        if times["end"] <= times["start"]:
            raise ValidationError(f"Invalid field {field}[{index}].end: must be after start")
        clean.append({"start": to_iso(times["start"]), "end": to_iso(times["end"])})
    return clean


def _recurring(rules: list[dict], default_zone: str) -> list[dict]:
    """Recurring blackouts with their cron fields normalised (400 naming the rule's field)."""
    clean = []
    for index, rule in enumerate(rules):
        try:
            fields = cron.normalize(rule, rule.get("timezone") or default_zone)
        except ValidationError as exc:
            raise ValidationError(f"Invalid field recurring[{index}]: {exc.detail}") from None
        clean.append({**fields, "duration_seconds": rule["duration_seconds"]})
    return clean


def _moment(value, zone: ZoneInfo) -> datetime:
    """An iCalendar DTSTART/DTEND as an aware UTC time: a date is its midnight, a floating
    time is read, in the calendar's zone."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return as_utc(value)


def holidays_from_ics(text: bytes, zone_name: str, now: datetime) -> list[dict]:
    """The events of an iCalendar file as blackout periods, recurrences expanded."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except Exception as exc:
        raise ValidationError(f"Invalid iCalendar body: {exc}") from None
    zone = ZoneInfo(zone_name)
    try:
        events = recurring_ical_events.of(calendar).between(
            now - timedelta(days=1), now + timedelta(days=366 * ICS_YEARS)
        )
    except Exception as exc:
        raise ValidationError(f"Invalid iCalendar body: {exc}") from None
    holidays = []
    for event in events:
        start_value = event.get("DTSTART")
        if start_value is None:
            continue
        start_value = start_value.dt
        end_value = event.get("DTEND")
        if end_value is not None:
            end_value = end_value.dt
        elif event.get("DURATION") is not None:
            end_value = start_value + event["DURATION"].dt
        else:  # RFC 5545: a date lasts the day; a time, no time at all (blacks out nothing)
            end_value = start_value + timedelta(days=1) if not isinstance(start_value, datetime) else start_value
        start, end = _moment(start_value, zone), _moment(end_value, zone)
        if end > start:
            holidays.append({"start": to_iso(start), "end": to_iso(end), "summary": str(event.get("SUMMARY") or "")})
        if len(holidays) > MAX_HOLIDAYS:
            raise ValidationError(
                f"Invalid iCalendar body: more than {MAX_HOLIDAYS} events in the next {ICS_YEARS} years"
            )
    holidays.sort(key=lambda h: h["start"])
    return holidays


def jobs_using(datastore: Datastore, calendar_id: str) -> list[dict]:
    """The jobs whose exclude_calendars or mute_calendars name the calendar (a scan: calendars
    change rarely)."""
    return [
        job
        for job in datastore.jobs.find({})
        if calendar_id in [*(job.get("exclude_calendars") or []), *(job.get("mute_calendars") or [])]
    ]


class CalendarService:
    def __init__(
        self,
        datastore: Datastore,
        timezone: str = "UTC",
        on_changed: Callable[[str, str], None] | None = None,
    ):
        """`on_changed(calendar_id, actor)` moves the next run times of the jobs that exclude a
        calendar that changed (the scheduler owns job writes)."""
        self._ds = datastore
        self._timezone = timezone
        self._on_changed = on_changed

    def _clean(self, doc: dict) -> dict:
        if "timezone" in doc:
            doc["timezone"] = cron.normalize({}, doc["timezone"] or self._timezone)["timezone"]
        if "periods" in doc:
            doc["periods"] = _periods(doc["periods"], "periods")
        if "recurring" in doc:
            doc["recurring"] = _recurring(doc["recurring"], doc.get("timezone") or self._timezone)
        return doc

    def _require_user(self, user_id: str) -> None:
        if self._ds.users.get(user_id) is None:
            raise ValidationError(f"Invalid field user_id: no user with id {user_id}")

    def create(self, body: dict) -> tuple[str, str]:
        doc = self._clean({"timezone": None, **validate_body(body, CALENDAR_CREATE)})
        self._require_user(doc["user_id"])
        doc["holidays"] = []
        doc["created_at"] = doc["updated_at"] = utcnow()
        return self._ds.calendars.insert(doc), doc["name"]

    def list(self, user_id: str | None, limit: int, offset: int) -> Page:
        return list_page(self._ds.calendars, owned_by(self._ds, user_id), limit, offset, as_json=False)

    def get(self, calendar_id: str) -> dict:
        doc = self._ds.calendars.get(require_id(calendar_id, "calendar_id"))
        if doc is None:
            raise NotFound("Calendar not found")
        return doc

    def _write(self, calendar_id: str, changes: dict, actor: str) -> None:
        changes["updated_at"] = utcnow()
        if self._ds.calendars.update(calendar_id, fields=changes) is None:
            raise NotFound("Calendar not found")
        if self._on_changed is not None:
            self._on_changed(calendar_id, actor)

    def update(self, calendar_id: str, body: dict, actor: str) -> None:
        require_id(calendar_id, "calendar_id")
        changes = validate_body(body, CALENDAR_UPDATE, partial=True)
        if "recurring" in changes and "timezone" not in changes:
            changes["timezone"] = self.get(calendar_id).get("timezone")
        changes = self._clean(changes)
        if "user_id" in changes:
            self._require_user(changes["user_id"])
        self._write(calendar_id, changes, actor)

    def import_ics(self, calendar_id: str, text: bytes, actor: str) -> int:
        """Replace the calendar's holidays by the events of an iCalendar file; how many."""
        calendar = self.get(calendar_id)
        holidays = holidays_from_ics(text, calendar.get("timezone") or self._timezone, utcnow())
        self._write(calendar_id, {"holidays": holidays}, actor)
        return len(holidays)

    def delete(self, calendar_id: str) -> None:
        self.get(calendar_id)
        users = jobs_using(self._ds, calendar_id)
        if users:
            named = ", ".join(f"{job.get('name')!r} ({job['_id']})" for job in users[:20])
            more = f" and {len(users) - 20} more" if len(users) > 20 else ""
            raise Conflict(
                f"Calendar is still excluded by {len(users)} job(s): {named}{more}; remove it from them first"
            )
        if not self._ds.calendars.delete(calendar_id):
            raise NotFound("Calendar not found")
