"""Every websocket path, in one list (apps add their own ``routing.py`` here)."""

from django.urls import path

from alerts import consumers as alerts_consumers
from changes import routing as changes_routing
from opsplane import consumers

websocket_urlpatterns = [
    path("ws/live/", consumers.UserFeedConsumer.as_asgi()),
    *changes_routing.websocket_urlpatterns,
    # Here rather than in alerts/routing.py, which is the alert routing tree.
    path("ws/alerts/board/", alerts_consumers.BoardConsumer.as_asgi()),
]
