"""ASGI entry point: Django views and the API over HTTP, Channels consumers over websockets.

Serve with ``uvicorn opsplane.asgi:application``.
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsplane.settings")

from opsplane.startup import load_settings  # noqa: E402

load_settings()

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before consumers (and the models they import) are loaded.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from alerts.api import IntakeApp  # noqa: E402
from opsplane.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The alert intake's POSTs skip Django's middleware (alerts.api.IntakeApp).
        "http": IntakeApp(django_asgi_app),
        # Origin checked against ALLOWED_HOSTS: a page on another site cannot open a
        # socket with the user's cookies.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# Everything imported so far lives as long as the process: move it out of the garbage
# collector's sight, so full collections (which set a Django process' p99 latency)
# scan only what requests allocate.
gc.freeze()
