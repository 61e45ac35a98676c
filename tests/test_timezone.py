"""Times are shown in the viewer's time zone: the opsplane_tz cookie (set by app.js from
the browser) names it; an unknown or hostile value falls back to the site's zone."""


import pytest
from django.utils import timezone


@pytest.mark.parametrize(("cookie", "active"), [
    ("Asia/Shanghai", "Asia/Shanghai"),
    ("America%2FNew_York", "America/New_York"),
    ("Not/AZone", "UTC"),
    ("../../etc/passwd", "UTC"),
    ("", "UTC"),
])
def test_the_cookie_names_the_zone_pages_render_in(rf, cookie, active):
    from opsplane.middleware import TimezoneMiddleware

    seen = {}

    def view(request):
        seen["zone"] = timezone.get_current_timezone_name()
        return None

    request = rf.get("/")
    request.COOKIES["opsplane_tz"] = cookie
    TimezoneMiddleware(view)(request)
    assert seen["zone"] == active
