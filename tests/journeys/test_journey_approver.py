"""Journey 2, the approvers: a production change waits in the inbox with its steps,
hosts and services; one approver approves, the author (an approver too) cannot approve
their own, a second approver completes it; an edit after approval sends it back to the
inbox, where the first approver is told they approved an earlier version."""

import re

import pytest
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from approvals.testing import request_of
from changes import services as changes
from changes.models import Change, Runbook

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_approvers_sign_off_and_an_edit_asks_them_again(
        open_browser, world, journey_shots):
    pat = world["users"]["pat"]
    change = changes.compose_change(
        title="Restart nginx on the prod web servers", runbook=Runbook.objects.get(
            name="rolling-restart"), selector="env=prod,role=web",
        params={"service": "nginx", "pause": 2}, strategy={"parallelism": 1}, by=pat)
    changes.submit_change(change, by=pat)
    pk = request_of(change).pk

    # Ann's inbox: what runs, where, on which services, before she decides.
    ann = open_browser("ann")
    ann.get_by_role("navigation", name="Main").get_by_role("link", name="Approvals").click()
    card = ann.locator("article", has_text="Restart nginx on the prod web servers")
    expect(card).to_contain_text("asked by pat")
    expect(card).to_contain_text("rolling-restart")
    expect(card).to_contain_text("env=prod,role=web")
    expect(card).to_contain_text("prod: 2")
    expect(card).to_contain_text("storefront: 2")
    expect(card).to_contain_text("service = nginx")
    card.get_by_text("2 steps").click()
    expect(card.locator(".steps")).to_contain_text("draining {{ service }}")
    expect(card.locator(".steps")).to_contain_text("maintenance.lock")
    panel = ann.locator(f"#approval-{pk}")
    expect(panel).to_contain_text("0 of 2 from approver")
    ann.screenshot(path=journey_shots / "01-inbox.png", caret="initial")
    panel.get_by_role("button", name="Approve").click()
    expect(panel).to_contain_text("1 of 2 from approver: ann")
    expect(panel.get_by_role("button", name="Approve")).to_have_count(0)
    assert request_of(change).status == ApprovalRequest.Status.PENDING

    # Pat wrote it: no approve button for pat, and the page says why.
    author = open_browser("pat")
    author.goto(f"/approvals/requests/{pk}/")
    mine = author.locator(f"#approval-{pk}")
    expect(mine).to_contain_text("You wrote this; someone else must approve it.")
    expect(mine.get_by_role("button", name="Approve")).to_have_count(0)
    author.screenshot(path=journey_shots / "02-author-cannot-approve.png", caret="initial")
    author.goto("/approvals/")
    expect(author.locator("article")).to_have_count(0)
    expect(author.locator(".empty-state")).to_contain_text("Nothing waits for your approval.")

    # Bob completes it from his inbox.
    bob = open_browser("bob")
    bob.goto("/approvals/")
    bob.locator(f"#approval-{pk}").get_by_role("button", name="Approve").click()
    expect(bob.locator(f"#approval-{pk}")).to_contain_text(re.compile(
        r"2 of 2 from approver: (ann, bob|bob, ann)"))
    assert request_of(change).status == ApprovalRequest.Status.APPROVED
    bob.goto(f"/changes/{change.pk}/")
    expect(bob.locator(f"#approval-{pk}")).to_contain_text("approval complete")
    bob.screenshot(path=journey_shots / "03-approved.png", caret="initial")

    # Pat edits the approved change (a longer drain): it goes back to the approvers.
    author.goto(f"/changes/{change.pk}/")
    author.get_by_role("link", name="Edit", exact=True).click()
    author.fill("#id_param_pause", "5")
    author.get_by_role("button", name="Save change").click()
    expect(author.locator("h1")).to_contain_text("awaiting approval (0 of 2)")
    change.refresh_from_db()
    assert change.status == Change.Status.PENDING_APPROVAL
    assert request_of(change).status == ApprovalRequest.Status.PENDING

    ann.goto("/approvals/")
    panel = ann.locator(f"#approval-{pk}")
    expect(panel).to_contain_text("0 of 2 from approver")
    expect(panel).to_contain_text("You approved an earlier version.")
    expect(ann.locator("article", has_text="Restart nginx")).to_contain_text("pause = 5")
    ann.screenshot(path=journey_shots / "04-back-in-inbox.png", caret="initial")
    ann.goto(f"/approvals/requests/{pk}/")
    timeline = ann.locator(".timeline")
    expect(timeline.locator("li", has_text="ann approved")).to_contain_text(
        "an earlier version")
    expect(timeline.locator("li", has_text="bob approved")).to_contain_text(
        "an earlier version")
    ann.screenshot(path=journey_shots / "05-request-timeline.png", caret="initial")
