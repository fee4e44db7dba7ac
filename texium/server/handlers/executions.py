"""/api/scheduler/executions and /audit-logs — the run history and the change history."""

from texium.server.handlers.base import ApiHandler


class ExecutionsHandler(ApiHandler):
    async def get(self) -> None:
        limit, offset = self.paging()
        run = self.read if offset <= 1000 else self.blocking  # a deep offset walks the index: a thread
        page = await run(
            lambda: self.context.history.list(
                job_id=self.query("job_id"),
                user_id=self.query("user_id"),
                owner=self.scope,
                status=self.query("status"),
                since=self.query_time("since"),
                until=self.query_time("until"),
                limit=limit,
                offset=offset,
            )
        )
        self.listing("Executions retrieved successfully", page)


class ExecutionHandler(ApiHandler):
    async def get(self, execution_id: str) -> None:
        execution = await self.read(self.context.history.get, execution_id, self.scope)
        self.success("Execution retrieved successfully", data=execution)


class AuditLogsHandler(ApiHandler):
    async def get(self) -> None:
        since, until = self.query_time("since"), self.query_time("until")
        query = self.query("job_id"), since, until, *self.paging()
        page = await self.blocking(self.context.audit.list, *query, self.scope)
        self.listing("Audit logs retrieved successfully", page)
