"""/api/scheduler/monitors — heartbeat monitors of jobs that run elsewhere: create, list, read,
update, delete, rotate the ping token; and /ping/<token>[/start|/fail|/<exit code>], the pings
themselves (no API key: the token is the credential).

Owned like channels: a `user` sees and changes only their own monitors (others' ids answer 404).
The ping URL holds the token, which is stored only as a hash: it is in the answer to create and
rotate, and nowhere else.
"""

from texium.core.records.monitors import ping_kind
from texium.server.handlers.base import LIST_ALL, ApiHandler


class MonitorAccess(ApiHandler):
    carries_secrets = True  # create and rotate answer with the ping URL

    async def own_monitor(self, monitor_id: str) -> dict:
        return self.own(await self.read(self.context.monitors.get, monitor_id), "Monitor not found")

    def ping_url(self, token: str) -> str:
        return self.public_link(f"/ping/{token}")


class MonitorsHandler(MonitorAccess):
    async def get(self) -> None:
        page = await self.read(self.context.monitors.list, self.scope, *self.paging(LIST_ALL))
        self.listing("Monitors retrieved successfully", page)

    async def post(self) -> None:
        body = self.json_body()
        self.owner_field(body.get("user_id"))
        monitor_id, name, token = await self.blocking(self.context.monitors.create, body)
        message = f"Monitor '{name}' created successfully"
        self.success(message, 201, monitor_id=monitor_id, ping_url=self.ping_url(token))


class MonitorHandler(MonitorAccess):
    async def get(self, monitor_id: str) -> None:
        monitor = await self.own_monitor(monitor_id)
        self.success("Monitor retrieved successfully", data=monitor)

    async def put(self, monitor_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_monitor(monitor_id)
            self.owner_field(body.get("user_id"))
        await self.blocking(self.context.monitors.update, monitor_id, body)
        self.success("Monitor updated successfully", monitor_id=monitor_id)

    patch = put

    async def delete(self, monitor_id: str) -> None:
        if self.scope is not None:
            await self.own_monitor(monitor_id)
        await self.blocking(self.context.monitors.delete, monitor_id)
        self.success("Monitor deleted successfully", monitor_id=monitor_id)


class MonitorRotateHandler(MonitorAccess):
    async def post(self, monitor_id: str) -> None:
        await self.own_monitor(monitor_id)
        token = await self.blocking(self.context.monitors.rotate, monitor_id)
        self.success("Ping URL replaced", monitor_id=monitor_id, ping_url=self.ping_url(token))


class PingHandler(ApiHandler):
    """A ping: GET or POST, a body (up to 10 KB kept) as the run's output. Rate-limited per token
    and per address (429 with Retry-After); an unknown token is a plain 404."""

    public = True

    @property
    def logged_path(self) -> str:
        """The path as the access log shows it: the token is a credential."""
        action = self.path_args[1] if len(self.path_args) > 1 and self.path_args[1] else None
        return "/ping/***" + (f"/{action}" if action else "")

    async def get(self, token: str, action: str | None = None) -> None:
        monitors = self.context.monitors
        monitors.admit(token, self.client)
        kind, exit_code = ping_kind(action)
        await self.blocking(monitors.ping, token, kind, exit_code, self.raw_body())
        self.reply({"ok": True})

    post = get
