"""The browser shell in a real Chromium: login, navigation, language, live filtering,
all under the Content-Security-Policy (the `page` fixture fails on any violation)."""

import pytest
from playwright.sync_api import expect

from cmdb.models import Environment, Host
from opsplane.testing.fixtures import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_logs_in_and_switches_to_chinese(page, operator, screenshots):
    page.goto("/inventory/")
    expect(page).to_have_url("/login/?next=/inventory/")
    login(page, operator)
    nav = page.locator("nav.mainnav a")
    expect(nav).to_have_text(["Inventory", "Changes", "Approvals", "Alerts", "On call"])
    page.screenshot(path=screenshots / "home.png")
    page.select_option("#language", "zh-hans")  # submits by itself (app.js)
    expect(page.locator("nav.mainnav a").first).to_have_text("资产")
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")


def test_host_list_filters_live_as_you_type(page, operator, screenshots):
    prod = Environment.objects.create(name="prod", protected=True)
    for i in range(1, 8):
        Host.objects.create(name=f"web-{i:02d}", environment=prod,
                            labels={"role": "web" if i < 5 else "db"})
    login(page, operator)
    page.goto("/inventory/")
    expect(page.locator(".result-count")).to_have_text("7 hosts")
    page.fill("#selector", "role=db")
    expect(page.locator(".result-count")).to_have_text("3 hosts")  # no reload: htmx
    expect(page).to_have_url("/inventory/?selector=role%3Ddb&q=&env=&state=&sort=name")
    page.fill("#selector", "role in (web")
    expect(page.locator(".selector-error")).to_contain_text("position 12: expected")
    page.screenshot(path=screenshots / "inventory-selector-error.png")
