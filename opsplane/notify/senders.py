"""What goes on the wire for each kind of channel, and what the answer means.

``build_request(kind, ...)`` is pure (given the time), so the exact bodies and signatures
are testable against the providers' documented recipes; ``send()`` renders, builds,
makes the one HTTP call (or hands an e-mail to Django) and interprets the answer into a
``Result``. Nothing here touches the database.

Never put a URL in an error message: robot URLs carry their access token.
"""

import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core import mail

from opsplane import secrets
from opsplane.notify import render
from opsplane.notify.message import SEVERITIES

MOBILE = re.compile(r"^\+?\d{6,15}$")
# Provider answers that mean "too fast": wait longer before the next try.
THROTTLED_CODES = {
    "dingtalk": {"130101"},          # send too fast, exceed 20 times per minute
    "wecom": {"45009"},              # api freq out of limit
    "feishu": {"9499", "11232"},     # too many requests / frequency limited
}
# Bytes each provider accepts in the text (ours are a little under the documented caps,
# which count the whole body).
TEXT_LIMITS = {"dingtalk": 18000, "wecom_markdown": 4000, "wecom_text": 2000,
               "feishu": 18000, "slack": 2900, "sms": 1000}
FEISHU_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}
MAX_ANSWER = 64 * 1024


@dataclass
class Request:
    method: str
    url: str
    headers: dict = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Result:
    ok: bool
    http_status: int | None = None
    provider_code: str = ""
    provider_message: str = ""
    error: str = ""
    throttled: bool = False


class ConfigError(ValueError):
    """The channel cannot send as configured (no URL, no recipients...)."""


def clock():
    """Seconds since the epoch, for the robots' signed timestamps (tests fix it)."""
    return time.time()


# --- signatures (../shared/reference/alerting.md) -----------------------------------------


def dingtalk_sign(timestamp_ms, secret):
    """DingTalk: base64(HMAC-SHA256(key=secret, msg=f"{timestamp_ms}\\n{secret}")); the
    caller URL-encodes it into the query."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(timestamp_s, secret):
    """Feishu/Lark: base64(HMAC-SHA256(key=f"{timestamp_s}\\n{secret}", msg=empty)).
    Not DingTalk's recipe: the string is the key, the message is empty."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_signature(secret, body):
    """Our generic webhook: ``sha256=`` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- helpers ------------------------------------------------------------------------------


def add_query(url, **params):
    """``url`` with ``params`` added to its query (keeping what it has, e.g. the token)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def truncate_bytes(text, limit):
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary, with an
    ellipsis when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode(errors="ignore") + "…"


def _unique(items):
    return list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


def _dumps(data):
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json_headers():
    return {"Content-Type": "application/json; charset=utf-8"}


def _mentions(config, message, field="mentions"):
    """Who the message calls out: the channel's own list plus the message's."""
    return _unique(list(config.get(field) or []) + list(message.mentions))


def _url(secret_fields):
    url = secret_fields.get("url", "")
    if not url:
        raise ConfigError("the channel has no URL")
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ConfigError("the channel's URL is not http(s)")
    return url


# --- payloads per kind ---------------------------------------------------------------------


def build_dingtalk(config, secret_fields, message, text, *, now):
    mobiles = [m for m in _mentions(config, message) if MOBILE.match(m)]
    # A markdown mention only rings when "@<mobile>" is in the text as well.
    missing = [f"@{m}" for m in mobiles if f"@{m}" not in text]
    if missing:
        text = f"{text}\n\n{' '.join(missing)}"
    text = truncate_bytes(text, TEXT_LIMITS["dingtalk"])
    at = {"atMobiles": mobiles, "isAtAll": bool(config.get("at_all"))}
    if config.get("format") == "text":
        body = {"msgtype": "text", "text": {"content": text}, "at": at}
    else:
        body = {"msgtype": "markdown", "markdown": {"title": message.title, "text": text},
                "at": at}
    url = _url(secret_fields)
    if secret_fields.get("signing_secret"):
        timestamp = str(int(now * 1000))
        url = add_query(url, timestamp=timestamp,
                        sign=dingtalk_sign(timestamp, secret_fields["signing_secret"]))
    return Request("POST", url, _json_headers(), _dumps(body))


def build_wecom(config, secret_fields, message, text, *, now):
    mentions = _mentions(config, message)
    mobiles = [m for m in mentions if MOBILE.match(m)]
    users = [m for m in mentions if not MOBILE.match(m)]
    # Only the text type can mention by mobile number; markdown mentions user ids.
    if config.get("format") == "text" or mobiles:
        users = ["@all" if u in {"all", "@all"} else u for u in users]
        body = {"msgtype": "text", "text": {
            "content": truncate_bytes(text, TEXT_LIMITS["wecom_text"]),
            "mentioned_list": users, "mentioned_mobile_list": mobiles}}
    else:
        tags = " ".join(f"<@{u}>" for u in users)
        content = truncate_bytes(text, TEXT_LIMITS["wecom_markdown"] - len(tags.encode()) - 2)
        body = {"msgtype": "markdown",
                "markdown": {"content": f"{content}\n{tags}" if tags else content}}
    return Request("POST", _url(secret_fields), _json_headers(), _dumps(body))


