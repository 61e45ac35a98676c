"""Channel pages and API: who may do what, secrets that go in and never come out, the
template preview, the test button, and each notification's attempt history."""

import json

import pytest
from django.urls import reverse

from opsplane import secrets
from opsplane.models import AuditEvent
from opsplane.notify import services, tasks
from opsplane.notify.message import Message
from opsplane.notify.models import Attempt, Channel, Notification
from opsplane.notify.testing import clear_budgets, make_channel

pytestmark = pytest.mark.django_db

ROBOT_URL = "https://oapi.dingtalk.com/robot/send?access_token=TOKEN-abc123"
SIGNING = "SECsigning-secret-xyz"


@pytest.fixture(autouse=True)
def queued(monkeypatch):
    clear_budgets()
    calls = []
    monkeypatch.setattr(tasks.deliver, "apply_async",
                        lambda args, **kw: calls.append(("deliver", args[0])))
    monkeypatch.setattr(tasks.flush, "apply_async",
                        lambda args, **kw: calls.append(("flush", args[0])))
    return calls


@pytest.fixture
def users(make_user):
    return {role: make_user(role) for role in ("operator", "approver", "oncall", "admin")} | {
        "outsider": make_user(None)}


@pytest.fixture
def world():
    channel = make_channel("dingtalk", name="ops-robot", url=ROBOT_URL,
                           signing_secret=SIGNING)
    dead = Notification.objects.create(channel=channel, idempotency_key="d",
                                       payload=Message(title="x").as_dict(), state="dead")
    return channel, dead


VIEWERS = {"operator", "oncall", "admin"}
ADMIN = {"admin"}
PAGES = [
    # url name, kwargs (callable on the world), method, who may, success status
    ("notify:channels", lambda w: {}, "get", VIEWERS, 200),
    ("notify:channel", lambda w: {"name": w[0].name}, "get", VIEWERS, 200),
    ("notify:channel_new", lambda w: {}, "get", ADMIN, 200),
    ("notify:channel_edit", lambda w: {"name": w[0].name}, "get", ADMIN, 200),
    ("notify:channel_test", lambda w: {"name": w[0].name}, "post", ADMIN, 302),
    ("notify:notifications", lambda w: {}, "get", VIEWERS, 200),
    ("notify:notification", lambda w: {"pk": w[1].pk}, "get", VIEWERS, 200),
    ("notify:notification_retry", lambda w: {"pk": w[1].pk}, "post", ADMIN, 302),
]


@pytest.mark.parametrize(("name", "kwargs", "method", "allowed", "ok"), PAGES,
                         ids=[p[0] for p in PAGES])
