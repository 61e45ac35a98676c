"""On-call pages: who may see and do what, on call now / next on the list, the calendar
(layers and overrides, htmx partial, the viewer's zone), adding and removing overrides,
editing schedules and layers."""

import re
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oncall import services
from oncall.models import Layer, Override, Schedule

pytestmark = pytest.mark.django_db


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def people(make_user):
    return [make_user("oncall", username=name) for name in ("alice", "bob", "carol")]


@pytest.fixture
def schedule(admin_user, people):
    """Daily at 09:00 Europe/Berlin (alice, bob, carol) from 2026-01-05, and a business
    hours layer above it (dave, Mon-Fri 10:00-16:00)."""
    schedule = services.create_schedule(by=admin_user, name="Platform", time_zone="Europe/Berlin",
                                        description="Primary for the platform team")
    services.create_layer(schedule, by=admin_user, name="Primary", participants=people,
                          rotation=Layer.Rotation.DAILY, handoff_time=time(9),
                          start_date=date(2026, 1, 5))
    return schedule


def names_on_call(schedule, at):
    return [u.username for u in services.on_call(schedule, at)]


PAGES = ["/oncall/", "/oncall/{pk}/", "/oncall/{pk}/?days=14&start=2026-03-23"]
READERS = {"oncall": 200, "operator": 200, "admin": 200, "approver": 403, None: 403}


@pytest.mark.parametrize("role", list(READERS))
def test_pages_for_each_role(client, schedule, make_user, role):
    client.force_login(make_user(role))
    for template in PAGES:
        assert client.get(template.format(pk=schedule.pk)).status_code == READERS[role], template


@pytest.mark.parametrize(("path", "allowed"), [
    ("/oncall/new/", {"admin"}),
    ("/oncall/{pk}/edit/", {"admin"}),
    ("/oncall/{pk}/layers/new/", {"admin"}),
    ("/oncall/{pk}/layers/{layer}/", {"admin"}),
])
def test_editing_pages_for_each_role(client, schedule, make_user, path, allowed):
    layer = schedule.layers.get()
    for role in ("oncall", "operator", "admin", "approver", None):
        client.force_login(make_user(role))
        status = client.get(path.format(pk=schedule.pk, layer=layer.pk)).status_code
        assert status == (200 if role in allowed else 403), (path, role)


def test_posts_are_refused_to_roles_without_the_right(client, schedule, people, make_user):
    layer = schedule.layers.get()
    override = services.create_override(schedule, user=people[0], start=utc(2026, 3, 2, 12),
                                        end=utc(2026, 3, 2, 13), by=people[1])
    posts = [
        (f"/oncall/{schedule.pk}/overrides/", {"operator", "approver", None}),
        (f"/oncall/{schedule.pk}/overrides/{override.pk}/delete/", {"operator", "approver", None}),
        (f"/oncall/{schedule.pk}/delete/", {"oncall", "operator", "approver", None}),
        (f"/oncall/{schedule.pk}/layers/{layer.pk}/delete/",
         {"oncall", "operator", "approver", None}),
        ("/oncall/new/", {"oncall", "operator", None}),
    ]
    for url, refused in posts:
        for role in refused:
            client.force_login(make_user(role))
            assert client.post(url, {"name": "x"}).status_code == 403, (url, role)
    assert Override.objects.count() == 1 and Schedule.objects.count() == 1


def test_navigation_entry(client, make_user):
    client.force_login(make_user("oncall"))
    assert 'href="/oncall/"' in client.get("/").content.decode()
    client.force_login(make_user("approver"))
    assert 'href="/oncall/"' not in client.get("/").content.decode()