def build_feishu(config, secret_fields, message, text, *, now):
    users = _mentions(config, message)
    text = truncate_bytes(text, TEXT_LIMITS["feishu"])
    body = {}
    if secret_fields.get("signing_secret"):
        timestamp = str(int(now))
        body["timestamp"] = timestamp
        body["sign"] = feishu_sign(timestamp, secret_fields["signing_secret"])
    fmt = config.get("format") or "interactive"
    if fmt == "text":
        tags = "".join(f'<at user_id="{u}"></at>' for u in users)
        body.update(msg_type="text", content={"text": f"{message.title}\n{text}{tags}"})
    elif fmt == "post":
        lines = [[{"tag": "text", "text": line}] for line in text.splitlines()]
        if users:
            lines.append([{"tag": "at", "user_id": u} for u in users])
        body.update(msg_type="post", content={"post": {"zh_cn": {
            "title": message.title, "content": lines}}})
    else:
        tags = " ".join(f"<at id={u}></at>" for u in users)
        body.update(msg_type="interactive", card={
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": message.title},
                       "template": FEISHU_COLORS.get(message.severity, "blue")},
            "elements": [{"tag": "markdown",
                          "content": f"{text}\n{tags}" if tags else text}],
        })
    return Request("POST", _url(secret_fields), _json_headers(), _dumps(body))


def build_slack(config, secret_fields, message, text, *, now):
    users = _mentions(config, message)
    if users:
        text = f"{text}\n" + " ".join(f"<@{u}>" for u in users)
    body = {
        "text": message.title,  # the notification's fallback text
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": truncate_bytes(text, TEXT_LIMITS["slack"])}},
        ],
    }
    return Request("POST", _url(secret_fields), _json_headers(), _dumps(body))


def build_webhook(config, secret_fields, message, text, *, now, key="", channel=""):
    body = _dumps({
        "version": "1", "idempotency_key": key, "channel": channel, **message.as_dict(),
        "rendered": text,
    })
    headers = {**_json_headers(), "X-Opsplane-Idempotency-Key": key}
    if secret_fields.get("signing_secret"):
        headers["X-Opsplane-Signature"] = webhook_signature(secret_fields["signing_secret"],
                                                            body)
    if secret_fields.get("token"):
        headers["Authorization"] = f"Bearer {secret_fields['token']}"
    return Request("POST", _url(secret_fields), headers, body)


def build_sms(config, secret_fields, message, text, *, now):
    """The SMS gateway: ``config`` says the method, content type, extra headers and the
    body template; the rendered text and the mobiles go into that template."""
    mobiles = [m for m in _mentions(config, message, "recipients") if MOBILE.match(m)]
    if not mobiles:
        raise ConfigError("no mobile numbers to send the SMS to")
    context = {"text": truncate_bytes(text, TEXT_LIMITS["sms"]), "title": message.title,
               "severity": message.severity, "link": message.link, "mobiles": mobiles,
               "mobiles_csv": ",".join(mobiles)}
    method = (config.get("method") or "POST").upper()
    try:
        url = render.render(_url(secret_fields), context)
    except render.TemplateError:  # its message would quote the URL, token and all
        raise ConfigError("the URL template does not render") from None
    headers = {"Content-Type": config.get("content_type") or "application/json; charset=utf-8"}
    headers.update(config.get("headers") or {})
    if secret_fields.get("token"):
        headers["Authorization"] = f"Bearer {secret_fields['token']}"
    body = b""
    if method != "GET":
        body = render.render(config.get("body_template") or DEFAULT_SMS_BODY, context).encode()
    return Request(method, url, headers, body)


DEFAULT_SMS_BODY = '{"mobiles": {{ mobiles|json }}, "text": {{ text|json }}}'

BUILDERS = {
    "dingtalk": build_dingtalk, "wecom": build_wecom, "feishu": build_feishu,
    "slack": build_slack, "webhook": build_webhook, "sms": build_sms,
}


# --- answers -------------------------------------------------------------------------------


def _json(body):
    try:
        return json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None


