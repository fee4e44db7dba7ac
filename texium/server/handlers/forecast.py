"""GET /api/scheduler/forecast: runs per hour for the coming hours, exclusions and peaks (the heatmap)."""

from texium.core.timeutil import utcnow
from texium.core.views.forecast import DEFAULT_PEAK_THRESHOLD, MAX_HOURS, MAX_PEAK_THRESHOLD, Forecasts
from texium.server.handlers.base import ApiHandler


class ForecastHandler(ApiHandler):
    async def get(self) -> None:
        hours = self.query_int("hours", 168, 1, MAX_HOURS)
        threshold = self.query_int("peak_threshold", DEFAULT_PEAK_THRESHOLD, 1, MAX_PEAK_THRESHOLD)
        scope = {} if self.scope is None else {"user_id": self.scope}
        forecasts = self.context.forecasts or Forecasts(self.context.datastore)

        def compute():  # reads the jobs and their calendars and searches their schedules: off the IOLoop
            return self.blocking(lambda: forecasts.compute(scope, hours, utcnow(), threshold))

        # the same request arriving while one computes awaits that one (the answer is not changed after)
        key = (self.scope, hours, threshold)
        result = await self.context.forecasts_in_flight.run(key, compute)
        self.success("Forecast computed successfully", **result)
