"""Every websocket path, in one list (apps add their own ``routing.py`` here)."""

from django.urls import path

from changes import routing as changes_routing
from opsplane import consumers

websocket_urlpatterns = [
    path("ws/live/", consumers.UserFeedConsumer.as_asgi()),
    *changes_routing.websocket_urlpatterns,
]
