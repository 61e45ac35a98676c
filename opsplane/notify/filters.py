"""Filters every notification template has without ``{% load %}`` (``render.ENGINE``)."""

import json
import re

from django import template

register = template.Library()

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\((\S+?)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)


@register.filter(name="json")
def json_filter(value):
    """The value as JSON (for the SMS gateway's body template): ``{{ text|json }}``."""
    return json.dumps(value, ensure_ascii=False)


@register.filter
def mrkdwn(value):
    """Our markdown in Slack's dialect: ``**b**`` -> ``*b*``, ``[t](u)`` -> ``<u|t>``,
    headings -> bold lines."""
    text = _HEADING.sub(r"**\1**", str(value))
    text = _LINK.sub(r"<\2|\1>", text)
    return _BOLD.sub(r"*\1*", text)


@register.filter
def plain(value):
    """Our markdown as plain text (e-mail, SMS): ``**b**`` -> ``b``, ``[t](u)`` -> ``t (u)``."""
    text = _HEADING.sub(r"\1", str(value))
    text = _LINK.sub(r"\1 (\2)", text)
    return _BOLD.sub(r"\1", text)
