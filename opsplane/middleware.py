import functools
import zoneinfo
from urllib.parse import unquote

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.utils import timezone

from opsplane import views


class ProbeMiddleware:
    """Serve /healthz, /readyz and /metrics before any other middleware runs.

    They must answer whatever Host header a load balancer or Prometheus sends (often
    the replica's IP address, which ALLOWED_HOSTS does not list), and they need no
    session, CSRF or locale. Their views handle their own authentication (the metrics
    token).
    """

    PROBES = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics_view}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = self.PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Every page needs a login (Django's middleware), except the API, where DRF
    authenticates each request itself (tokens or session) and answers 401/403 in JSON
    instead of redirecting a script to a login form. Open pages are marked with
    ``@login_not_required``."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


TZ_COOKIE = "opsplane_tz"


class TimezoneMiddleware:
    """Show times in the viewer's time zone: the ``opsplane_tz`` cookie, which app.js sets
    from the browser's own zone, names an IANA zone; anything else (or none) leaves the
    site's ``TIME_ZONE``. Dates are stored in UTC either way."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = _zone(request.COOKIES.get(TZ_COOKIE, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return self.get_response(request)


@functools.lru_cache(maxsize=64)
def _zone(name):
    name = unquote(name)
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
