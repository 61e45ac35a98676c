"""On-call pages in a real Chromium on a phone-sized screen, under the
Content-Security-Policy: the browser's own time zone, the calendar's htmx navigation,
swapping a shift with an override."""

from datetime import time, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from oncall import services
from oncall.models import Layer, Override
from opsplane.testing.fixtures import login

pytestmark = pytest.mark.django_db(transaction=True)
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def schedule(admin_user, make_user):
    people = [make_user("oncall", username=name) for name in ("alice", "bob")]
    schedule = services.create_schedule(by=admin_user, name="Platform",
                                        time_zone="Europe/Berlin")
    today = timezone.localdate()
    services.create_layer(schedule, by=admin_user, name="Primary", participants=people,
                          rotation=Layer.Rotation.DAILY, handoff_time=time(9),
                          start_date=today - timedelta(days=today.weekday()))
    return schedule


def no_sideways_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_phone_swaps_a_shift_and_browses_the_calendar(page, schedule, oncall, screenshots):
    page.set_viewport_size(PHONE)
    login(page, oncall)
    page.goto("/oncall/")
    expect(page.locator(".oncall-card h2")).to_contain_text("Platform")
    expect(page.locator(".oncall-card dd.now strong")).to_have_count(1)
    assert no_sideways_scroll(page)
    page.screenshot(path=screenshots / "oncall-list-phone.png", full_page=True)

    page.click(".oncall-card h2 a")
    expect(page.locator("#calendar li.day")).to_have_count(7)
    assert no_sideways_scroll(page)
    page.screenshot(path=screenshots / "oncall-schedule-phone.png", full_page=True)
    first = page.locator("#calendar li.day h3").first.inner_text()

    # "Later" swaps the calendar in place (htmx) and the address follows.
    page.click("#calendar >> text=Later")
    expect(page.locator("#calendar li.day h3").first).not_to_have_text(first)
    assert "start=" in page.url
    expect(page.locator("#override")).to_be_visible()  # the rest of the page is still there

    # Swap: the first shift of that week, taken by the on-call user.
    page.locator("#calendar a.swap").first.click()
    start = page.input_value("#id_start")
    assert start and page.input_value("#id_end")
    page.select_option("#id_user", label=oncall.username)
    page.fill("#id_note", "swap with alice")
    page.click("#override button[type=submit]")
    expect(page.locator(".message.success")).to_contain_text(f"{oncall.username} is on call")
    override = Override.objects.get()
    assert override.user == oncall and override.note == "swap with alice"


def test_times_follow_the_browsers_zone_until_one_is_chosen(browser, live_server, schedule,
                                                            oncall):
    context = browser.new_context(base_url=live_server.url, timezone_id="America/New_York",
                                  viewport=PHONE)
    page = context.new_page()
    problems = []
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        login(page, oncall)
        page.goto(f"/oncall/{schedule.pk}/")
        # app.js stores the browser's zone in a cookie and reloads once.
        expect(page.locator("#calendar")).to_contain_text("Times in America/New_York")
        expect(page.locator("#viewer-tz")).to_have_value("America/New_York")
        page.select_option("#viewer-tz", "Asia/Shanghai")  # submits by itself
        expect(page.locator("#calendar")).to_contain_text("Times in Asia/Shanghai")
        page.goto(f"/oncall/{schedule.pk}/")
        expect(page.locator("#calendar")).to_contain_text("Times in Asia/Shanghai")
        # A Berlin 09:00 hand-off in Shanghai is 16:00 (winter) or 15:00 (summer).
        hours = page.locator("#calendar li.day").nth(3).locator(".shift .mono").all_inner_texts()
        assert any(h.startswith(("15:00", "16:00")) for h in hours), hours
    finally:
        context.close()
    assert problems == []
