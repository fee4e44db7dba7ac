"""/api/users/ — the five user endpoints of the API document."""

from texium.server.handlers.base import LIST_ALL, ApiHandler


class UsersHandler(ApiHandler):
    async def get(self) -> None:
        page = await self.read(self.context.users.list, *self.paging(LIST_ALL))
        self.listing("Users retrieved successfully", page)

    async def post(self) -> None:
        user_id = await self.blocking(self.context.users.create, self.json_body())
        self.success("User created successfully", 201, user_id=user_id)


class UserHandler(ApiHandler):
    async def get(self, user_id: str) -> None:
        user = await self.read(self.context.users.get, user_id)
        self.success("User retrieved successfully", data=user)

    async def put(self, user_id: str) -> None:
        await self.blocking(self.context.users.update, user_id, self.json_body())
        self.success("User updated successfully", user_id=user_id)

    async def delete(self, user_id: str) -> None:
        await self.blocking(self.context.users.delete, user_id, self.query_bool("cascade"))
        self.success("User deleted successfully", user_id=user_id)
