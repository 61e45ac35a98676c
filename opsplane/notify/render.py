"""Message templates: Django's template language in an engine of its own.

The engine has autoescape off (the output is markdown or plain text for a robot, never
HTML) and our filters built in (``json``, ``mrkdwn``, ``plain``; see ``filters.py``). A
channel's template is editable (``Channel.template``); empty means the default of its
kind, ``templates/notify/messages/<kind>.txt``. Templates are written by admins only.
"""

from django.conf import settings
from django.template import Context, Engine, TemplateSyntaxError

from opsplane.notify.message import Message

ENGINE = Engine(
    dirs=[settings.BASE_DIR / "templates"],
    autoescape=False,
    builtins=["opsplane.notify.filters"],
    string_if_invalid="",
)

ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵"}

SAMPLE = Message(
    title="HighCPU on web-01",
    text="**web-01:9100** CPU above 90% for 5 minutes.\n\n- alertname: HighCPU\n"
         "- severity: critical\n- instance: web-01:9100",
    severity="critical",
    link="https://opsplane.example.com/alerts/incidents/42/",
    mentions=("13800000000",),
    digest_key="incident:42",
    data={"alerts": [{"labels": {"alertname": "HighCPU", "instance": "web-01:9100",
                                 "severity": "critical"}, "status": "firing"}]},
)


class TemplateError(ValueError):
    """The template does not compile or does not render; the message says where."""


def default_template(kind):
    """The text of the default template of a channel kind."""
    path = settings.BASE_DIR / "templates" / "notify" / "messages" / f"{kind}.txt"
    return path.read_text()


def render(template_text, context):
    """Render ``template_text`` with ``context`` (a dict); surrounding blanks stripped.
    Raises ``TemplateError`` for a template that does not compile or render."""
    try:
        template = ENGINE.from_string(template_text)
        return template.render(Context(context, autoescape=False)).strip()
    except TemplateSyntaxError as exc:
        raise TemplateError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a filter given the wrong type, and the like
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def validate(template_text):
    """Raise ``TemplateError`` unless the template compiles and renders the sample."""
    render(template_text, message_context(SAMPLE, channel="sample"))


def message_context(message, *, channel=""):
    """What a template sees: the message's fields, ``icon`` for its severity, the
    channel's name, and ``data`` (the caller's extra values)."""
    return {
        "title": message.title, "text": message.text, "severity": message.severity,
        "link": message.link, "mentions": list(message.mentions),
        "digest_key": message.digest_key, "data": message.data,
        "icon": ICONS.get(message.severity, ""), "channel": channel,
    }


def render_message(kind, template_text, message, *, channel=""):
    """The message's text for a channel: its own template, or its kind's default."""
    return render(template_text or default_template(kind),
                  message_context(message, channel=channel))
