"""/api/scheduler/calendars — blackout calendars that jobs exclude; create, list, read, update,
delete, and import holidays from an iCalendar file.

Owned like servers: a `user` sees and changes only their own calendars (others' ids answer 404).
"""

import tornado.web

from texium.server.handlers.base import LIST_ALL, ApiHandler

ICS_TYPE = "text/calendar"


class CalendarAccess(ApiHandler):
    async def own_calendar(self, calendar_id: str) -> dict:
        return self.own(await self.read(self.context.calendars.get, calendar_id), "Calendar not found")


class CalendarsHandler(CalendarAccess):
    async def get(self) -> None:
        page = await self.read(self.context.calendars.list, self.scope, *self.paging(LIST_ALL))
        self.listing("Calendars retrieved successfully", page)

    async def post(self) -> None:
        body = self.json_body()
        self.owner_field(body.get("user_id"))
        calendar_id, name = await self.blocking(self.context.calendars.create, body)
        self.success(f"Calendar '{name}' created successfully", 201, calendar_id=calendar_id)


class CalendarHandler(CalendarAccess):
    async def get(self, calendar_id: str) -> None:
        calendar = await self.own_calendar(calendar_id)
        self.success("Calendar retrieved successfully", data=calendar)

    async def put(self, calendar_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_calendar(calendar_id)
            self.owner_field(body.get("user_id"))
        await self.blocking(self.context.calendars.update, calendar_id, body, self.actor)
        self.success("Calendar updated successfully", calendar_id=calendar_id)

    async def delete(self, calendar_id: str) -> None:
        if self.scope is not None:
            await self.own_calendar(calendar_id)
        await self.blocking(self.context.calendars.delete, calendar_id)
        self.success("Calendar deleted successfully", calendar_id=calendar_id)


class CalendarIcsHandler(CalendarAccess):
    async def post(self, calendar_id: str) -> None:
        await self.own_calendar(calendar_id)  # a bad or unknown id first: 400 / 404
        media_type = (self.request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != ICS_TYPE:
            raise tornado.web.HTTPError(415, reason=f"Send the iCalendar file with Content-Type: {ICS_TYPE}")
        count = await self.blocking(self.context.calendars.import_ics, calendar_id, self.raw_body(), self.actor)
        self.success(f"Imported {count} holidays", calendar_id=calendar_id, holidays=count)
