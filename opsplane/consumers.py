from channels.generic.websocket import AsyncJsonWebsocketConsumer

from opsplane import live


class UserFeedConsumer(AsyncJsonWebsocketConsumer):
    """A logged-in user's own feed: notices for every page they have open.

    Anonymous or inactive users are refused before the handshake completes.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.group = live.user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        # The feed is one-way; a ping lets clients check the socket is alive.
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def feed_event(self, message):
        await self.send_json(message["event"])
