"""Scheduler utilities: available job classes, statistics, health and the cron preview."""

from texium.core import cron
from texium.core.timeutil import utcnow
from texium.server.handlers.base import ApiHandler


class AvailableJobsHandler(ApiHandler):
    def get(self) -> None:
        jobs = self.context.registry.available()
        self.success("Available jobs retrieved successfully", total=len(jobs), jobs=jobs)


class StatsHandler(ApiHandler):
    async def get(self) -> None:
        stats = await self.blocking(self.context.history.stats, self.query("user_id"))
        self.success("Stats retrieved successfully", stats=stats)


class HealthHandler(ApiHandler):
    async def get(self) -> None:
        problems = await self.blocking(self.context.scheduler.health)
        details = self.context.scheduler.health_details()
        if problems:
            self.reply({"status": "unhealthy", "message": "; ".join(problems), "timestamp": utcnow(), **details}, 503)
        else:
            self.reply({"status": "healthy", "message": "Scheduler is running", "timestamp": utcnow(), **details})


class NodesHandler(ApiHandler):
    async def get(self) -> None:
        nodes = await self.blocking(self.context.scheduler.nodes.list)
        self.success("Nodes retrieved successfully", total=len(nodes), data=nodes)


class CronPreviewHandler(ApiHandler):
    def get(self) -> None:
        fields = {name: self.query(name) for name in (*cron.CRON_FIELDS, "timezone")}
        count = self.query_int("count", 5, 1, 100)
        preview = self.context.scheduler.preview({k: v for k, v in fields.items() if v is not None}, count)
        self.success("Cron preview generated successfully", **preview)
