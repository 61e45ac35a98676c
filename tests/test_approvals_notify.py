"""Approvals tell people through the shared notification channels: the channels a policy
names hear when a request needs approvers, each decision and the expiry; approvers and
the author get personal e-mail through the e-mail channel; redelivery sends nothing
twice. A local HTTP server stands in for the webhook and the DingTalk robot."""

import json
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from approvals import notifications, policy_io, services
from approvals.models import ApprovalPolicy, Decision
from approvals.testing import mail_channel, request_of
from changes import services as changes
from changes.models import Runbook
from cmdb.models import Environment, Host
from opsplane.notify import services as notify
from opsplane.notify import tasks as notify_tasks
from opsplane.notify.models import Notification
from opsplane.notify.testing import FakeProvider, clear_budgets, deliver_outbox, make_channel

K = Decision.Kind
BASE = "http://127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _clean_budgets():
    clear_budgets()
    yield
    clear_budgets()


@pytest.fixture
def hook():
    with FakeProvider(default=(200, "ok")) as provider:
        yield provider


@pytest.fixture
def robot():
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def runbook(operator):
    prod = Environment.objects.create(name="prod", protected=True)
    staging = Environment.objects.create(name="staging")
    for name in ("web-1", "web-2"):
        Host.objects.create(name=name, environment=prod, labels={"role": "web"})
    Host.objects.create(name="web-3", environment=staging, labels={"role": "web"})
    return changes.save_runbook(Runbook(), name="restart", description="",
                                definition="steps:\n  - kind: shell\n    command: uptime\n",
                                by=operator)


def submit(operator, runbook, selector="role=web"):
    change = changes.compose_change(title="Restart web", runbook=runbook, params={},
                                    selector=selector, by=operator)
    return changes.submit_change(change, by=operator)


