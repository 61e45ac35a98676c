"""Journey 1, the operator: finds hosts by selector, pins a new host's key, composes a
change from a runbook with parameters on ``env=prod,role=web``, sees it wait for two
approvers, starts it, watches the output arrive while the run is going, sees one host
fail, retries only that host and downloads the log. Everything through the browser,
against the product running as separate processes (see conftest.py)."""

import re

import pytest
from playwright.sync_api import expect

from approvals.testing import approve
from changes.models import Change, HostResult, Run

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_runs_a_change_on_prod_web_and_retries_the_failed_host(
        open_browser, world, journey_shots, confirm):
    users = world["users"]
    page = open_browser("olga")

    # Hosts by selector; the filter lives in the URL (a link another operator can open).
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Inventory").click()
    page.fill("#selector", "env=prod,role=web")
    results = page.locator("#results")
    expect(results.locator(".result-count")).to_have_text("2 hosts")
    expect(page).to_have_url(re.compile(r"selector=env%3Dprod%2Crole%3Dweb"))
    row = results.locator("tr", has_text="lab-004")
    expect(row).to_contain_text("no host key")
    expect(results.locator("tr", has_text="lab-001")).to_contain_text("ok")
    page.screenshot(path=journey_shots / "01-hosts-by-selector.png", caret="initial")

    # A host racked after the import: pin the key it presents, after a question that
    # names it.
    row.get_by_role("link", name="lab-004").click()
    expect(page.locator(".card", has_text="Host keys")).to_contain_text(
        "No host key is pinned")
    page.screenshot(path=journey_shots / "02-host-without-key.png", caret="initial")
    # A key mangled in the copy: refused next to the field, the text kept to fix.
    page.fill("#id_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA-cut-short")
    confirm(page, lambda: page.get_by_role("button", name="Trust host key").click())
    key_field = page.locator(".field", has=page.locator("#id_key"))
    expect(key_field.locator(".field-error")).to_be_visible()
    expect(page.locator("#id_key")).to_have_value(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA-cut-short")
    # Empty: pin the key the host presents now (trust on first use).
    page.fill("#id_key", "")
    asked = confirm(page, lambda: page.get_by_role("button", name="Trust host key").click())
    assert "lab-004" in asked
    expect(page.locator(".messages")).to_contain_text("Pinned host key SHA256:")
    expect(page.locator(".card", has_text="Host keys")).to_contain_text(
        "trusted by olga (first contact)")
    # With its key pinned, a worker may connect: gather its facts.
    page.get_by_role("button", name="Gather facts now").click()
    expect(page.locator(".messages")).to_contain_text("Gathering facts from lab-004")
    page.screenshot(path=journey_shots / "03-host-key-pinned.png", caret="initial")

    # Compose: the runbook's parameters appear when it is picked; a selector matching
    # nothing is refused next to the field, and what was typed stays.
    nav.get_by_role("link", name="Changes").click()
    page.get_by_role("link", name="New change").click()
    page.fill("#id_title", "Restart nginx on the prod web servers")
    page.select_option("#id_runbook", "rolling-restart")
    expect(page.locator("#id_param_service")).to_be_visible()
    page.select_option("#id_param_service", "nginx")
    page.fill("#id_param_pause", "30")
    page.fill("#id_selector", "env=prod,role=wbe")
    expect(page.locator("#preview")).to_contain_text("0 hosts match")
    page.get_by_role("button", name="Save change").click()
    selector_field = page.locator(".field", has=page.locator("#id_selector"))
    expect(selector_field.locator(".field-error")).to_have_text(
        "No enabled host matches this selector.")
    expect(page.locator("#id_title")).to_have_value("Restart nginx on the prod web servers")
    expect(page.locator("#id_param_pause")).to_have_value("30")
    page.screenshot(path=journey_shots / "04-compose-error.png", caret="initial")
    page.fill("#id_selector", "env=prod,role=web")
    expect(page.locator("#preview")).to_contain_text("2 hosts match: lab-001, lab-004")
    page.screenshot(path=journey_shots / "05-compose.png", caret="initial")
    page.get_by_role("button", name="Save change").click()

    # It waits for approval: two approvers, and the author is not one of them.
    expect(page.locator("h1")).to_contain_text("awaiting approval (0 of 2)")
    expect(page.locator(".card", has_text="target hosts")).to_contain_text("lab-004")
    expect(page.locator("section[id^=approval-]")).to_contain_text("0 of 2 from approver")
    expect(page.get_by_role("button", name="Start")).to_have_count(0)
    page.screenshot(path=journey_shots / "06-waiting-for-approval.png", caret="initial")
    change = Change.objects.get(title="Restart nginx on the prod web servers")
    assert change.status == Change.Status.PENDING_APPROVAL
    # (The approvers' side in the browser is journey 2.)
    approve(change, by=users["ann"])
    approve(change, by=users["bob"])

    # lab-004 is under maintenance: its restart step will fail. The load balancer (a
    # file in each lab host's home) reports the hosts drained only when the test says.
    homes = world["lab_homes"]
    lock = homes / "lab-004" / "maintenance.lock"
    lock.write_text("disk replacement, ticket OPS-1234\n")
    drained = [homes / name / "lb-drained" for name in ("lab-001", "lab-004")]
    for path in drained:
        path.unlink(missing_ok=True)

    page.reload()
    start = page.locator(".callout").get_by_role("button", name="Start")
    asked = confirm(page, lambda: start.click())
    assert "2 hosts (prod)" in asked and "Restart nginx" in asked

    # The run page: lines arrive while the run is still going, not at its end.
    expect(page).to_have_url(re.compile(rf"/changes/{change.pk}/runs/1/$"))
    lines = page.locator("#merged .ln")
    expect(lines.filter(has_text="draining nginx on lab-001")).to_be_visible(timeout=20_000)
    expect(lines.filter(has_text="draining nginx on lab-004")).to_be_visible()
    run = Run.objects.get(change=change, number=1)
    assert not run.is_terminal, "output must stream while the run is going"
    # (The step header echoes the command, with "$OPSPLANE_LAB_HOST" unexpanded.)
    assert lines.filter(has_text="drained nginx on lab-").count() == 0
    expect(page.locator("#live-state")).to_have_text("live")
    page.screenshot(path=journey_shots / "07-run-live.png", caret="initial")
    for path in drained:
        path.write_text("0 connections\n")
    expect(lines.filter(has_text="drained nginx on lab-001")).to_be_visible(timeout=20_000)

    # One host fails, with its reason; the other is fine.
    expect(page.locator("#live-state")).to_have_text("complete", timeout=20_000)
    expect(page.locator("#host-grid li.hs-failed")).to_have_text("lab-004")
    expect(page.locator("#host-grid li.hs-ok")).to_have_text("lab-001")
    expect(lines.filter(has_text="lab-004 is under maintenance")).to_be_visible()
    expect(page.locator("#hosts")).to_contain_text("failed")
    page.screenshot(path=journey_shots / "08-run-one-host-failed.png", caret="initial")

    # The log as a download: every host's lines, prefixed with the host.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download run log").click()
    log = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115, PTH123
    assert download.value.suggested_filename == f"change-{change.pk}-run-1.log"
    assert "restarted nginx on lab-001" in log
    assert "lab-004 is under maintenance: disk replacement, ticket OPS-1234" in log

    # Maintenance over: retry only the failed host, after a question that names it.
    lock.unlink()
    retry = page.get_by_role("button", name="Retry failed hosts")
    asked = confirm(page, lambda: retry.click())
    assert "lab-004" in asked and "lab-001" not in asked
    expect(page).to_have_url(re.compile(rf"/changes/{change.pk}/runs/2/$"))
    expect(page.locator("#host-grid li")).to_have_count(1)
    expect(page.locator("#live-state")).to_have_text("complete", timeout=30_000)
    expect(page.locator("#host-grid li.hs-ok")).to_have_text("lab-004")
    expect(lines.filter(has_text="restarted nginx on lab-004")).to_be_visible()
    page.screenshot(path=journey_shots / "09-retry-ok.png", caret="initial")
    # The facts gathered at the start are on the host's page by now.
    page.goto("/inventory/hosts/lab-004/")
    expect(page.locator(".card", has_text="Facts")).to_contain_text("Kernel")
    for path in drained:
        path.unlink()
    retried = Run.objects.get(change=change, number=2)
    assert list(retried.results.values_list("host_name", "state")) == [
        ("lab-004", HostResult.State.OK)]
