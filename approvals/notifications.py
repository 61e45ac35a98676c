"""Telling people about requests: approvers when a request needs them, the author on
each decision. E-mail through Django's mail API until the shared notification channels
(``opsplane.notify``) exist; then only ``_send`` changes.

Services call ``approvers_needed``/``author_told`` inside their transaction: the mail is
queued with ``transaction.on_commit`` and so goes out only for what was committed. A
mail server that is down or slow must not fail the decision that was already made: a
failure is logged, and the connection gives up after ``TIMEOUT`` seconds.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import get_connection, send_mass_mail
from django.db import transaction
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

TIMEOUT = 10


def absolute(link):
    base = getattr(settings, "OPSPLANE_BASE_URL", "").rstrip("/")
    return f"{base}{link}" if link.startswith("/") else link


def _send(subject, body, recipients):
    """One message per recipient (nobody sees the others' addresses)."""
    if not recipients:
        return 0
    messages = [(subject, body, None, [address]) for address in sorted(recipients)]
    try:
        return send_mass_mail(messages, connection=get_connection(timeout=TIMEOUT))
    except Exception:  # noqa: BLE001 - a mail outage must not undo a committed decision
        logger.exception("approval notification %r to %d recipients failed", subject,
                         len(recipients))
        return 0


def _addresses(user_ids):
    User = get_user_model()
    return set(User.objects.filter(pk__in=user_ids, is_active=True).exclude(email="")
               .values_list("email", flat=True))


def _request_url(request):
    from django.urls import reverse

    return absolute(reverse("approvals:request", args=[request.pk]))


def approvers_needed(request, user_ids, *, again=False):
    """Ask ``user_ids`` to decide ``request`` (after commit)."""
    user_ids = list(user_ids)

    def send():
        if again:
            subject = _("Approval needed again: %(title)s") % {"title": request.title}
        else:
            subject = _("Approval needed: %(title)s") % {"title": request.title}
        lines = [
            _("%(author)s asks for your approval of “%(title)s”.") % {
                "author": request.author_name, "title": request.title},
            "",
            _("Environments: %(envs)s") % {"envs": ", ".join(request.environments) or "—"},
            _("Hosts: %(n)s") % {"n": len(request.facts.get("hosts", []))},
        ]
        if request.not_before:
            lines.append(_("Scheduled for: %(at)s") % {"at": request.not_before.isoformat()})
        lines += [_("Expires: %(at)s") % {"at": request.expires_at.isoformat()}, "",
                  _("Decide: %(url)s") % {"url": _request_url(request)}]
        if again:
            lines.insert(1, _("It was edited after earlier approvals: they no longer count."))
        _send(subject, "\n".join(lines), _addresses(user_ids))

    transaction.on_commit(send)


def author_told(request, what, *, by_name="", comment=""):
    """Tell the request's author what happened (``what``: a short translated phrase)."""
    author_id = request.author_id
    if author_id is None:
        return

    def send():
        subject = _("%(title)s: %(what)s") % {"title": request.title, "what": what}
        lines = [_("“%(title)s” %(what)s.") % {"title": request.title, "what": what}]
        if by_name:
            lines.append(_("By: %(name)s") % {"name": by_name})
        if comment:
            lines += ["", comment]
        lines += ["", absolute(request.link) if request.link else _request_url(request)]
        _send(subject, "\n".join(lines), _addresses([author_id]))

    transaction.on_commit(send)
