"""/api/scheduler/metrics/system and /api/scheduler/reports — output of the built-in jobs."""

from texium.server.handlers.base import ApiHandler


class SystemMetricsHandler(ApiHandler):
    async def get(self) -> None:
        page = await self.blocking(self.context.records.metrics, *self.paging())
        self.listing("System metrics retrieved successfully", page)


class ReportsHandler(ApiHandler):
    async def get(self) -> None:
        page = await self.blocking(self.context.records.reports, *self.paging())
        self.listing("Reports retrieved successfully", page)


class ReportHandler(ApiHandler):
    async def get(self, report_id: str) -> None:
        report = await self.blocking(self.context.records.report, report_id)
        self.success("Report retrieved successfully", data=report)