def test_list_shows_on_call_now_and_next_in_the_viewers_zone(client, schedule, oncall, people,
                                                            admin_user,
                                                            django_assert_num_queries):
    client.force_login(oncall)
    now = timezone.now()
    who = names_on_call(schedule, now)[0]
    (upcoming,) = services.next_shifts(schedule, now, 1)
    response = client.get("/oncall/?tz=Asia/Shanghai")
    html = response.content.decode()
    assert "Platform" in html and "Europe/Berlin" in html
    now_cell = re.search(r'<dd class="now">(.*?)</dd>', html, re.S).group(1)
    next_cell = re.search(r'<dd class="next">(.*?)</dd>', html, re.S).group(1)
    assert f"<strong>{who}</strong>" in now_cell
    # The next hand-off is 09:00 in Berlin, shown in Shanghai time (16:00 or 15:00).
    shanghai = upcoming.start.astimezone(services.check_zone("Asia/Shanghai"))
    assert shanghai.strftime("%H:%M") in next_cell and shanghai.hour in (15, 16)
    assert response.cookies["opsplane_tz"].value == "Asia/Shanghai"
    # More schedules, the same number of queries.
    with CaptureQueriesContext(connection) as one:
        client.get("/oncall/")
    for i in range(3):
        other = services.create_schedule(by=admin_user, name=f"S{i}", time_zone="Asia/Shanghai")
        services.create_layer(other, by=admin_user, name="L", participants=people,
                              start_date=date(2026, 1, 1))
        services.create_override(other, by=admin_user, user=people[0], start=now,
                                 end=now + timedelta(hours=1))
    with django_assert_num_queries(len(one.captured_queries)):
        html = client.get("/oncall/").content.decode()
    assert html.count('<dd class="now"><strong>alice</strong> <span class="badge">') == 3


def test_nobody_on_call_is_said(client, admin_user, oncall):
    services.create_schedule(by=admin_user, name="Empty", time_zone="UTC")
    client.force_login(oncall)
    html = client.get("/oncall/").content.decode()
    assert re.search(r'<dd class="now">\s*<span class="status failed">nobody</span>', html)


def test_calendar_marks_layers_and_overrides_in_the_viewers_zone(client, admin_user, schedule,
                                                                 people, make_user, oncall):
    dave = make_user("oncall", username="dave")
    services.create_layer(schedule, by=admin_user, name="Business hours", participants=[dave],
                          rotation=Layer.Rotation.WEEKLY, start_date=date(2026, 3, 2),
                          handoff_time=time(10), restrict_days=[0, 1, 2, 3, 4],
                          restrict_start=time(10), restrict_end=time(16))
    services.create_override(schedule, user=people[2], start=utc(2026, 3, 28, 11),
                             end=utc(2026, 3, 28, 15), by=oncall, note="swap")
    client.force_login(oncall)
    response = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23&days=7&tz=America/New_York")
    html = response.content.decode()
    # Monday 23 March: 09:00 CET hand-off is 04:00 in New York (EDT since 8 March).
    monday = html.split("Mon 2026-03-23")[1].split("</li>\n  \n    <li")[0]
    assert "04:00" in monday and "dave" in monday and "Business hours" in monday
    # The lanes: who is on call, each layer, the overrides.
    assert monday.count('class="lane ') == 4
    saturday = html.split("Sat 2026-03-28")[1]
    assert 'class="shift is-override"' in saturday and "07:00–11:00" in saturday  # 11-15 UTC
    assert saturday.count('rect class="c2 override"') == 2  # who is on call, and overrides
    assert "Times in America/New_York" in html and "Europe/Berlin" in html
    assert html.count('<li class="day') == 7
    assert 'style="' not in html and "<script>" not in html  # CSP: no inline styles or scripts
    two_weeks = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23&days=14").content.decode()
    assert two_weeks.count('<li class="day') == 14


def test_calendar_dst_day_has_its_real_length(client, schedule, oncall):
    client.force_login(oncall)
    html = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23&tz=Europe/Berlin").content.decode()
    assert 'viewBox="0 0 1380 10"' in html  # Sunday 29 March: 23 hours
    assert html.count('viewBox="0 0 1440 10"') == 6 * 3  # three lanes a day


