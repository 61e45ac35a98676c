"""The changes app's websocket paths (listed in ``opsplane/routing.py``)."""

from django.urls import path

from changes import consumers

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", consumers.RunOutputConsumer.as_asgi()),
]