def _dig(data, path):
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def interpret(kind, config, status, body):
    """A ``Result`` from the HTTP status and the answer's body, as each provider means it:
    DingTalk and WeCom answer 200 with ``errcode`` != 0 on failure, Feishu with ``code``
    != 0 (older deployments: ``StatusCode``), Slack with a plain-text error."""
    excerpt = body[:500].decode("utf-8", errors="replace")
    if not 200 <= status < 300:
        return Result(False, status, provider_code=str(status) if kind != "slack" else excerpt[:50],
                      provider_message=excerpt, error=f"HTTP {status}",
                      throttled=status == 429)
    if kind in {"dingtalk", "wecom", "feishu"}:
        data = _json(body)
        if not isinstance(data, dict):
            return Result(False, status, provider_message=excerpt,
                          error="the answer is not the provider's JSON")
        if kind == "feishu":
            code = data.get("code", data.get("StatusCode"))
            text = data.get("msg", data.get("StatusMessage", ""))
        else:
            code, text = data.get("errcode"), data.get("errmsg", "")
        if code is None:
            return Result(False, status, provider_message=excerpt,
                          error="the answer has no result code")
        if str(code) != "0":
            return Result(False, status, provider_code=str(code), provider_message=str(text),
                          error=f"{kind} error {code}: {text}",
                          throttled=str(code) in THROTTLED_CODES.get(kind, set()))
        return Result(True, status, provider_code="0", provider_message=str(text))
    if kind == "sms" and config.get("result_field"):
        value = _dig(_json(body), config["result_field"])
        allowed = [str(v) for v in config.get("ok_values") or ["0"]]
        if value is None or str(value) not in allowed:
            return Result(False, status, provider_code=str(value)[:50],
                          provider_message=excerpt,
                          error=f"gateway answered {config['result_field']}={value}")
        return Result(True, status, provider_code=str(value), provider_message=excerpt)
    return Result(True, status, provider_message=excerpt)


# --- the wire ------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to record, not to follow (a POST would become a GET)."""

    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call(request, timeout):
    """Make the request; ``(status, body)`` or raises ``OSError`` (network, timeout)."""
    if urlsplit(request.url).scheme not in {"http", "https"}:
        raise ValueError("only http(s) URLs")
    req = urllib.request.Request(request.url, data=request.body or None,  # noqa: S310
                                 headers=request.headers, method=request.method)
    try:
        with _opener.open(req, timeout=timeout) as response:
            return response.status, response.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read(MAX_ANSWER)
        finally:
            exc.close()


def _network_error(exc):
    if isinstance(exc, ValueError | http.client.InvalidURL):
        # http.client quotes the URL in these: never repeat it
        return f"{type(exc).__name__}: the URL or the answer is malformed"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}"


def build_request(channel, message, text, *, key="", now=None):
    """The HTTP request ``channel`` would make for ``message`` rendered as ``text``."""
    now = clock() if now is None else now
    secret_fields = secrets.decrypt(channel.secret)
    builder = BUILDERS[channel.kind]
    if channel.kind == "webhook":
        return builder(channel.config, secret_fields, message, text, now=now, key=key,
                       channel=channel.name)
    return builder(channel.config, secret_fields, message, text, now=now)


def send(channel, message, *, key="", text=None):
    """Deliver ``message`` through ``channel`` once; a ``Result``, never an exception for
    a failure of the outside world."""
    if message.severity not in SEVERITIES:
        return Result(False, error=f"bad severity {message.severity!r}")
    if text is None:
        text = rendered_text(channel, message)
    if channel.kind == "email":
        return send_email(channel, message, text)
    try:
        request = build_request(channel, message, text, key=key)
    except (ConfigError, render.TemplateError) as exc:
        return Result(False, error=f"configuration: {exc}")
    try:
        status, body = call(request, settings.OPSPLANE_NOTIFY_TIMEOUT)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return Result(False, error=_network_error(exc))
    return interpret(channel.kind, channel.config, status, body)


def rendered_text(channel, message):
    """The channel's template applied to the message; the kind's default template when
    the channel's own fails (a broken template must not keep an alert from going out)."""
    try:
        return render.render_message(channel.kind, channel.template, message,
                                     channel=channel.name)
    except render.TemplateError:
        return render.render_message(channel.kind, "", message, channel=channel.name)


def send_email(channel, message, text):
    recipients = [m for m in _mentions(channel.config, message, "recipients") if "@" in m]
    if not recipients:
        return Result(False, error="configuration: no e-mail addresses")
    prefix = f"[{message.severity.upper()}] " if message.severity != "info" else ""
    subject = (prefix + message.title).replace("\n", " ")[:200]
    email = mail.EmailMessage(
        subject, text, channel.config.get("from_email") or settings.DEFAULT_FROM_EMAIL,
        recipients,
        connection=mail.get_connection(timeout=settings.OPSPLANE_NOTIFY_TIMEOUT),
    )
    try:
        email.send()
    except Exception as exc:  # noqa: BLE001 - smtplib and socket errors alike
        code = getattr(exc, "smtp_code", None)
        return Result(False, provider_code=str(code or ""),
                      error=f"{type(exc).__name__}: {exc}"[:500])
    return Result(True)
