"""What goes on the wire, exactly, for each kind of channel: bodies and signatures checked
on a local HTTP server standing in for the provider, signatures against vectors made
independently (``openssl dgst -hmac`` and the providers' documented recipes), and what
each provider's answer means."""

import base64
import hashlib
import hmac
import json
from urllib.parse import quote_plus

import pytest
from django.core import mail

from opsplane.notify import render, senders, services
from opsplane.notify.message import Message
from opsplane.notify.models import Attempt
from opsplane.notify.testing import FakeProvider, clear_budgets, make_channel

pytestmark = pytest.mark.django_db

NOW = 1700000000.0
DINGTALK_SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
# printf '1700000000000\n%s' "$S" | openssl dgst -sha256 -hmac "$S" -binary | base64
DINGTALK_SIGN = "bTgY2yDbep+wesS7jKiNj+srsHoADES4+C4f8LCHFtU="
# key = "1700000000\nfeishu-secret", message empty (openssl dgst -mac HMAC -macopt hexkey:..)
FEISHU_SIGN = "OrBzY1Y01Gq+HgJsl+7OfWcMVwc7YocohQm5iiZwjhU="

ALERT = Message(title="HighCPU on web-01", text="CPU above **90%**", severity="critical",
                link="https://ops.example/alerts/incidents/42/", mentions=["13900000000"],
                digest_key="incident:42")


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    clear_budgets()
    monkeypatch.setattr(senders, "clock", lambda: NOW)
    # No broker in these tests: what would be queued is recorded instead.
    from opsplane.notify import tasks

    monkeypatch.setattr(tasks.deliver, "apply_async", lambda *a, **k: None)
    monkeypatch.setattr(tasks.flush, "apply_async", lambda *a, **k: None)


@pytest.fixture
def robot():
    with FakeProvider() as provider:
        yield provider


def send(channel, message=ALERT, key="k1"):
    row = services.enqueue(channel, message, key=key)
    services.deliver(row.pk)
    row.refresh_from_db()
    return row


# --- signatures against known vectors -------------------------------------------------------


def test_dingtalk_signature_matches_the_documented_recipe():
    assert senders.dingtalk_sign("1700000000000", DINGTALK_SECRET) == DINGTALK_SIGN
    # DingTalk's own Python sample, step by step
    string_to_sign = f"1700000000000\n{DINGTALK_SECRET}".encode()
    code = hmac.new(DINGTALK_SECRET.encode(), string_to_sign, digestmod=hashlib.sha256).digest()
    assert base64.b64encode(code).decode() == DINGTALK_SIGN


def test_feishu_signature_matches_the_documented_recipe():
    assert senders.feishu_sign("1700000000", "feishu-secret") == FEISHU_SIGN
    # Feishu's sample: the "timestamp\nsecret" string is the key, the message is empty
    code = hmac.new(b"1700000000\nfeishu-secret", digestmod=hashlib.sha256).digest()
    assert base64.b64encode(code).decode() == FEISHU_SIGN
    assert senders.feishu_sign("1700000000", "feishu-secret") != senders.dingtalk_sign(
        "1700000000", "feishu-secret")


def test_webhook_signature_is_hex_hmac_of_the_body():
    # printf '{"a":1}' | openssl dgst -sha256 -hmac whsecret
    assert senders.webhook_signature("whsecret", b'{"a":1}') == (
        "sha256=b2ede3ef30f428daf114e70cd9dd2fd3ff364a1fdc17db5f846f4f49d8a01dab")


# --- exact requests per provider -------------------------------------------------------------


def test_dingtalk_markdown_with_mentions_and_signature(robot):
    channel = make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=tok123",
                           signing_secret=DINGTALK_SECRET,
                           config={"mentions": ["13800000000"]})
    row = send(channel)
    assert row.state == "sent" and row.attempts == 1 and row.sent_at
    [request] = robot.requests
    assert request.method == "POST" and request.path == "/robot/send"
    assert request.query == {"access_token": ["tok123"], "timestamp": ["1700000000000"],
                             "sign": [DINGTALK_SIGN]}
    # base64's + / = are URL-encoded in the query, as DingTalk checks them
    assert f"&timestamp=1700000000000&sign={quote_plus(DINGTALK_SIGN)}" in request.target
    assert "%2B" in request.target
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.json == {
        "msgtype": "markdown",
        "markdown": {
            "title": "HighCPU on web-01",
            "text": "### 🔴 HighCPU on web-01\n\nCPU above **90%**\n\n"
                    "[Open](https://ops.example/alerts/incidents/42/)"
                    "\n\n@13800000000 @13900000000",
        },
        "at": {"atMobiles": ["13800000000", "13900000000"], "isAtAll": False},
    }
    attempt = Attempt.objects.get(notification=row)
    assert (attempt.ok, attempt.http_status, attempt.provider_code) == (True, 200, "0")


