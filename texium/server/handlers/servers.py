"""/api/servers/ — the document's four server endpoints plus update and delete."""

from texium.server.handlers.base import LIST_ALL, ApiHandler


class ServersHandler(ApiHandler):
    async def get(self) -> None:
        page = await self.read(self.context.servers.list, None, *self.paging(LIST_ALL))
        self.listing("Servers retrieved successfully", page)


class ServerCreateHandler(ApiHandler):
    async def post(self) -> None:
        server_id, name = await self.blocking(self.context.servers.create, self.json_body())
        self.success(f"Server {name} created successfully", 201, server_id=server_id)


class ServerHandler(ApiHandler):
    async def get(self, server_id: str) -> None:
        server = await self.read(self.context.servers.get, server_id)
        self.success("Server retrieved successfully", data=server)

    async def put(self, server_id: str) -> None:
        await self.blocking(self.context.servers.update, server_id, self.json_body())
        self.success("Server updated successfully", server_id=server_id)

    async def delete(self, server_id: str) -> None:
        await self.blocking(self.context.servers.delete, server_id)
        self.success("Server deleted successfully", server_id=server_id)


class UserServersHandler(ApiHandler):
    async def get(self, user_id: str) -> None:
        page = await self.read(self.context.servers.list, user_id, *self.paging(LIST_ALL))
        self.listing("Servers retrieved successfully", page)
