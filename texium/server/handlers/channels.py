"""/api/scheduler/channels — alert destinations jobs name in `notify.channels`: create, list,
read, update, delete, send a test message, and read the deliveries.

Owned like servers: a `user` sees and changes only their own channels (others' ids answer 404).
Secrets are never in an answer (the core masks them).
"""

from texium.server.handlers.base import LIST_ALL, ApiHandler


class ChannelAccess(ApiHandler):
    async def own_channel(self, channel_id: str) -> dict:
        return self.own(await self.read(self.context.channels.get, channel_id), "Channel not found")


class ChannelsHandler(ChannelAccess):
    async def get(self) -> None:
        page = await self.read(self.context.channels.list, self.scope, *self.paging(LIST_ALL))
        self.listing("Channels retrieved successfully", page)

    async def post(self) -> None:
        body = self.json_body()
        self.owner_field(body.get("user_id"))
        channel_id, name = await self.blocking(self.context.channels.create, body)
        self.success(f"Channel '{name}' created successfully", 201, channel_id=channel_id)


class ChannelHandler(ChannelAccess):
    async def get(self, channel_id: str) -> None:
        channel = await self.own_channel(channel_id)
        self.success("Channel retrieved successfully", data=channel)

    async def put(self, channel_id: str) -> None:
        body = self.json_body()
        if self.scope is not None:
            await self.own_channel(channel_id)
            self.owner_field(body.get("user_id"))
        await self.blocking(self.context.channels.update, channel_id, body)
        self.success("Channel updated successfully", channel_id=channel_id)

    patch = put

    async def delete(self, channel_id: str) -> None:
        if self.scope is not None:
            await self.own_channel(channel_id)
        await self.blocking(self.context.channels.delete, channel_id)
        self.success("Channel deleted successfully", channel_id=channel_id)


class ChannelTestHandler(ChannelAccess):
    async def post(self, channel_id: str) -> None:
        await self.own_channel(channel_id)
        delivery = await self.blocking(self.context.channels.test, channel_id)
        message = "Test message sent" if delivery["ok"] else "Test message not delivered"
        self.success(message, channel_id=channel_id, delivery=delivery)


class ChannelDeliveriesHandler(ChannelAccess):
    async def get(self, channel_id: str) -> None:
        await self.own_channel(channel_id)
        page = await self.read(self.context.channels.deliveries, channel_id, *self.paging())
        self.listing("Deliveries retrieved successfully", page)