def test_dingtalk_text_type_without_signature(robot):
    channel = make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=t",
                           config={"format": "text", "at_all": True},
                           template="{{ title }}: {{ text }}")
    send(channel, Message(title="Disk", text="full"))
    [request] = robot.requests
    assert request.query == {"access_token": ["t"]}
    assert request.json == {"msgtype": "text", "text": {"content": "Disk: full"},
                            "at": {"atMobiles": [], "isAtAll": True}}


@pytest.mark.parametrize(("answer", "code", "message"), [
    ({"errcode": 310000, "errmsg": "sign not match"}, "310000", "sign not match"),
    ({"errcode": 300001, "errmsg": "token is not exist"}, "300001", "token is not exist"),
])
def test_dingtalk_http_200_with_errcode_is_a_failure(robot, answer, code, message):
    channel = make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=t")
    robot.answer(200, answer)
    row = send(channel)
    assert row.state == "failed" and row.provider_code == code
    assert message in row.last_error
    attempt = row.attempt_set.get()
    assert (attempt.ok, attempt.http_status, attempt.provider_code,
            attempt.provider_message) == (False, 200, code, message)


def test_wecom_markdown_mentions_user_ids(robot):
    channel = make_channel("wecom", url=f"{robot.url}/cgi-bin/webhook/send?key=K-1",
                           config={"mentions": ["zhangsan"]},
                           template="**{{ title }}**\n{{ text }}")
    send(channel, Message(title="Disk", text="full"))
    [request] = robot.requests
    assert request.path == "/cgi-bin/webhook/send" and request.query == {"key": ["K-1"]}
    assert request.json == {"msgtype": "markdown",
                            "markdown": {"content": "**Disk**\nfull\n<@zhangsan>"}}


def test_wecom_mentions_mobiles_with_the_text_type(robot):
    channel = make_channel("wecom", url=f"{robot.url}/cgi-bin/webhook/send?key=K-1",
                           config={"mentions": ["@all"]}, template="{{ title }}")
    send(channel, Message(title="Disk full", mentions=["13800000000"]))
    assert robot.requests[0].json == {"msgtype": "text", "text": {
        "content": "Disk full", "mentioned_list": ["@all"],
        "mentioned_mobile_list": ["13800000000"]}}


def test_wecom_markdown_is_cut_to_its_byte_limit(robot):
    channel = make_channel("wecom", url=f"{robot.url}/send?key=K", template="{{ text }}")
    send(channel, Message(title="big", text="告警" * 3000))
    content = robot.requests[0].json["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("…")


def test_wecom_errcode_is_recorded(robot):
    channel = make_channel("wecom", url=f"{robot.url}/send?key=K")
    robot.answer(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
    row = send(channel)
    assert (row.state, row.provider_code) == ("failed", "93000")


def test_feishu_card_signed_in_the_body(robot):
    channel = make_channel("feishu", url=f"{robot.url}/open-apis/bot/v2/hook/TOKEN",
                           signing_secret="feishu-secret", config={"mentions": ["ou_1"]},
                           template="{{ text }}")
    robot.default = (200, {"code": 0, "data": {}, "msg": "success"})
    row = send(channel, Message(title="HighCPU", text="CPU **high**", severity="warning"))
    assert row.state == "sent"
    [request] = robot.requests
    assert request.path == "/open-apis/bot/v2/hook/TOKEN" and request.query == {}
    assert request.json == {
        "timestamp": "1700000000", "sign": FEISHU_SIGN, "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": "HighCPU"},
                       "template": "orange"},
            "elements": [{"tag": "markdown", "content": "CPU **high**\n<at id=ou_1></at>"}],
        },
    }


def test_feishu_text_and_post(robot):
    text = make_channel("feishu", url=f"{robot.url}/hook/A", config={"format": "text"},
                        template="{{ text }}")
    post = make_channel("feishu", url=f"{robot.url}/hook/B", config={"format": "post"},
                        template="{{ text }}")
    robot.default = (200, {"code": 0, "msg": "success"})
    send(text, Message(title="T", text="line"), key="a")
    send(post, Message(title="T", text="one\ntwo", mentions=["ou_2"]), key="b")
    assert robot.requests[0].json == {"msg_type": "text", "content": {"text": "T\nline"}}
    assert robot.requests[1].json == {"msg_type": "post", "content": {"post": {"zh_cn": {
        "title": "T", "content": [[{"tag": "text", "text": "one"}],
                                  [{"tag": "text", "text": "two"}],
                                  [{"tag": "at", "user_id": "ou_2"}]]}}}}


