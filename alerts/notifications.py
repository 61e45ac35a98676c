"""The one place the alerts app talks to the notification layer (``opsplane.notify``).

A flush calls ``send()`` inside its transaction with the incident locked, for the
channels (receivers) that have something new to hear: it writes one
``alerts.Notification`` per channel (our record of the round, shown on the incident
page) and hands each message to ``opsplane.notify.services.enqueue`` under the same
idempotency key, ``alerts:incident:<id>:round:<n>:channel:<name>``. Both are unique per
key, so a retried flush cannot queue a message twice; delivery starts when the
transaction commits.

A route without channels for the incident's severity (``info`` by default) records the
round without sending anything.
"""

from django.conf import settings
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from alerts.models import Notification
from opsplane.notify.message import Message, absolute_url
from opsplane.notify.models import Channel
from opsplane.notify.services import enqueue

MAX_LINES = 20     # alerts listed in one message before "... and N more"
MAX_DATA = 50      # alerts passed to the channel's template


def incident_link(incident):
    return absolute_url(reverse("alerts:incident", args=[incident.pk]))


def known_channels(names):
    """The names among ``names`` that are notification channels."""
    return set(Channel.objects.filter(name__in=list(names)).values_list("name", flat=True))


def _line(alert):
    what = alert.summary or alert.alertname or alert.fingerprint
    where = alert.host_hint or alert.labels.get("instance", "")
    return f"- {what}" + (f" — `{where}`" if where else "")


def build_message(incident, *, firing, resolved):
    with translation.override(settings.LANGUAGE_CODE):
        if firing:
            title = _("[FIRING:%(n)d] %(title)s") % {"n": len(firing), "title": incident.title}
        else:
            title = _("[RESOLVED] %(title)s") % {"title": incident.title}
        lines = []
        for heading, alerts in ((_("Firing"), firing), (_("Resolved"), resolved)):
            if not alerts:
                continue
            lines.append(f"**{heading} ({len(alerts)})**")
            lines.extend(_line(a) for a in alerts[:MAX_LINES])
            if len(alerts) > MAX_LINES:
                lines.append(_("- … and %(n)d more") % {"n": len(alerts) - MAX_LINES})
            lines.append("")
        link = incident_link(incident)
        lines.append(f"[{_('Incident #%(id)d') % {'id': incident.pk}}]({link})")
    data = {
        "incident": incident.pk, "status": "firing" if firing else "resolved",
        "group_labels": incident.group_labels, "firing": len(firing), "resolved": len(resolved),
        "alerts": [{"status": a.status, "labels": a.labels, "annotations": a.annotations,
                    "starts_at": a.starts_at.isoformat(), "host": a.host_hint,
                    "fingerprint": a.fingerprint}
                   for a in (list(firing) + list(resolved))[:MAX_DATA]],
    }
    return Message(title=title[:300], text="\n".join(lines), severity=incident.severity,
                   link=link, digest_key=f"incident:{incident.pk}", data=data)


def send(incident, *, receiver, channels, firing, resolved, now):
    """Queue this round's message to ``channels`` (names; none: record the round only).
    Returns {channel name ("" when recorded): its ``Notification``}. Call inside the
    flush's transaction."""
    message = build_message(incident, firing=firing, resolved=resolved)
    base = f"alerts:incident:{incident.pk}:round:{incident.round}"
    common = {"incident": incident, "round": incident.round, "receiver": receiver,
              "firing": len(firing), "resolved": len(resolved), "title": message.title,
              "text": message.text, "created_at": now}
    if not channels:
        row, _created = Notification.objects.get_or_create(
            key=f"{base}:recorded",
            defaults={**common, "channel_name": "", "status": Notification.Status.RECORDED})
        return {"": row}
    found = {c.name: c for c in Channel.objects.filter(name__in=list(channels))}
    rows = {}
    for name in dict.fromkeys(channels):
        key = f"{base}:channel:{name}"
        channel = found.get(name)
        if channel is None:
            rows[name], _created = Notification.objects.get_or_create(key=key, defaults={
                **common, "channel_name": name, "status": Notification.Status.NO_CHANNEL})
            continue
        outbox = enqueue(channel, message, key=key, ref=f"incident:{incident.pk}")
        rows[name], _created = Notification.objects.get_or_create(key=key, defaults={
            **common, "channel_name": name, "status": Notification.Status.QUEUED,
            "outbox_id": outbox.pk})
    return rows
