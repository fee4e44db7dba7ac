"""/api/scheduler/jobs/{id}/triggers — a job's trigger URLs: create (the token shown once), list,
revoke; and POST /trigger/<token>, a use (no API key: the token is the credential).

Owned through the job: its owner and admins manage its triggers; a `user` asking about another's
job gets the job's 404. The token is in the answer to create and nowhere else; the access log
shows a use as `/trigger/***`.
"""

from texium.server.handlers.base import ApiHandler
from texium.server.handlers.jobs import JobAccess


class TriggersHandler(JobAccess):
    carries_secrets = True  # create answers with the token

    async def post(self, job_id: str) -> None:
        job = await self.own_job(job_id, change=True)
        body = self.json_body()
        trigger, token = await self.blocking(self.context.triggers.create, job, body, self.actor)
        url = self.public_link(f"/trigger/{token}")
        message = f"Trigger '{trigger['name']}' created"
        self.success(message, 201, trigger_id=trigger["_id"], token=token, url=url, data=trigger)

    async def get(self, job_id: str) -> None:
        await self.own_job(job_id)
        triggers = await self.read(self.context.triggers.list, job_id)
        self.success("Triggers retrieved successfully", total=len(triggers), data=triggers)


class TriggerHandler(JobAccess):
    async def delete(self, job_id: str, trigger_id: str) -> None:
        job = await self.own_job(job_id, change=True)
        trigger = await self.blocking(self.context.triggers.revoke, job, trigger_id, self.actor)
        self.success("Trigger revoked", data=trigger)


class TriggerUseHandler(ApiHandler):
    """POST /trigger/<token> with an optional JSON body of parameter values: 202
    {"execution_id"} and nothing else."""

    public = True

    @property
    def logged_path(self) -> str:
        return "/trigger/***"  # the token is a credential

    async def post(self, token: str) -> None:
        triggers = self.context.triggers
        triggers.admit(token)
        body = self.optional_json_body()
        execution_id = await self.blocking(triggers.use, token, body, self.client)
        self.reply({"execution_id": execution_id}, 202)