def test_feishu_code_is_a_failure(robot):
    channel = make_channel("feishu", url=f"{robot.url}/hook/T", signing_secret="wrong")
    robot.answer(200, {"code": 19021, "data": {}, "msg": "sign match fail"})
    row = send(channel)
    assert (row.state, row.provider_code) == ("failed", "19021")
    assert "sign match fail" in row.last_error


def test_slack_blocks(robot):
    channel = make_channel("slack", url=f"{robot.url}/services/T0/B0/XyZ",
                           config={"mentions": ["U123"]})
    robot.default = (200, "ok")
    message = Message(title="HighCPU", text="**web-01** [graph](https://g.example/1)",
                      link="https://ops.example/i/1")
    assert send(channel, message).state == "sent"
    assert robot.requests[0].json == {
        "text": "HighCPU",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "HighCPU"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "*web-01* <https://g.example/1|graph>\n<https://ops.example/i/1|Open>\n<@U123>"}},
        ],
    }


def test_slack_error_text_is_the_provider_code(robot):
    channel = make_channel("slack", url=f"{robot.url}/services/x")
    robot.answer(404, "no_service")
    row = send(channel)
    assert (row.state, row.provider_code) == ("failed", "no_service")
    assert row.attempt_set.get().http_status == 404


def test_webhook_body_and_signature_header(robot):
    channel = make_channel("webhook", url=f"{robot.url}/hook", signing_secret="whsecret",
                           token="bearer-1", name="ops-hook")
    robot.default = (204, b"")
    row = send(channel, key="alert:7:1")
    assert row.state == "sent"
    [request] = robot.requests
    expected = hmac.new(b"whsecret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-opsplane-signature"] == f"sha256={expected}"
    assert request.headers["x-opsplane-idempotency-key"] == "alert:7:1"
    assert request.headers["authorization"] == "Bearer bearer-1"
    assert request.json == {
        "version": "1", "idempotency_key": "alert:7:1", "channel": "ops-hook",
        "title": "HighCPU on web-01", "text": "CPU above **90%**", "severity": "critical",
        "link": "https://ops.example/alerts/incidents/42/", "mentions": ["13900000000"],
        "digest_key": "incident:42", "data": {},
        "rendered": "CPU above **90%**\n\nhttps://ops.example/alerts/incidents/42/",
    }


def test_webhook_without_secret_has_no_signature(robot):
    channel = make_channel("webhook", url=f"{robot.url}/hook")
    robot.default = (200, b"{}")
    send(channel)
    assert "x-opsplane-signature" not in robot.requests[0].headers
    assert "authorization" not in robot.requests[0].headers


def test_webhook_http_500_is_a_failure_and_a_redirect_is_not_followed(robot):
    channel = make_channel("webhook", url=f"{robot.url}/hook")
    robot.answer(500, "boom")
    row = send(channel, key="a")
    assert (row.state, row.provider_code) == ("failed", "500")
    robot.answer(302, "")
    row = send(channel, key="b")
    assert row.state == "failed" and len(robot.requests) == 2


def test_sms_gateway_post_with_a_form_body_and_a_result_field(robot):
    channel = make_channel("sms", url=f"{robot.url}/sms/send", token="sms-key", config={
        "recipients": ["13800000000"], "method": "POST",
        "content_type": "application/x-www-form-urlencoded",
        "body_template": "to={{ mobiles_csv|urlencode }}&msg={{ text|urlencode }}",
        "headers": {"X-Api-Version": "2"}, "result_field": "result.code",
        "ok_values": ["OK"]})
    robot.answer(200, {"result": {"code": "OK"}})
    row = send(channel, Message(title="Disk full", severity="critical",
                                mentions=["13900000000"]))
    assert row.state == "sent"
    [request] = robot.requests
    assert request.path == "/sms/send"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["x-api-version"] == "2"
    assert request.headers["authorization"] == "Bearer sms-key"
    assert request.body == b"to=13800000000%2C13900000000&msg=%5BCRITICAL%5D%20Disk%20full"

    robot.answer(200, {"result": {"code": "E42", "msg": "no balance"}})
    row = send(channel, Message(title="again"), key="k2")
    assert (row.state, row.provider_code) == ("failed", "E42")


