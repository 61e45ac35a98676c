"""``ws/alerts/board/``: the live alert board's change feed.

Frames to the client (JSON text):

- ``{"type": "hello"}`` once joined: the client refetches the board (what changed while
  it was away is in the database, not in this feed);
- ``{"type": "changed", "incidents": [id, ...], "all": false}`` after a commit changed
  the board (``alerts.live``); the client refetches the rows and marks those ids;
- ``{"type": "pong"}`` in answer to ``{"type": "ping"}``.

Only signed-in users who may see alerts (``alerts.services.can_view``) get in; others
are refused before the handshake completes (4401 anonymous, 4403 no such role). The
consumer writes nothing.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from alerts import live, services


@database_sync_to_async
def _may_view(user):
    return services.can_view(user)


class BoardConsumer(AsyncJsonWebsocketConsumer):
    joined = False

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        if not await _may_view(user):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(live.BOARD_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        await self.send_json({"type": "hello"})

    async def disconnect(self, code):
        if self.joined:
            await self.channel_layer.group_discard(live.BOARD_GROUP, self.channel_name)
            self.joined = False

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def board_changed(self, message):
        await self.send_json({"type": "changed", "incidents": message.get("incidents", []),
                              "all": bool(message.get("all"))})
