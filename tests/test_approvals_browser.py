"""Approving in a real Chromium: the decision swaps the panel in place (htmx), without a
page load, under the Content-Security-Policy (the `page` fixture fails on violations)."""

import pytest
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from approvals.testing import request_of
from changes import services as changes
from changes.models import Runbook
from cmdb.models import Environment, Host, Service
from opsplane.testing.fixtures import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_approver_rejects_then_another_approves_from_the_inbox_without_reload(
        page, operator, approver, make_user, screenshots):
    prod = Environment.objects.create(name="prod", protected=True)
    hosts = [Host.objects.create(name=f"web-{i}", environment=prod, labels={"role": "web"})
             for i in (1, 2, 3)]
    Service.objects.create(name="storefront", tier="critical").hosts.set(hosts)
    runbook = changes.save_runbook(Runbook(), name="restart", description="", by=operator,
                                   definition="parameters:\n  - name: token\n    type: string\n"
                                              "    secret: true\nsteps:\n  - name: restart\n"
                                              "    kind: shell\n    command: systemctl restart"
                                              " nginx\n")
    change = changes.compose_change(title="Restart nginx", runbook=runbook,
                                    selector="role=web", params={"token": "s3cret"},
                                    by=operator)
    changes.submit_change(change, by=operator)
    pk = request_of(change).pk

    login(page, approver)
    page.goto("/approvals/")
    panel = page.locator(f"#approval-{pk}")
    expect(panel).to_contain_text("0 of 1 from approver")
    expect(page.locator("article")).to_contain_text("token = ********")
    # caret="initial": hiding the caret makes Playwright inject a <style>, which our CSP
    # blocks (and the page fixture would report).
    page.screenshot(path=screenshots / "approvals-inbox.png", caret="initial")
    page.evaluate("window.notReloaded = true")
    panel.locator("button[value=reject]").click()
    expect(page.locator(f"#approval-{pk} .form-error")).to_contain_text("Say why")
    page.locator(f"#approval-{pk} textarea").fill("batches of one, please")
    page.locator(f"#approval-{pk} button[value=request_changes]").click()
    expect(page.locator(f"#approval-{pk}")).not_to_contain_text("Say why")
    assert page.evaluate("window.notReloaded") is True
    assert request_of(change).decisions.get().kind == "request_changes"

    other = make_user("approver")
    page.context.clear_cookies()
    login(page, other)
    page.goto(f"/changes/{change.pk}/")
    page.locator(f"#approval-{pk} button[value=approve]").click()
    expect(page.locator(f"#approval-{pk}")).to_contain_text("approval complete")
    assert request_of(change).status == ApprovalRequest.Status.APPROVED
    page.screenshot(path=screenshots / "change-approved.png", caret="initial")
    page.goto(f"/approvals/requests/{pk}/")
    page.screenshot(path=screenshots / "approval-request.png", caret="initial")
    page.goto("/approvals/calendar/")
    page.screenshot(path=screenshots / "approvals-calendar.png", caret="initial")
