"""/api/scheduler/jobs — create, list, read, preview, update, delete, pause, resume, run now,
backfill; pause-all.

A `user` sees and changes only their own jobs (others' ids answer 404) and may not create,
change or run admin-only job classes (403).
"""

import tornado.web

from texium.core.scheduling.preview import MAX_PREVIEW
from texium.server.handlers.base import LIST_ALL, ApiHandler


class JobAccess(ApiHandler):
    async def own_job(self, job_id: str, change: bool = False) -> dict:
        """The job if this user may see it; with `change`, also if they may change or run it."""
        job = self.own(await self.read(self.context.scheduler.get, job_id), "Job not found")
        if change:
            self.may_use_class(job.get("job_class_string"))
        return job

    def may_use_class(self, class_string) -> None:
        if self.is_admin or not isinstance(class_string, str):
            return
        if self.context.registry.admin_only(class_string):
            raise tornado.web.HTTPError(403, reason=f"Only an admin may create, change or run {class_string} jobs")


class JobsHandler(JobAccess):
    async def get(self) -> None:
        page = await self.read(self.context.scheduler.list, self.scope, *self.paging(LIST_ALL))
        self.listing("Jobs retrieved successfully", page)

    async def post(self) -> None:
        body = self.json_body()
        self.owner_field(body.get("user_id"))
        self.may_use_class(body.get("job_class_string"))
        job_id, name = await self.blocking(self.context.scheduler.create, body, self.actor)
        self.success(f"Job '{name}' created successfully", 201, job_id=job_id)


class JobHandler(JobAccess):
    async def get(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id)
        job = await self.read(self.context.scheduler.get_json, job_id)
        self.success("Job retrieved successfully", data=job)

    async def put(self, job_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_job(job_id, change=True)
            self.owner_field(body.get("user_id"))
            self.may_use_class(body.get("job_class_string"))
        await self.blocking(self.context.scheduler.update, job_id, body, self.actor)
        self.success("Job updated successfully", job_id=job_id)

    async def delete(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id)
        force = self.query_bool("force")
        await self.blocking(self.context.scheduler.delete, job_id, self.actor, force)
        self.success("Job deleted successfully", job_id=job_id)


class JobPreviewHandler(JobAccess):
    """The job's next runs as the scheduler will make them (rights as reading the job)."""

    async def get(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id)
        count = self.query_int("count", 10, 1, MAX_PREVIEW)
        # Walking schedules and blackouts is CPU work (bounded): off the IOLoop.
        preview = await self.blocking(self.context.scheduler.job_preview, job_id, count)
        self.success("Job preview generated successfully", job_id=job_id, **preview)


class JobPauseHandler(JobAccess):
    async def patch(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id, change=True)
        body = self.optional_json_body()
        await self.blocking(self.context.scheduler.pause, job_id, self.actor, body)
        self.success("Job paused successfully", job_id=job_id)


class JobResumeHandler(JobAccess):
    async def patch(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id, change=True)
        await self.blocking(self.context.scheduler.resume, job_id, self.actor)
        self.success("Job resumed successfully", job_id=job_id)


class PauseAllHandler(ApiHandler):
    """Maintenance: every job paused at once, on every node (admin only)."""

    admin_only = True

    async def post(self) -> None:
        body = self.optional_json_body()
        switch = await self.blocking(self.context.scheduler.pause_all, self.actor, body)
        self.success("All jobs paused", maintenance=switch)


class ResumeAllHandler(ApiHandler):
    admin_only = True

    async def post(self) -> None:
        switch = await self.blocking(self.context.scheduler.resume_all, self.actor)
        self.success("All jobs resumed", maintenance=switch)


class JobRunHandler(JobAccess):
    async def post(self, job_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id, change=True)
        body = self.optional_json_body()
        execution_id = await self.blocking(self.context.scheduler.run_now, job_id, self.actor, body)
        self.success("Job execution started", execution_id=execution_id)


class JobBackfillHandler(JobAccess):
    async def post(self, job_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_job(job_id, change=True)
        status, answer = await self.blocking(self.context.scheduler.backfill, job_id, body, self.actor)
        self.success("Backfill dry run" if status == 200 else "Backfill started", status, **answer)


class BackfillHandler(JobAccess):
    async def get(self, job_id: str, backfill_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id)
        data = await self.read(self.context.scheduler.backfill_status, job_id, backfill_id)
        self.success("Backfill retrieved successfully", data=data)

    async def delete(self, job_id: str, backfill_id: str) -> None:
        if self.scope is not None:
            await self.own_job(job_id, change=True)
        data = await self.blocking(self.context.scheduler.cancel_backfill, job_id, backfill_id, self.actor)
        self.success("Backfill cancelled", data=data)


class UserJobsHandler(JobAccess):
    async def get(self, user_id: str) -> None:
        if self.scope is not None and user_id != self.scope:
            raise tornado.web.HTTPError(404, reason="User not found")
        page = await self.read(self.context.scheduler.list, user_id, *self.paging(LIST_ALL))
        self.listing("Jobs retrieved successfully", page)


class ChainsHandler(ApiHandler):
    """The graph of chains and fan-ins (a user's own jobs), for the dashboard's picture."""

    async def get(self) -> None:
        graph = await self.blocking(self.context.scheduler.chain_graph, self.scope)
        self.success("Chains retrieved successfully", **graph)
