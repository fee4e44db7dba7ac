"""Scheduler utilities: available job classes, statistics, health and the cron preview."""

import tornado.web

from texium.core.scheduling import cron
from texium.core.scheduling.pausing import describe_pause
from texium.core.scheduling.spread import MAX_JITTER_SECONDS
from texium.core.timeutil import utcnow
from texium.server.handlers.base import ApiHandler


class AvailableJobsHandler(ApiHandler):
    def get(self) -> None:
        jobs = self.context.registry.available()
        self.success("Available jobs retrieved successfully", total=len(jobs), jobs=jobs)


class StatsHandler(ApiHandler):
    async def get(self) -> None:
        user_id = self.query("user_id")
        if self.scope is not None:
            if user_id not in (None, self.scope):
                raise tornado.web.HTTPError(404, reason="User not found")
            user_id = self.scope
        stats = await self.blocking(self.context.history.stats, user_id, self.query("job_id"))
        self.success("Stats retrieved successfully", stats=stats)


class HealthHandler(ApiHandler):
    """Status, message and timestamp for everyone (load balancers and monitors ask without a
    key); the details (this node's host and pid, the last failed alert with its target) only
    for admins, which on a loopback-only server without keys is every caller."""

    public = True

    async def get(self) -> None:
        problems = await self.blocking(self.context.scheduler.health)
        warnings = self.context.scheduler.health_warnings()
        try:
            switch = await self.blocking(self.context.scheduler.maintenance)
        except Exception:  # the store is not answering: health() says so, and health must answer
            switch = None
        message = "; ".join(problems) or "Scheduler is running"
        if switch is not None:  # intended, so no problem: said in words, healthy still
            message += f"; maintenance: every job {describe_pause(switch)}"
        if warnings and not problems:
            message += "; warning: " + "; ".join(warnings)
        body = {"status": "unhealthy" if problems else "healthy", "message": message, "timestamp": utcnow()}
        body["maintenance"] = switch  # the message says it to everyone already: here for the banner
        if self.is_admin:  # the details name nodes, hosts and alert targets
            body.update(warnings=warnings, **self.context.scheduler.health_details())
        self.reply(body, 503 if problems else 200)


class NodesHandler(ApiHandler):
    admin_only = True

    async def get(self) -> None:
        nodes = await self.blocking(self.context.scheduler.nodes.list)
        self.success("Nodes retrieved successfully", total=len(nodes), data=nodes)


class CronPreviewHandler(ApiHandler):
    async def get(self) -> None:
        fields = {name: self.query(name) for name in (*cron.CRON_FIELDS, "timezone")}
        count = self.query_int("count", 5, 1, 100)
        jitter = self.query_int("jitter_seconds", 0, 0, MAX_JITTER_SECONDS)
        given = {k: v for k, v in fields.items() if v is not None}
        dst_policy = {key: self.query(key) for key in ("spring_forward", "fall_back")}
        # Searching a schedule is CPU work (bounded, but milliseconds for rare ones): off the IOLoop.
        preview = await self.blocking(
            self.context.scheduler.preview, given, count, self.query("job_id"), jitter, dst_policy
        )
        self.success("Cron preview generated successfully", **preview)
