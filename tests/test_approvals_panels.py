"""Open alerts on a change's hosts, beside the request in the approver's inbox and on the
request page: approvals only knows the panel's URL name (``APPROVALS_SUBJECT_PANELS``);
``alerts/panels.py`` answers with the alerts firing on the change's target hosts."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from alerts.models import Alert, Silence
from approvals.testing import request_of
from changes import services as changes
from changes.models import Runbook
from cmdb.models import Environment, Host
from opsplane.testing.fixtures import login

pytestmark = pytest.mark.django_db


def make_alert(name, *, host=None, hint="", severity="warning", status="firing",
               minutes=10, silence=None):
    now = timezone.now()
    since = now - timedelta(minutes=minutes)
    return Alert.objects.create(
        fingerprint=f"{name}-{hint or host.name}", alertname=name, severity=severity,
        status=status, labels={"alertname": name, "instance": f"{hint or host.name}:9100"},
        annotations={"summary": f"{name} on {hint or host.name}"}, starts_at=since,
        host=host, host_hint=hint or host.name, first_received_at=since,
        last_received_at=now, silenced_by=silence,
        resolved_at=now if status == "resolved" else None,
        resolution="sender" if status == "resolved" else "")


@pytest.fixture
def change(operator):
    prod = Environment.objects.create(name="prod", protected=True)
    for name in ("web-1", "web-2"):
        Host.objects.create(name=name, environment=prod, labels={"role": "web"})
    Host.objects.create(name="db-1", environment=prod, labels={"role": "db"})
    runbook = changes.save_runbook(Runbook(), name="restart", description="", by=operator,
                                   definition="steps:\n  - kind: shell\n    command: uptime\n")
    change = changes.compose_change(title="Restart web", runbook=runbook, selector="role=web",
                                    params={}, by=operator)
    return changes.submit_change(change, by=operator)


@pytest.fixture
def alerts(change):
    web1, web2, db1 = (Host.objects.get(name=n) for n in ("web-1", "web-2", "db-1"))
    now = timezone.now()
    silence = Silence.objects.create(matchers=[["alertname", "=", "DiskFilling"]],
                                     starts_at=now - timedelta(hours=1),
                                     ends_at=now + timedelta(hours=1), author="sam")
    return {
        "cpu": make_alert("HighCPU", host=web1, severity="critical", minutes=5),
        "latency": make_alert("SlowResponses", host=web2, minutes=30),
        # Arrived before web-2 was in the CMDB: matched by its host hint.
        "unlinked": make_alert("NTPDrift", hint="web-2", severity="info", minutes=60),
        "silenced": make_alert("DiskFilling", host=web1, silence=silence, minutes=90),
        "resolved": make_alert("OOMKilled", host=web1, status="resolved"),
        "elsewhere": make_alert("ReplicationLag", host=db1, severity="critical"),
    }


def panel_url(change):
    return f"/alerts/changes/{change.pk}/open/"


def test_the_inbox_loads_the_open_alerts_of_the_changes_hosts(client, approver, change,
                                                              alerts, make_user):
    client.force_login(approver)
    inbox = client.get("/approvals/").content.decode()
    assert f'hx-get="{panel_url(change)}" hx-trigger="load"' in inbox
    assert f'href="{panel_url(change)}"' in inbox  # works without JavaScript too
    page = client.get(f"/approvals/requests/{request_of(change).pk}/").content.decode()
    assert f'hx-get="{panel_url(change)}"' in page

    response = client.get(panel_url(change), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "HX-Request" in response["Vary"]
    assert "4 open alerts on these hosts" in html
    # Most severe first, then the oldest.
    names = ["HighCPU", "DiskFilling", "SlowResponses", "NTPDrift"]
    assert [html.index(n) for n in names] == sorted(html.index(n) for n in names)
    # Approvers may not open alert pages: no link that would answer 403.
    assert 'href="/alerts/' not in html
    assert "OOMKilled" not in html and "ReplicationLag" not in html
    assert html.count(">silenced<") == 1 and "HighCPU on web-1" in html
    assert '<span class="status failed">critical</span>' in html
    # Who may open alert pages gets a link to each.
    client.force_login(make_user("operator"))
    linked = client.get(panel_url(change), HTTP_HX_REQUEST="true").content.decode()
    for key in ("cpu", "latency", "unlinked", "silenced"):
        assert f'href="/alerts/{alerts[key].pk}/"' in linked
    # Opened directly (no htmx): the same panel on a page of its own.
    full = client.get(panel_url(change)).content.decode()
    assert "<html" in full and "HighCPU" in full


def test_no_open_alerts_says_so_with_the_number_of_hosts(client, approver, change):
    make_alert("OOMKilled", host=Host.objects.get(name="web-1"), status="resolved")
    client.force_login(approver)
    html = client.get(panel_url(change), HTTP_HX_REQUEST="true").content.decode()
    assert "No open alerts on these 2 hosts." in html and "<table" not in html


@pytest.mark.parametrize(("role", "allowed"), [
    ("operator", True), ("approver", True), ("oncall", True), ("admin", True),
    (None, False)])
def test_whoever_may_see_the_change_sees_its_alerts(client, make_user, change, alerts,
                                                    role, allowed):
    client.force_login(make_user(role))
    response = client.get(panel_url(change), HTTP_HX_REQUEST="true")
    assert response.status_code == (200 if allowed else 403)
    assert ("HighCPU" in response.content.decode()) is allowed


def test_anonymous_people_are_sent_to_log_in_and_unknown_changes_are_404(client, approver,
                                                                         change):
    assert client.get(panel_url(change)).status_code == 302
    client.force_login(approver)
    assert client.get(f"/alerts/changes/{change.pk + 100}/open/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_real_browser_shows_the_alerts_in_the_inbox(page, approver, operator, screenshots):
    prod = Environment.objects.create(name="prod", protected=True)
    web = Host.objects.create(name="web-1", environment=prod, labels={"role": "web"})
    runbook = changes.save_runbook(Runbook(), name="restart", description="", by=operator,
                                   definition="steps:\n  - kind: shell\n    command: uptime\n")
    change = changes.submit_change(changes.compose_change(
        title="Restart web", runbook=runbook, selector="role=web", params={}, by=operator),
        by=operator)
    make_alert("HighCPU", host=web, severity="critical")
    login(page, approver)
    page.goto("/approvals/")
    panel = page.locator(f"#open-alerts-{change.pk}")
    expect(panel).to_contain_text("1 open alert on these hosts")
    expect(panel.locator("tbody tr")).to_contain_text("HighCPU on web-1")
    page.screenshot(path=screenshots / "approvals-inbox-open-alerts.png", caret="initial")


def test_the_change_page_loads_the_panel_too(client, operator, change, alerts):
    client.force_login(operator)
    html = client.get(f"/changes/{change.pk}/").content.decode()
    assert f'hx-get="{panel_url(change)}" hx-trigger="load"' in html