def test_htmx_navigation_returns_the_calendar_only(client, schedule, oncall):
    client.force_login(oncall)
    response = client.get(f"/oncall/{schedule.pk}/?start=2026-03-30&days=7",
                          HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="calendar"')
    assert "<html" not in html and "Add an override" not in html
    assert "Mon 2026-03-30" in html
    assert "HX-Request" in response["Vary"]
    assert html.count('class="swap"') == 14  # swap links in the partial too: 2 a day (UTC)


def test_add_an_override_from_the_page_in_the_viewers_zone(client, schedule, people, oncall):
    client.force_login(oncall)
    response = client.post(f"/oncall/{schedule.pk}/overrides/?tz=Asia/Shanghai", {
        "user": people[1].pk, "start": "2026-03-02T20:00", "end": "2026-03-03T02:00",
        "note": "swap with alice"})
    assert response.status_code == 302
    override = Override.objects.get()
    assert (override.start, override.end) == (utc(2026, 3, 2, 12), utc(2026, 3, 2, 18))
    assert override.created_by == oncall
    assert names_on_call(schedule, utc(2026, 3, 2, 12)) == ["bob"]
    page = client.get(response["Location"]).content.decode()
    assert "bob is on call from 2026-03-02 20:00 until 2026-03-03 02:00." in page
    # The end before the start: a clear message, the form kept as typed, nothing stored.
    response = client.post(f"/oncall/{schedule.pk}/overrides/", {
        "user": people[1].pk, "start": "2026-03-02T20:00", "end": "2026-03-02T19:00"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "The end of an override must be after its start." in html
    assert 'value="2026-03-02T19:00"' in html
    response = client.post(f"/oncall/{schedule.pk}/overrides/", {"user": people[1].pk})
    assert "This field is required." in response.content.decode()
    assert Override.objects.count() == 1
    client.post(f"/oncall/{schedule.pk}/overrides/{override.pk}/delete/")
    assert not Override.objects.exists()


def test_swap_link_prefills_the_override_form(client, schedule, oncall, operator):
    client.force_login(oncall)
    html = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23&tz=UTC").content.decode()
    assert "override_start=2026-03-23T08:00&amp;override_end=2026-03-24T08:00" in html
    html = client.get(f"/oncall/{schedule.pk}/?override_start=2026-03-23T08:00"
                      "&override_end=2026-03-24T08:00").content.decode()
    assert 'value="2026-03-23T08:00"' in html and 'value="2026-03-24T08:00"' in html
    client.force_login(operator)
    html = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23").content.decode()
    assert "Add an override" not in html and "override_start=" not in html


def test_admin_creates_a_schedule_and_a_layer(client, admin_user, people):
    client.force_login(admin_user)
    response = client.post("/oncall/new/", {"name": "DB", "time_zone": "Mars/Base"})
    assert "Unknown time zone: Mars/Base." in response.content.decode()
    response = client.post("/oncall/new/", {"name": "DB", "time_zone": "Asia/Shanghai",
                                            "description": ""})
    schedule = Schedule.objects.get(name="DB")
    assert response["Location"] == f"/oncall/{schedule.pk}/"
    form = {"name": "Nights", "level": 1, "rotation": "custom", "shift_length": 12,
            "shift_unit": "hours", "handoff_time": "08:00", "start_date": "2026-03-02",
            "participants": "carol\nalice, bob", "restrict_days": ["0", "1"],
            "restrict_start": "20:00", "restrict_end": "08:00"}
    response = client.post(f"/oncall/{schedule.pk}/layers/new/", {**form, "participants": "zed"})
    assert "Unknown or inactive users: zed" in response.content.decode()
    response = client.post(f"/oncall/{schedule.pk}/layers/new/", form)
    assert response.status_code == 302
    layer = schedule.layers.get()
    assert list(layer.members.values_list("user__username", flat=True)) == ["carol", "alice", "bob"]
    assert layer.length_and_unit == (12, "hours") and layer.restrict_days == [0, 1]
    # Monday 2 March 22:00 Shanghai: the 20:00 shift (k=1, alice).
    assert names_on_call(schedule, utc(2026, 3, 2, 14)) == ["alice"]
    html = client.get(f"/oncall/{schedule.pk}/layers/{layer.pk}/").content.decode()
    assert "carol\nalice\nbob" in html
    response = client.post(f"/oncall/{schedule.pk}/layers/{layer.pk}/",
                           {**form, "participants": "bob"})
    assert names_on_call(schedule, utc(2026, 3, 2, 14)) == ["bob"]
    client.post(f"/oncall/{schedule.pk}/layers/{layer.pk}/delete/")
    assert not schedule.layers.exists()
    client.post(f"/oncall/{schedule.pk}/delete/")
    assert not Schedule.objects.exists()


def test_zone_cookie_is_used_and_bad_zones_fall_back(client, schedule, oncall):
    client.force_login(oncall)
    client.cookies["opsplane_tz"] = "America/New_York"
    html = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23").content.decode()
    assert "Times in America/New_York" in html
    html = client.get(f"/oncall/{schedule.pk}/?start=2026-03-23&tz=Nowhere/Land").content.decode()
    assert "Times in America/New_York" in html
