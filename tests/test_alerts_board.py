"""The live alert board and the incident page: the websocket hears a committed intake
(real Redis channel layer) and nothing of a rolled-back one; who may watch and act; the
board's order, filters, empty state and htmx answers; the incident page's timeline and
host; and in a real Chromium, an alert posted to the intake appearing on the open board
without a reload, acknowledged and resolved from the keyboard."""

import re
import time
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.test import Client

from alerts import incidents as actions
from alerts import live
from alerts.models import Incident, IncidentEvent
from alerts.testing import am_alert, am_payload, make_integration, post

HOST_ALERT = {"alertname": "DiskFull", "instance": "web-01:9100", "severity": "critical"}


def _post(token, *labels, status="firing"):
    """Post Alertmanager alerts to the intake as a separate request (committed)."""
    response = post(Client(), token, am_payload([am_alert(dict(lbl), status=status)
                                                 for lbl in labels]))
    assert response.status_code == 200, response.content
    return response.json()


async def _next_change(socket_, timeout=5):
    """The next ``changed`` frame (others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await socket_.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "changed":
            return message


async def _joined(socket_):
    """Connected, hello received, and whatever an earlier test's commits still had on
    its way (a process publishes up to ``live.INTERVAL`` late) drained."""
    assert (await socket_.connect())[0]
    assert await socket_.receive_json_from(timeout=5) == {"type": "hello"}
    while not await socket_.receive_nothing(timeout=2 * live.INTERVAL):
        await socket_.receive_output()


# --- the websocket -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_board_socket_hears_a_new_alert_posted_to_the_intake(websockets, oncall,
                                                                       admin_user):
    _integration, token = await database_sync_to_async(make_integration)(admin_user)
    board = await websockets("/ws/alerts/board/", oncall)
    await _joined(board)

    await database_sync_to_async(_post)(token, HOST_ALERT)
    message = await _next_change(board)
    incident = await database_sync_to_async(Incident.objects.get)()
    assert message["incidents"] == [incident.pk] and message["all"] is False

    # One request of many alerts is one message, not one per alert.
    many = [{"alertname": f"Load{i}", "instance": f"web-{i:02d}", "severity": "warning"}
            for i in range(40)]
    await database_sync_to_async(_post)(token, *many)
    message = await _next_change(board)
    opened = await database_sync_to_async(Incident.objects.count)()
    assert opened == 41 and len(message["incidents"]) == 40
    assert await board.receive_nothing(timeout=0.6)

    # An ack is heard too (alerts.states publishes on commit); a ping is answered.
    await database_sync_to_async(actions.acknowledge)(incident, oncall, via="board")
    assert (await _next_change(board))["incidents"] == [incident.pk]
    await board.send_json_to({"type": "ping"})
    assert await board.receive_json_from(timeout=5) == {"type": "pong"}
    await board.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_nothing_is_published_for_a_rolled_back_transaction(websockets, operator):
    board = await websockets("/ws/alerts/board/", operator)
    await _joined(board)

    @database_sync_to_async
    def roll_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            live.board_changed([12345])
            raise RuntimeError("changed my mind")

    await roll_back()
    assert await board.receive_nothing(timeout=1)
    await database_sync_to_async(live.board_changed)([777])  # no transaction: at once
    assert (await _next_change(board))["incidents"] == [777]
    await board.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_escalation_steps_and_expired_alerts_are_heard(websockets, oncall, admin_user):
    """Neither changes the incident's status, both change what the board shows (who was
    paged; an alert gone)."""
    from datetime import timedelta

    from django.utils import timezone

    from alerts import escalation, services
    from alerts.models import Alert, EscalationStep, Integration

    @database_sync_to_async
    def firing_with_policy():
        integration, token = make_integration(admin_user)
        policy = escalation.save_policy(
            escalation.EscalationPolicy(), {"name": "primary", "repeat": 0},
            [{"kind": EscalationStep.Kind.USER, "user": oncall}], by=admin_user)
        Integration.objects.filter(pk=integration.pk).update(escalation_policy=policy)
        _post(token, HOST_ALERT)
        return Incident.objects.get()

    incident = await firing_with_policy()
    board = await websockets("/ws/alerts/board/", oncall)
    await _joined(board)
    await database_sync_to_async(escalation.tick)(timezone.now())
    assert (await _next_change(board))["incidents"] == [incident.pk]

    @database_sync_to_async
    def expire():
        Alert.objects.update(ends_at=timezone.now() - timedelta(seconds=1))
        return services.expire()

    assert await expire() == 1
    message = await _next_change(board)
    assert message["incidents"] == [incident.pk]
    await board.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_and_outsiders_are_refused(websockets, make_user):
    anonymous = await websockets("/ws/alerts/board/")
    assert await anonymous.connect() == (False, 4401)
    for role in (None, "approver"):
        user = await database_sync_to_async(make_user)(role)
        refused = await websockets("/ws/alerts/board/", user)
        assert await refused.connect() == (False, 4403), role
    # Another site's page cannot open it with the user's cookie.
    oncall = await database_sync_to_async(make_user)("oncall")
    foreign = await websockets("/ws/alerts/board/", oncall, origin=b"http://evil.example")
    assert (await foreign.connect())[0] is False


# --- the board page ----------------------------------------------------------------------


@pytest.fixture
def three(db, admin_user):
    """Three open incidents: a warning and a critical (acknowledged), and a critical."""
    integration, token = make_integration(admin_user)
    _post(token, {"alertname": "SlowDisk", "instance": "db-01:9100", "severity": "warning"})
    _post(token, {"alertname": "CPU", "instance": "web-02:9100", "severity": "critical"})
    _post(token, {"alertname": "Down", "host": "lb-01", "severity": "critical"})
    by = {i.title.split(" ")[0]: i for i in Incident.objects.all()}
    actions.acknowledge(by["CPU"], admin_user, via="api")
    return SimpleNamespace(token=token, **by)


def _rows(html):
    return [int(part.split('"', 1)[0]) for part in html.split('data-incident="')[1:]]


@pytest.mark.django_db
def test_board_shows_triggered_first_with_hosts_age_and_who_acknowledged(client, oncall,
                                                                         three,
                                                                         admin_user):
    client.force_login(oncall)
    html = client.get("/alerts/board/").content.decode()
    # Triggered before acknowledged; among triggered, critical before warning.
    assert _rows(html) == [three.Down.pk, three.SlowDisk.pk, three.CPU.pk]
    assert "db-01" in html and "lb-01" in html and "web-02" in html
    assert admin_user.username in html and "data-relative" in html
    assert 'data-ws="/ws/alerts/board/"' in html and "board.js" in html
    assert "<title>(2) " in html  # two triggered, in the tab's title

    # Filters live in the URL; the host label is searchable.
    assert _rows(client.get("/alerts/board/?severity=critical").content.decode()) == [
        three.Down.pk, three.CPU.pk]
    assert _rows(client.get("/alerts/board/?status=acknowledged").content.decode()) == [
        three.CPU.pk]
    filtered = client.get("/alerts/board/?q=db-01").content.decode()
    assert _rows(filtered) == [three.SlowDisk.pk] and 'value="db-01"' in filtered

    # Resolved incidents leave the board; an empty board says so.
    for incident in Incident.objects.all():
        actions.resolve(incident, admin_user, via="api")
    empty = client.get("/alerts/board/").content.decode()
    assert _rows(empty) == [] and "All quiet" in empty
    assert "matches these filters" in client.get("/alerts/board/?q=zzz").content.decode()


@pytest.mark.django_db
def test_board_rows_partial_and_query_count_does_not_grow_with_incidents(client, oncall,
                                                                         admin_user):
    _integration, token = make_integration(admin_user)
    client.force_login(oncall)
    _post(token, {"alertname": "A", "instance": "a-01"})
    client.get("/alerts/board/")  # warm the session and the role cache

    def count():
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            response = client.get("/alerts/board/", HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        return response, len(queries)

    response, few = count()
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="board-body"') and "<html" not in html
    assert "HX-Request" in response["Vary"]
    for i in range(6):
        _post(token, {"alertname": f"B{i}", "instance": f"b-{i:02d}"},
              {"alertname": f"B{i}", "instance": f"c-{i:02d}"})
    response, many = count()
    assert len(_rows(response.content.decode())) == 7
    assert many == few


@pytest.mark.django_db
def test_acting_from_the_board_answers_the_rows_and_records_via_board(client, oncall, three):
    client.force_login(oncall)
    url = f"/alerts/board/{three.Down.pk}/acknowledge/?severity=critical"
    response = client.post(url, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="board-body"')
    assert f"#{three.Down.pk} acknowledged." in html
    assert _rows(html) == [three.Down.pk, three.CPU.pk]  # the filter of the query string
    three.Down.refresh_from_db()
    assert three.Down.status == "acknowledged" and three.Down.acknowledged_by == oncall
    event = IncidentEvent.objects.filter(incident=three.Down, kind="acknowledged").get()
    assert event.detail["via"] == "board" and event.actor == oncall

    # A second click changes nothing and says so; acting on a resolved one is refused.
    again = client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "already acknowledged" in again
    client.post(f"/alerts/board/{three.Down.pk}/resolve/", HTTP_HX_REQUEST="true")
    late = client.post(f"/alerts/board/{three.Down.pk}/unacknowledge/",
                       HTTP_HX_REQUEST="true").content.decode()
    assert 'role="alert"' in late
    three.Down.refresh_from_db()
    assert three.Down.status == "resolved"

    # Without htmx (the incident page's forms): back to the page, with a message.
    response = client.post(f"/alerts/board/{three.SlowDisk.pk}/snooze/",
                           {"minutes": "30", "next": "incident"})
    assert response.status_code == 302
    assert response["Location"] == f"/alerts/incidents/{three.SlowDisk.pk}/"
    three.SlowDisk.refresh_from_db()
    assert three.SlowDisk.snoozed_until is not None
    assert client.post(f"/alerts/board/{three.SlowDisk.pk}/explode/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "view", "act"), [
    ("oncall", 200, 200), ("admin", 200, 200), ("operator", 200, 403), ("approver", 403, 403),
    (None, 403, 403)])
def test_board_roles(client, make_user, three, role, view, act):
    client.force_login(make_user(role))
    assert client.get("/alerts/board/").status_code == view
    response = client.post(f"/alerts/board/{three.Down.pk}/acknowledge/",
                           HTTP_HX_REQUEST="true")
    assert response.status_code == act
    three.Down.refresh_from_db()
    assert (three.Down.status == "acknowledged") == (act == 200)
    # Acting is a POST, whoever asks.
    assert client.get(f"/alerts/board/{three.Down.pk}/acknowledge/").status_code == 405


@pytest.mark.django_db
def test_board_needs_a_login(client, three):
    response = client.get("/alerts/board/")
    assert response.status_code == 302 and "/login/" in response["Location"]
    response = client.post(f"/alerts/board/{three.Down.pk}/acknowledge/")
    assert response.status_code == 302
    three.Down.refresh_from_db()
    assert three.Down.status == "triggered"


# --- the incident page -------------------------------------------------------------------


def _host_with_a_recent_change(operator):
    from changes.models import Change, HostResult, Run, Runbook, RunbookVersion
    from cmdb.models import Environment, Host, Service

    host = Host.objects.create(name="web-01", environment=Environment.objects.create(name="prod"))
    Service.objects.create(name="storefront").hosts.add(host)
    version = RunbookVersion.objects.create(runbook=Runbook.objects.create(name="deploy"),
                                            number=1, steps=[], digest="d")
    change = Change.objects.create(title="Deploy shop 4.2", runbook_version=version,
                                   selector="name=web-01", author=operator)
    HostResult.objects.create(run=Run.objects.create(change=change, number=1), host=host,
                              host_name="web-01", state="ok")
    return host


@pytest.mark.django_db
def test_incident_page_merges_the_timeline_and_shows_the_host(client, oncall, operator,
                                                              admin_user):
    _host_with_a_recent_change(operator)
    _integration, token = make_integration(admin_user)
    _post(token, HOST_ALERT)
    incident = Incident.objects.get()
    actions.acknowledge(incident, oncall, via="board", timeout=60)
    _post(token, HOST_ALERT, status="resolved")
    client.force_login(operator)
    html = client.get(f"/alerts/incidents/{incident.pk}/").content.decode()
    # The host, its services and the change that ran on it.
    assert "/inventory/" in html and "storefront" in html and "Deploy shop 4.2" in html
    # One timeline, in time order: the alert fired, the incident opened, the ack (who,
    # via), the alert resolved.
    timeline = html.split('class="timeline"', 1)[1].split("</ol>", 1)[0]
    fired = timeline.index("DiskFull</a> fired")
    opened = timeline.index("opened")
    acked = timeline.index(f"acknowledged by {oncall.username} via board")
    resolved = timeline.index("DiskFull</a> resolved")
    assert fired < acked < resolved and opened < acked
    # An operator reads, but gets no buttons (acting is on-call's).
    assert f"/board/{incident.pk}/resolve/" not in html
    client.force_login(oncall)
    html = client.get(f"/alerts/incidents/{incident.pk}/").content.decode()
    assert f"/alerts/board/{incident.pk}/unacknowledge/" in html
    assert f"/alerts/board/{incident.pk}/snooze/" in html
    assert f"/alerts/board/{incident.pk}/resolve/" in html and "data-confirm" in html


@pytest.mark.django_db
def test_incident_page_lists_notifications_with_their_delivery_state(client, oncall,
                                                                    admin_user):
    from alerts import flush, services
    from alerts.testing import Recorder, webhook_channel
    from opsplane.notify.testing import deliver_outbox

    with Recorder() as hook:
        webhook_channel("ops-hook", hook.url, admin_user)
        services.save_routing("route:\n  receiver: ops\n  group_wait: 0s\nreceivers:\n"
                              "  - name: ops\n    channels: [ops-hook]\n", by=admin_user)
        _integration, token = make_integration(admin_user)
        _post(token, HOST_ALERT)
        flush.flush_due()
        deliver_outbox()
        assert hook.requests
    incident = Incident.objects.get()
    client.force_login(oncall)
    html = client.get(f"/alerts/incidents/{incident.pk}/").content.decode()
    timeline = html.split('class="timeline"', 1)[1].split("</ol>", 1)[0]
    assert "ops-hook: sent" in timeline


# --- a real browser ----------------------------------------------------------------------


@pytest.fixture
def live_server(asgi_server):
    """The `page` fixture browses the ASGI server (websockets)."""
    return asgi_server


def test_board_in_a_browser_updates_live_and_acks_from_the_keyboard(
        page, oncall, operator, admin_user, screenshots):
    from playwright.sync_api import expect

    from opsplane.testing.fixtures import login

    _host_with_a_recent_change(operator)
    _integration, token = make_integration(admin_user)
    login(page, oncall)
    page.goto("/alerts/board/")
    expect(page.locator("#board-live")).to_have_text("live", timeout=10_000)
    expect(page.locator(".empty-state")).to_contain_text("All quiet")

    # An alert arrives: its incident shows up without a reload.
    page.evaluate("window.__sameDocument = true")
    _post(token, HOST_ALERT)
    incident = Incident.objects.get()
    row = page.locator(f'tr[data-incident="{incident.pk}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row).to_contain_text("DiskFull")
    expect(row).to_contain_text("web-01")
    expect(row.locator(".c-status")).to_contain_text("triggered")
    assert page.evaluate("window.__sameDocument") is True
    expect(page).to_have_title(re.compile(r"^\(1\) "))  # one triggered, in the tab
    # Relative age written by the page's script in the browser's language and zone.
    expect(row.locator(".c-age time")).to_have_text(re.compile("now|second"))
    page.screenshot(path=screenshots / "board-live.png")

    # j selects it, a acknowledges it: no reload, and the row says who.
    page.keyboard.press("j")
    expect(row).to_have_attribute("aria-selected", "true")
    page.keyboard.press("a")
    expect(row.locator(".c-status")).to_contain_text("acknowledged", timeout=10_000)
    expect(row.locator(".c-ack")).to_contain_text(oncall.username)
    expect(page.locator("#board-body .message.success")).to_contain_text("acknowledged")
    assert page.evaluate("window.__sameDocument") is True
    incident.refresh_from_db()
    assert incident.status == "acknowledged" and incident.acknowledged_by == oncall
    assert IncidentEvent.objects.get(incident=incident, kind="acknowledged").detail["via"] == \
        "board"
    # The selection survived the swap; ? lists the keys.
    expect(row).to_have_attribute("aria-selected", "true")
    page.keyboard.press("?")
    expect(page.locator("#board-keys")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#board-keys")).to_be_hidden()

    # The next alert (another incident) arrives on the board as well.
    _post(token, {**HOST_ALERT, "alertname": "MemoryLow"})
    expect(page.locator("tr[data-incident]")).to_have_count(2, timeout=10_000)

    # Enter opens the selected incident: timeline and host.
    page.locator(f'tr[data-incident="{incident.pk}"] a.incident-link').focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/alerts/incidents/{incident.pk}/")
    expect(page.locator(".timeline")).to_contain_text(f"by {oncall.username} via board")
    expect(page.locator(".timeline")).to_contain_text("DiskFull")
    expect(page.locator(".host-card")).to_contain_text("web-01")
    expect(page.locator(".host-card")).to_contain_text("storefront")
    expect(page.locator(".host-card")).to_contain_text("Deploy shop 4.2")
    page.screenshot(path=screenshots / "incident-1280.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=screenshots / "incident-phone.png", full_page=True)

    # Back on the board on a phone: r resolves after a confirmation.
    page.goto("/alerts/board/")
    expect(page.locator("#board-live")).to_have_text("live", timeout=10_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=screenshots / "board-phone.png", full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("j")
    first = page.locator("tr[data-incident]").first
    expect(first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("r")
    expect(page.locator("tr[data-incident]")).to_have_count(1, timeout=10_000)
    assert Incident.objects.filter(status="resolved").count() == 1


def test_board_times_are_shown_in_the_browsers_time_zone(browser, live_server, oncall,
                                                         admin_user):
    from datetime import UTC, datetime

    from playwright.sync_api import expect

    from opsplane.testing.fixtures import login

    _integration, token = make_integration(admin_user)
    _post(token, HOST_ALERT)
    Incident.objects.update(opened_at=datetime(2026, 11, 27, 0, 0, tzinfo=UTC))
    context = browser.new_context(base_url=live_server.url, timezone_id="Asia/Shanghai",
                                  locale="en-US", viewport={"width": 1280, "height": 800})
    try:
        tab = context.new_page()
        login(tab, oncall)
        tab.goto("/alerts/board/")
        age = tab.locator("tr[data-incident] .c-age time")
        # Midnight UTC is eight in the morning in Shanghai, on hover; the text is relative.
        expect(age).to_have_attribute("title", re.compile(r"11/27/2026, 08:00:00 AM GMT\+8"))
        expect(age).to_have_text(re.compile(r"ago|yesterday|last|tomorrow|in "))
    finally:
        context.close()


def test_board_catches_up_after_its_socket_drops(page, oncall, admin_user):
    """What is said while the socket is down is lost to it; the board refetches after
    it reconnects, so the incident shows up anyway."""
    from playwright.sync_api import expect

    from opsplane.testing.fixtures import login

    _integration, token = make_integration(admin_user)
    sockets = []

    def relay(socket_):
        socket_.connect_to_server()
        sockets.append(socket_)

    page.route_web_socket("**/ws/alerts/board/", relay)
    login(page, oncall)
    page.goto("/alerts/board/")
    live = page.locator("#board-live")
    expect(live).to_have_text("live", timeout=10_000)
    sockets[0].close(code=1012, reason="restart")
    expect(live).to_have_text("reconnecting…")
    _post(token, HOST_ALERT)  # published while this page has no socket
    expect(page.locator("tr[data-incident]")).to_have_count(1, timeout=10_000)
    expect(live).to_have_text("live")
    assert len(sockets) == 2