def test_pages_check_roles(client, users, world, name, kwargs, method, allowed, ok):
    url = reverse(name, kwargs=kwargs(world))
    response = getattr(client, method)(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    for role, user in users.items():
        client.force_login(user)
        response = getattr(client, method)(url)
        assert response.status_code == (ok if role in allowed else 403), role


def test_delete_needs_admin_and_no_history(client, users, world):
    channel, _dead = world
    unused = make_channel("slack", name="unused", url="https://hooks.slack.com/x")
    client.force_login(users["oncall"])
    assert client.post(reverse("notify:channel_delete", args=["unused"])).status_code == 403
    client.force_login(users["admin"])
    client.post(reverse("notify:channel_delete", args=[channel.name]))
    assert Channel.objects.filter(pk=channel.pk).exists()  # it has notifications
    client.post(reverse("notify:channel_delete", args=["unused"]))
    assert not Channel.objects.filter(pk=unused.pk).exists()


def test_list_pages_pin_their_query_count(client, users, world, django_assert_num_queries):
    for n in range(5):
        channel = make_channel("wecom", url=f"https://qyapi.weixin.qq.com/x?key={n}")
        for m in range(3):
            services.enqueue(channel, Message(title=f"t{m}"), key=f"{n}:{m}")
    client.force_login(users["oncall"])
    # session, user, roles; then the channels with their counts in one query
    with django_assert_num_queries(4):
        assert client.get(reverse("notify:channels")).status_code == 200
    with django_assert_num_queries(5):  # ... the count and one page of rows with channels
        assert client.get(reverse("notify:notifications")).status_code == 200


def form_data(**extra):
    return {"kind": "dingtalk", "name": "dt", "description": "ops group", "enabled": "on",
            "url": ROBOT_URL, "signing_secret": SIGNING, "mentions": "13800000000, 13900000000",
            "format": "markdown", "rate_budget": "", "template": "", **extra}


def test_admin_creates_a_channel_and_its_secrets_never_come_back(client, users):
    client.force_login(users["admin"])
    assert b"DingTalk" in client.get(reverse("notify:channel_new")).content  # kind first
    page = client.get(reverse("notify:channel_new") + "?kind=dingtalk").content.decode()
    assert 'name="signing_secret"' in page and 'name="recipients"' not in page
    response = client.post(reverse("notify:channel_new") + "?kind=dingtalk", form_data())
    assert response.status_code == 302, response.content.decode()
    channel = Channel.objects.get(name="dt")
    assert channel.config == {"mentions": ["13800000000", "13900000000"], "format": "markdown"}
    assert secrets.decrypt(channel.secret) == {"url": ROBOT_URL, "signing_secret": SIGNING}
    assert "TOKEN-abc123" not in channel.secret and channel.target == "oapi.dingtalk.com"
    assert channel.secret_fields == ["signing_secret", "url"]
    for url in (reverse("notify:channel", args=["dt"]), reverse("notify:channel_edit",
                                                                args=["dt"]),
                reverse("notify:channels")):
        html = client.get(url).content.decode()
        assert "TOKEN-abc123" not in html and SIGNING not in html
    event = AuditEvent.objects.get(action="notify.channel.create")
    assert "TOKEN" not in json.dumps(event.detail) and SIGNING not in json.dumps(event.detail)
    assert event.detail["secrets_replaced"] == ["signing_secret", "url"]

    # edit with the secret fields empty: kept; "remove" takes the signing secret away
    data = form_data(url="", signing_secret="", description="changed")
    client.post(reverse("notify:channel_edit", args=["dt"]), data)
    channel.refresh_from_db()
    assert channel.description == "changed"
    assert secrets.decrypt(channel.secret) == {"url": ROBOT_URL, "signing_secret": SIGNING}
    client.post(reverse("notify:channel_edit", args=["dt"]),
                form_data(url="", signing_secret="", clear_signing_secret="on"))
    channel.refresh_from_db()
    assert secrets.decrypt(channel.secret) == {"url": ROBOT_URL}


@pytest.mark.parametrize(("field", "value", "error"), [
    ("url", "ftp://example.com/x", "http"),
    ("signing_secret", "nope", "SEC"),
    ("template", "{% if %}", "if"),
    ("rate_budget", "lots", "messages/period"),
    ("name", "bad name!", "letters"),
])
def test_the_form_shows_what_is_wrong(client, users, field, value, error):
    client.force_login(users["admin"])
    response = client.post(reverse("notify:channel_new") + "?kind=dingtalk",
                           form_data(**{field: value}))
    assert response.status_code == 200 and not Channel.objects.exists()
    assert error in response.content.decode()


def test_email_and_sms_forms(client, users):
    client.force_login(users["admin"])
    response = client.post(reverse("notify:channel_new"), {
        "kind": "email", "name": "mail", "enabled": "on",
        "recipients": "a@example.com\nb@example.com", "from_email": ""})
    assert response.status_code == 302
    assert Channel.objects.get(name="mail").config == {
        "recipients": ["a@example.com", "b@example.com"]}
    response = client.post(reverse("notify:channel_new"), {
        "kind": "sms", "name": "sms", "enabled": "on", "url": "https://sms.example/send",
        "token": "k", "recipients": "13800000000", "method": "POST",
        "content_type": "application/json", "body_template": '{"t": {{ text|json }}}',
        "headers": "X-Api: 1", "result_field": "code", "ok_values": "0"})
    assert response.status_code == 302, response.content.decode()
    channel = Channel.objects.get(name="sms")
    assert channel.config["headers"] == {"X-Api": "1"} and channel.target == "POST sms.example"


def test_preview_renders_without_saving(client, users):
    client.force_login(users["admin"])
    url = reverse("notify:channel_new") + "?kind=dingtalk"
    data = form_data(template="**{{ title }}** {{ severity }}", preview="1")
    response = client.post(url, data, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="preview"' in html
    assert "**HighCPU on web-01** critical" in html and "atMobiles" in html
    assert "TOKEN-abc123" not in html
    full = client.post(url, data).content.decode()  # without JavaScript: the whole page
    assert "<html" in full and "**HighCPU on web-01** critical" in full
    broken = client.post(url, form_data(template="{% for %}", preview="1"),
                         headers={"HX-Request": "true"}).content.decode()
    assert "does not render" in broken
    assert not Channel.objects.exists()


def test_send_test_message_button(client, users, world, queued,
                                  django_capture_on_commit_callbacks):
    channel, _dead = world
    client.force_login(users["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("notify:channel_test", args=[channel.name]),
                               follow=True)
    row = Notification.objects.get(ref="test")
    assert row.channel == channel and row.title == "Test message from opsplane"
    assert ("deliver", row.pk) in queued
    assert f"#{row.pk}" in response.content.decode()
    assert AuditEvent.objects.filter(action="notify.channel.test").exists()


def test_notification_page_shows_attempts_and_the_digest(client, users, world):
    channel, _dead = world
    digest = Notification.objects.create(channel=channel, idempotency_key="digest:1",
                                         is_digest=True, state="sending",
                                         payload=Message(title="+2 more").as_dict())
    folded = [Notification.objects.create(channel=channel, idempotency_key=f"f{n}",
                                          payload=Message(title=f"folded {n}").as_dict(),
                                          state="folded", digest=digest) for n in range(2)]
    Attempt.objects.create(notification=digest, number=1, http_status=200,
                           provider_code="310000", provider_message="sign not match",
                           error="dingtalk error 310000: sign not match")
    client.force_login(users["oncall"])
    html = client.get(reverse("notify:notification", args=[digest.pk])).content.decode()
    assert "310000" in html and "sign not match" in html
    assert "folded 0" in html and "folded 1" in html
    html = client.get(reverse("notify:notification", args=[folded[0].pk])).content.decode()
    assert f"digest #{digest.pk}" in html


def test_retry_button_requeues_a_dead_notification(client, users, world, queued,
                                                   django_capture_on_commit_callbacks):
    _channel, dead = world
    client.force_login(users["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("notify:notification_retry", args=[dead.pk]))
    dead.refresh_from_db()
    assert dead.state == "pending" and ("deliver", dead.pk) in queued


# --- the API -----------------------------------------------------------------------------------


def api(client, method, url, data=None):
    if data is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, data, content_type="application/json")


API = [
    ("api-notify-channels", lambda w: {}, "get", None, VIEWERS, 200),
    ("api-notify-channels", lambda w: {}, "post",
     {"name": "new", "kind": "slack", "url": "https://hooks.slack.com/services/x"}, ADMIN, 201),
    ("api-notify-channel", lambda w: {"name": w[0].name}, "get", None, VIEWERS, 200),
    ("api-notify-channel", lambda w: {"name": w[0].name}, "patch", {"description": "d"},
     ADMIN, 200),
    ("api-notify-channel-test", lambda w: {"name": w[0].name}, "post", None, ADMIN, 202),
    ("api-notify-notifications", lambda w: {}, "get", None, VIEWERS, 200),
    ("api-notify-notification", lambda w: {"pk": w[1].pk}, "get", None, VIEWERS, 200),
    ("api-notify-notification-retry", lambda w: {"pk": w[1].pk}, "post", None, ADMIN, 202),
    ("api-notify-preview", lambda w: {}, "post", {"kind": "wecom"}, ADMIN, 200),
]


@pytest.mark.parametrize(("name", "kwargs", "method", "data", "allowed", "ok"), API,
                         ids=[f"{a[0]}-{a[2]}" for a in API])
def test_api_checks_roles(client, users, world, name, kwargs, method, data, allowed, ok):
    url = reverse(name, kwargs=kwargs(world))
    assert api(client, method, url, data).status_code in (401, 403)
    for role in sorted(set(users) - allowed):
        client.force_login(users[role])
        assert api(client, method, url, data).status_code == 403, role
    client.force_login(users[sorted(allowed)[0]])
    response = api(client, method, url, data)
    assert response.status_code == ok, response.content


def test_api_secrets_are_write_only(client, users):
    client.force_login(users["admin"])
    created = api(client, "post", reverse("api-notify-channels"), {
        "name": "fs", "kind": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/TK",
        "signing_secret": "feishu-secret", "config": {"format": "text", "mentions": ["ou_1"]},
        "rate_budget": "5/1s,100/60s"})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret_fields"] == ["signing_secret", "url"] and body["budget"] == "5/1s,100/60s"
    assert "url" not in body and "signing_secret" not in body
    assert "TK" not in created.content.decode()
    detail = reverse("api-notify-channel", args=["fs"])
    assert "feishu-secret" not in api(client, "get", detail).content.decode()
    # null removes a secret, "" or absent keeps it
    api(client, "patch", detail, {"signing_secret": None, "url": ""})
    channel = Channel.objects.get(name="fs")
    assert secrets.decrypt(channel.secret) == {
        "url": "https://open.feishu.cn/open-apis/bot/v2/hook/TK"}

    for data, field in [({"kind": "slack"}, "kind"), ({"config": {"colour": "red"}}, "config"),
                        ({"url": "file:///etc/passwd"}, "url"),
                        ({"token": "x"}, "token")]:
        response = api(client, "patch", detail, data)
        assert response.status_code == 400 and field in response.json(), (data, response.json())


def test_api_outbox_with_attempts(client, users, world):
    channel, dead = world
    Attempt.objects.create(notification=dead, number=1, http_status=500, error="HTTP 500")
    client.force_login(users["oncall"])
    rows = api(client, "get", reverse("api-notify-notifications") + "?state=dead").json()
    assert [r["id"] for r in rows["results"]] == [dead.pk]
    assert rows["results"][0]["channel"] == "ops-robot"
    detail = api(client, "get", reverse("api-notify-notification", args=[dead.pk])).json()
    assert detail["attempt_set"][0]["http_status"] == 500


def test_api_preview(client, users):
    client.force_login(users["admin"])
    response = api(client, "post", reverse("api-notify-preview"),
                   {"kind": "feishu", "template": "{{ title }}!", "config": {"format": "text"}})
    assert response.json()["text"] == "HighCPU on web-01!"
    assert json.loads(response.json()["body"])["msg_type"] == "text"
    response = api(client, "post", reverse("api-notify-preview"),
                   {"kind": "feishu", "template": "{% if %}"})
    assert response.status_code == 400 and "template" in response.json()


def test_rotating_the_key_keeps_channel_secrets_readable(settings, world):
    from cryptography.fernet import Fernet

    channel, _dead = world
    old = list(settings.OPSPLANE_FERNET_KEYS)
    settings.OPSPLANE_FERNET_KEYS = [Fernet.generate_key().decode(), *old]
    assert services.rotate_secrets() == 1
    settings.OPSPLANE_FERNET_KEYS = settings.OPSPLANE_FERNET_KEYS[:1]  # old key dropped
    channel.refresh_from_db()
    assert secrets.decrypt(channel.secret)["signing_secret"] == SIGNING
