"""/api/servers/ — the document's four server endpoints plus update and delete.

A `user` sees and changes only their own servers; others' ids answer 404.
"""

import tornado.web

from texium.server.handlers.base import LIST_ALL, ApiHandler


class ServerAccess(ApiHandler):
    async def own_server(self, server_id: str) -> dict:
        return self.own(await self.read(self.context.servers.get, server_id), "Server not found")


class ServersHandler(ServerAccess):
    async def get(self) -> None:
        page = await self.read(self.context.servers.list, self.scope, *self.paging(LIST_ALL))
        self.listing("Servers retrieved successfully", page)


class ServerCreateHandler(ServerAccess):
    async def post(self) -> None:
        body = self.json_body()
        self.owner_field(body.get("user_id"))
        server_id, name = await self.blocking(self.context.servers.create, body)
        self.success(f"Server {name} created successfully", 201, server_id=server_id)


class ServerHandler(ServerAccess):
    async def get(self, server_id: str) -> None:
        server = await self.own_server(server_id)
        self.success("Server retrieved successfully", data=server)

    async def put(self, server_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_server(server_id)
            self.owner_field(body.get("user_id"))
        await self.blocking(self.context.servers.update, server_id, body)
        self.success("Server updated successfully", server_id=server_id)

    async def delete(self, server_id: str) -> None:
        if self.scope is not None:
            await self.own_server(server_id)
        await self.blocking(self.context.servers.delete, server_id)
        self.success("Server deleted successfully", server_id=server_id)


class UserServersHandler(ServerAccess):
    async def get(self, user_id: str) -> None:
        if self.scope is not None and user_id != self.scope:
            raise tornado.web.HTTPError(404, reason="User not found")
        page = await self.read(self.context.servers.list, user_id, *self.paging(LIST_ALL))
        self.listing("Servers retrieved successfully", page)
