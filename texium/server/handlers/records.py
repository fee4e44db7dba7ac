"""/api/scheduler/metrics/system and /api/scheduler/reports — output of the built-in jobs."""

from texium.server.handlers.base import ApiHandler


class SystemMetricsHandler(ApiHandler):
    admin_only = True  # the server's own figures and reports over every user's jobs

    async def get(self) -> None:
        page = await self.blocking(self.context.records.metrics, *self.paging())
        self.listing("System metrics retrieved successfully", page)


class ReportsHandler(ApiHandler):
    admin_only = True

    async def get(self) -> None:
        page = await self.blocking(self.context.records.reports, *self.paging())
        self.listing("Reports retrieved successfully", page)


class ReportHandler(ApiHandler):
    admin_only = True

    async def get(self, report_id: str) -> None:
        report = await self.blocking(self.context.records.report, report_id)
        self.success("Report retrieved successfully", data=report)
