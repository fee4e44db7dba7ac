"""/api/scheduler/jobs — create, list, read, update, delete, pause, resume, run now."""

from texium.server.handlers.base import LIST_ALL, ApiHandler


class JobsHandler(ApiHandler):
    async def get(self) -> None:
        page = await self.read(self.context.scheduler.list, None, *self.paging(LIST_ALL))
        self.listing("Jobs retrieved successfully", page)

    async def post(self) -> None:
        job_id, name = await self.blocking(self.context.scheduler.create, self.json_body(), self.actor)
        self.success(f"Job '{name}' created successfully", 201, job_id=job_id)


class JobHandler(ApiHandler):
    async def get(self, job_id: str) -> None:
        job = await self.read(self.context.scheduler.get_json, job_id)
        self.success("Job retrieved successfully", data=job)

    async def put(self, job_id: str) -> None:
        await self.blocking(self.context.scheduler.update, job_id, self.json_body(), self.actor)
        self.success("Job updated successfully", job_id=job_id)

    async def delete(self, job_id: str) -> None:
        await self.blocking(self.context.scheduler.delete, job_id, self.actor)
        self.success("Job deleted successfully", job_id=job_id)


class JobPauseHandler(ApiHandler):
    async def patch(self, job_id: str) -> None:
        await self.blocking(self.context.scheduler.pause, job_id, self.actor)
        self.success("Job paused successfully", job_id=job_id)


class JobResumeHandler(ApiHandler):
    async def patch(self, job_id: str) -> None:
        await self.blocking(self.context.scheduler.resume, job_id, self.actor)
        self.success("Job resumed successfully", job_id=job_id)


class JobRunHandler(ApiHandler):
    async def post(self, job_id: str) -> None:
        execution_id = await self.blocking(self.context.scheduler.run_now, job_id, self.actor)
        self.success("Job execution started", execution_id=execution_id)


class UserJobsHandler(ApiHandler):
    async def get(self, user_id: str) -> None:
        page = await self.read(self.context.scheduler.list, user_id, *self.paging(LIST_ALL))
        self.listing("Jobs retrieved successfully", page)