def wait_delivered(count, timeout=30.0):
    """Wait until ``count`` outbox rows are sent (the worker delivers them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Notification.objects.filter(state="sent").count() >= count:
            return
        time.sleep(0.05)
    states = list(Notification.objects.values_list("idempotency_key", "state", "last_error"))
    raise AssertionError(f"expected {count} sent notifications: {states}")


def test_channels_and_people_hear_submit_each_decision_and_expiry_once(
        celery_worker, hook, operator, approver, make_user, runbook, settings, mailoutbox):
    settings.OPSPLANE_BASE_URL = BASE
    webhook = make_channel("webhook", name="approvals-hook", url=f"{hook.url}/hook")
    mail_channel(settings)
    ApprovalPolicy.objects.create(name="prod-web", environments=["prod"], channels=[
        "approvals-hook"], requirements=[{"group": "approver", "count": 2}])
    operator.email = "olga@example.com"
    operator.save()
    approver.email = "ann@example.com"
    approver.save()
    bob = make_user("approver", email="bob@example.com")

    change = submit(operator, runbook)
    req = request_of(change)
    hook.wait_for(1)
    wait_delivered(3)  # the channel, and Ann and Bob by e-mail
    needed = hook.requests[0]
    link = f"{BASE}/approvals/requests/{req.pk}/"
    key = f"approvals:request:{req.pk}:round:1:digest:{req.digest[:16]}:needed:channel:" \
          "approvals-hook"
    assert needed.path == "/hook" and needed.headers["x-opsplane-idempotency-key"] == key
    expires = timezone.localtime(req.expires_at).strftime("%Y-%m-%d %H:%M %Z")
    text = (f"{operator.username} asks for approval of “#{change.pk} Restart web”.\n\n"
            "- Environments: prod, staging\n"
            "- Hosts: 3 (prod: 2, staging: 1)\n"
            "- Needs: 2 of approver\n"
            f"- Expires: {expires}\n\n"
            f"[#{change.pk} Restart web]({BASE}/changes/{change.pk}/)")
    assert needed.json == {
        "version": "1", "idempotency_key": key, "channel": "approvals-hook",
        "title": f"Approval needed: #{change.pk} Restart web", "text": text,
        "severity": "info", "link": link, "mentions": [],
        "digest_key": f"approval:{req.pk}",
        "data": {"request": req.pk, "event": "needed", "status": "pending", "round": 1,
                 "digest": req.digest, "title": f"#{change.pk} Restart web",
                 "author": operator.username,
                 "subject": {"type": "changes.change", "id": str(change.pk),
                             "link": f"{BASE}/changes/{change.pk}/"},
                 "environments": ["prod", "staging"], "hosts": 3,
                 "by_environment": {"prod": 2, "staging": 1},
                 "again": False, "progress": "0 of 2 from approver"},
        "rendered": f"{text}\n\n{link}",
    }
    assert sorted(m.to[0] for m in mailoutbox) == ["ann@example.com", "bob@example.com"]
    assert all(len(m.to) == 1 for m in mailoutbox)  # nobody sees the others' addresses
    assert mailoutbox[0].subject == f"Approval needed: #{change.pk} Restart web"
    assert link in mailoutbox[0].body and "Hosts: 3 (prod: 2, staging: 1)" in mailoutbox[0].body

    approved = services.decide(req, by=approver, kind=K.APPROVE)
    hook.wait_for(2)
    body = hook.requests[1].json
    assert body["title"] == f"#{change.pk} Restart web: approved"
    assert body["text"].startswith(f"“#{change.pk} Restart web” approved.\nBy: "
                                   f"{approver.username}\n\n- Environments: prod, staging\n"
                                   "- Hosts: 3 (prod: 2, staging: 1)\n"
                                   "- Progress: 1 of 2 from approver")
    assert body["data"]["event"] == "approve" and body["data"]["decision"] == approved.pk
    assert body["idempotency_key"].endswith(f":decision:{approved.pk}:channel:approvals-hook")

    services.decide(req, by=bob, kind=K.REQUEST_CHANGES, comment="restart one at a time")
    hook.wait_for(3)
    body = hook.requests[2].json
    assert body["title"] == f"#{change.pk} Restart web: changes asked for"
    assert body["severity"] == "warning" and "\n\nrestart one at a time\n\n" in body["text"]

    expired = services.expire_due(now=timezone.now() + timedelta(days=4))
    assert [r.pk for r in expired] == [req.pk]
    hook.wait_for(4)
    body = hook.requests[3].json
    assert body["title"] == f"#{change.pk} Restart web: expired"
    assert body["data"]["status"] == "expired" and body["severity"] == "warning"
    # The author was told of each decision and of the expiry, personally.
    wait_delivered(4 + 2 + 3)
    to_author = [m for m in mailoutbox if m.to == ["olga@example.com"]]
    assert [m.subject for m in to_author] == [
        f"#{change.pk} Restart web: approved",
        f"[WARNING] #{change.pk} Restart web: changes asked for",
        f"[WARNING] #{change.pk} Restart web: expired"]

    # Redelivery: every task again, the expiry tick again, the same event again.
    sent, mails = len(hook.requests), len(mailoutbox)
    rows = Notification.objects.count()
    for pk in Notification.objects.values_list("pk", flat=True):
        notify_tasks.deliver.delay(pk)
        assert notify.deliver(pk) is None
    assert services.expire_due(now=timezone.now() + timedelta(days=5)) == []
    req.refresh_from_db()
    with transaction.atomic():
        notifications.closed(req, "expired")
    assert Notification.objects.count() == rows
    assert webhook.notifications.count() == 4
    time.sleep(1.0)  # give the worker the time to (not) send anything again
    assert len(hook.requests) == sent and len(mailoutbox) == mails


def test_a_dingtalk_channel_gets_markdown_with_the_blast_radius(
        robot, operator, runbook, django_capture_on_commit_callbacks):
    make_channel("dingtalk", name="ops-ding", url=f"{robot.url}/robot/send?access_token=t")
    ApprovalPolicy.objects.create(name="prod-web", environments=["prod"], channels=[
        "ops-ding"], requirements=[{"group": "approver", "count": 1}])
    change = submit(operator, runbook, selector="env=prod")
    deliver_outbox()
    (sent,) = robot.wait_for(1)
    body = sent.json
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == f"Approval needed: #{change.pk} Restart web"
    assert "- Hosts: 2 (prod: 2)" in body["markdown"]["text"]
    assert f"/approvals/requests/{request_of(change).pk}/" in body["markdown"]["text"]


def test_the_protected_environments_default_uses_the_default_channels(
        operator, runbook, settings):
    make_channel("webhook", name="change-board", url="http://127.0.0.1:9/hook")
    settings.APPROVALS_DEFAULT_CHANNELS = ["change-board", "gone"]
    change = submit(operator, runbook, selector="env=prod")
    req = request_of(change)
    assert req.requirements[0]["policy"] == "" and \
        req.requirements[0]["channels"] == ["change-board", "gone"]
    (row,) = Notification.objects.all()
    assert row.channel.name == "change-board" and row.payload["data"]["event"] == "needed"


def test_own_comments_do_not_mail_the_author_and_people_without_address_get_none(
        operator, approver, runbook, settings, mailoutbox):
    mail_channel(settings)
    operator.email = "olga@example.com"
    operator.save()
    ApprovalPolicy.objects.create(name="prod-web", environments=["prod"],
                                  requirements=[{"group": "approver", "count": 1}])
    change = submit(operator, runbook, selector="env=prod")
    services.decide(request_of(change), by=operator, kind=K.COMMENT, comment="ping")
    deliver_outbox()
    assert mailoutbox == []  # the approver has no address; the comment was the author's
    services.decide(request_of(change), by=approver, kind=K.APPROVE)
    deliver_outbox()
    assert [m.to for m in mailoutbox] == [["olga@example.com"]]
    assert mailoutbox[0].subject == f"#{change.pk} Restart web: approved: ready to start"


def test_policy_channels_are_checked_in_the_form_the_api_and_yaml(admin_user, approver, client):
    make_channel("webhook", name="dba-hook", url="http://127.0.0.1:9/hook")
    client.force_login(admin_user)
    response = client.post("/approvals/policies/new/", {
        "name": "dbs", "requirements": "1 of approver", "validity_hours": 24,
        "channels": "dba-hook, nope"})
    assert response.status_code == 200
    assert "No notification channel named nope." in response.content.decode()
    response = client.post("/api/v1/approvals/policies/", data={
        "name": "dbs", "requirements": [{"group": "approver", "count": 1}],
        "channels": ["dba-hook"]}, content_type="application/json")
    assert response.status_code == 201, response.content
    assert ApprovalPolicy.objects.get(name="dbs").channels == ["dba-hook"]
    exported = services.export_policies()
    assert "notify:\n  - dba-hook" in exported
    assert policy_io.parse(exported)[0]["channels"] == ["dba-hook"]
    bad = exported.replace("- dba-hook", "- dba-hook\n  - missing")
    with pytest.raises(policy_io.PolicyFileError) as info:
        services.import_policies(bad, by=admin_user)
    assert info.value.errors == {
        "policies[0].notify[1]": "no notification channel named 'missing'"}
    with pytest.raises(policy_io.PolicyFileError) as info:
        policy_io.parse(exported.replace("- dba-hook", "- 'not a name'"))
    assert list(info.value.errors) == ["policies[0].notify[0]"]
    response = client.post("/api/v1/approvals/policies/", data={
        "name": "dbs2", "requirements": [{"group": "approver", "count": 1}],
        "channels": ["nope"]}, content_type="application/json")
    assert response.status_code == 400 and "channels" in json.loads(response.content)


def test_cancelling_the_change_tells_the_channel_and_an_admins_withdrawal_the_author(
        operator, admin_user, runbook, settings, mailoutbox):
    settings.OPSPLANE_BASE_URL = BASE
    mail_channel(settings)
    operator.email = "olga@example.com"
    operator.save()
    make_channel("webhook", name="approvals-hook", url="http://127.0.0.1:9/hook")
    ApprovalPolicy.objects.create(name="prod-web", environments=["prod"], channels=[
        "approvals-hook"], requirements=[{"group": "approver", "count": 1}])
    change = submit(operator, runbook, selector="env=prod")
    changes.cancel_change(change, by=operator)
    row = Notification.objects.filter(channel__name="approvals-hook").latest("id")
    assert row.payload["title"] == f"#{change.pk} Restart web: withdrawn"
    assert row.payload["text"].startswith(
        f"“#{change.pk} Restart web” withdrawn.\nBy: {operator.username}\n\n"
        "the change was cancelled\n\n- Environments: prod")
    deliver_outbox()
    assert mailoutbox == []  # the author did it
    other = submit(operator, runbook, selector="env=prod")
    services.withdraw(request_of(other), by=admin_user, reason="duplicate of the other")
    deliver_outbox()
    assert [(m.to, m.subject) for m in mailoutbox] == [
        (["olga@example.com"], f"#{other.pk} Restart web: withdrawn")]
    assert "duplicate of the other" in mailoutbox[0].body
