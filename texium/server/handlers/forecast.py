"""GET /api/scheduler/forecast: scheduled runs per hour for the coming hours (the heatmap)."""

from texium.core.timeutil import utcnow
from texium.core.views.forecast import MAX_HOURS, forecast
from texium.server.handlers.base import ApiHandler


class ForecastHandler(ApiHandler):
    async def get(self) -> None:
        hours = self.query_int("hours", 168, 1, MAX_HOURS)
        jobs = self.context.datastore.jobs
        scope = {} if self.scope is None else {"user_id": self.scope}

        def compute() -> dict:  # reads the jobs and searches their schedules: off the IOLoop
            docs = jobs.find({"is_enabled": True, **scope}, sort=[("created_at", 1)])
            return forecast(docs, hours, utcnow())

        result = await self.blocking(compute)
        self.success("Forecast computed successfully", **result)
