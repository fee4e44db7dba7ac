"""/api/users/ — the five user endpoints of the API document, and each user's API keys.

Managing users is for admins (403 for a `user`); a user may read themselves and manage their
own keys. A new key is shown once, in the answer that creates it.
"""

import tornado.web

from texium.server.handlers.base import LIST_ALL, ApiHandler


class UsersHandler(ApiHandler):
    admin_only = True

    async def get(self) -> None:
        page = await self.read(self.context.users.list, *self.paging(LIST_ALL))
        self.listing("Users retrieved successfully", page)

    async def post(self) -> None:
        user_id = await self.blocking(self.context.users.create, self.json_body())
        self.success("User created successfully", 201, user_id=user_id)


class SelfOrAdmin(ApiHandler):
    def self_or_admin(self, user_id: str) -> None:
        if not self.is_admin and user_id != self.user["_id"]:
            raise tornado.web.HTTPError(403, reason="Only an admin may manage other users")


class UserHandler(SelfOrAdmin):
    async def get(self, user_id: str) -> None:
        self.self_or_admin(user_id)
        user = await self.read(self.context.users.get, user_id)
        self.success("User retrieved successfully", data=user)

    async def put(self, user_id: str) -> None:
        self.require_admin()
        await self.blocking(self.context.users.update, user_id, self.json_body())
        self.success("User updated successfully", user_id=user_id)

    async def delete(self, user_id: str) -> None:
        self.require_admin()
        await self.blocking(self.context.users.delete, user_id, self.query_bool("cascade"))
        await self.blocking(self.context.keys.revoke_all, user_id)
        self.success("User deleted successfully", user_id=user_id)


class ApiKeysHandler(SelfOrAdmin):
    carries_secrets = True  # a new key, in the answer that creates it

    async def get(self, user_id: str) -> None:
        self.self_or_admin(user_id)
        keys = await self.blocking(self.context.keys.list, user_id)
        self.success("API keys retrieved successfully", total=len(keys), data=keys)

    async def post(self, user_id: str) -> None:
        self.self_or_admin(user_id)
        body = self.json_body() if self._received else {}
        entry, key = await self.blocking(self.context.keys.create, user_id, body)
        self.success("API key created: it is shown only this once", 201, key_id=entry["_id"], key=key, data=entry)


class ApiKeyHandler(SelfOrAdmin):
    async def delete(self, user_id: str, key_id: str) -> None:
        self.self_or_admin(user_id)
        await self.blocking(self.context.keys.revoke, user_id, key_id)
        self.success("API key revoked", key_id=key_id)