def test_sms_gateway_get_with_the_text_in_the_url(robot):
    url = f"{robot.url}/sms?to={{{{ mobiles_csv }}}}&text={{{{ text|urlencode }}}}"
    channel = make_channel("sms", url=url, config={"recipients": ["13800000000"],
                                                   "method": "GET"})
    robot.default = (200, "queued")
    assert send(channel, Message(title="Disk", severity="warning")).state == "sent"
    [request] = robot.requests
    assert request.method == "GET" and request.body == b""
    assert request.query == {"to": ["13800000000"], "text": ["[WARNING] Disk"]}


def test_email_through_djangos_mail(settings):
    settings.DEFAULT_FROM_EMAIL = "ops@example.com"
    channel = make_channel("email", config={"recipients": ["oncall@example.com"]})
    row = send(channel, Message(title="Disk full", text="**db-1** [graph](https://g/1)",
                                severity="critical", link="https://ops.example/i/3",
                                mentions=["boss@example.com", "13800000000"]))
    assert row.state == "sent"
    [email] = mail.outbox
    assert email.subject == "[CRITICAL] Disk full"
    assert email.to == ["oncall@example.com", "boss@example.com"]
    assert email.from_email == "ops@example.com"
    assert email.body.startswith("db-1 graph (https://g/1)\n\nOpen: https://ops.example/i/3")


def test_network_errors_and_timeouts_are_failures(robot, settings, unused_tcp_port):
    closed = make_channel("webhook", url=f"http://127.0.0.1:{unused_tcp_port}/hook")
    row = send(closed, key="a")
    assert row.state == "failed" and "Connection refused" in row.last_error
    settings.OPSPLANE_NOTIFY_TIMEOUT = 0.3
    robot.delay = 1.0
    slow = make_channel("webhook", url=f"{robot.url}/hook")
    row = send(slow, key="b")
    assert row.state == "failed" and row.last_error == "timed out"
    assert row.attempt_set.get().http_status is None


def test_errors_never_carry_the_url(robot):
    channel = make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=SECRETTOKEN")
    robot.answer(500, "oops")
    rows = [send(channel)]
    # http.client quotes a malformed URL in its exception
    channel = make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=SECRET TOKEN")
    rows.append(send(channel, key="k2"))
    sms = make_channel("sms", url=f"{robot.url}/sms?SECRETTOKEN={{% if %}}",
                       config={"recipients": ["13800000000"]})
    rows.append(send(sms, key="k3"))
    assert [row.state for row in rows] == ["failed"] * 3
    text = json.dumps([[row.last_error, list(row.attempt_set.values())] for row in rows],
                      default=str)
    assert "SECRET" not in text and "malformed" in text and "URL template" in text


# --- templates ---------------------------------------------------------------------------------


def test_render_has_no_autoescape_and_our_filters():
    text = render.render("{{ text }} {{ data.labels|json }} {{ text|mrkdwn }}",
                         {"text": "**a** <b> & [x](http://y)", "data": {"labels": {"a": "é"}}})
    assert text == ('**a** <b> & [x](http://y) {"a": "é"} *a* <b> & <http://y|x>')


def test_a_template_sees_the_callers_data(robot):
    channel = make_channel("dingtalk", url=f"{robot.url}/r?access_token=t", template=(
        "{% for a in data.alerts %}- {{ a.labels.instance }} {{ a.status }}\n{% endfor %}"))
    send(channel, Message(title="x", data={"alerts": [
        {"labels": {"instance": "web-01"}, "status": "firing"},
        {"labels": {"instance": "web-02"}, "status": "resolved"}]}))
    assert robot.requests[0].json["markdown"]["text"] == "- web-01 firing\n- web-02 resolved"


def test_a_broken_template_falls_back_to_the_default(robot):
    channel = make_channel("dingtalk", url=f"{robot.url}/r?access_token=t")
    channel.template = "{% if %}"  # broken after it was saved (the service refuses it)
    channel.save()
    assert send(channel, Message(title="T", text="body")).state == "sent"
    assert robot.requests[0].json["markdown"]["text"] == "### 🔵 T\n\nbody"


def test_validate_refuses_a_broken_template():
    with pytest.raises(render.TemplateError):
        render.validate("{% for %}")
    render.validate(render.default_template("dingtalk"))


@pytest.mark.parametrize("kind", ["webhook", "dingtalk", "wecom", "feishu", "slack", "email",
                                  "sms"])
def test_every_kind_has_a_default_template_and_a_preview(kind):
    result = services.preview(kind, "")
    assert result["title"] == render.SAMPLE.title and "web-01" in result["text"]
    if kind != "email":
        assert "example.invalid" not in result["body"]
        assert result["body"].startswith(("{", "to=")) or "mobiles" in result["body"]
