"""The only caller of the channel layer in the project package: builds group names and
publishes. Apps have their own ``live.py`` for their groups."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def user_group(user_id):
    return f"user.{user_id}"


def publish_to_user(user_id, event):
    """Send ``event`` (a JSON-able dict with a ``type`` key of our own, e.g.
    ``"notice"``) to every open page of that user."""
    async_to_sync(get_channel_layer().group_send)(
        user_group(user_id), {"type": "feed.event", "event": event}
    )


async def apublish_to_user(user_id, event):
    await get_channel_layer().group_send(
        user_group(user_id), {"type": "feed.event", "event": event}
    )
