"""Telling people about requests, through the shared notification channels
(``opsplane.notify``): the channels the matched policies name (the protected
environments' default: ``APPROVALS_DEFAULT_CHANNELS``) hear when a request needs
approvers and about each decision, expiry and missed start; approvers and the author
also get a personal e-mail through the e-mail channel ``APPROVALS_EMAIL_CHANNEL``
(one message per person, addressed by the message's ``mentions``).

Services call these functions inside their transaction with the request row locked:
``enqueue`` writes outbox rows that commit with the decision (or not at all) and are
delivered after the commit, with retries. Every row's idempotency key names the request,
its round and digest, and the event (a decision by its id), plus the channel or person,
so a retried task or a second call cannot send the same thing twice.
"""

import logging
from collections import Counter

from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from approvals.matching import hosts_from_facts
from approvals.models import Decision
from opsplane.notify.message import Message, absolute_url
from opsplane.notify.models import Channel
from opsplane.notify.services import NotifyError, enqueue

logger = logging.getLogger(__name__)

K = Decision.Kind


def request_url(req):
    return absolute_url(reverse("approvals:request", args=[req.pk]))


def _key(req, event):
    return f"approvals:request:{req.pk}:round:{req.round}:digest:{req.digest[:16]}:{event}"


def _channels(req):
    """The enabled or disabled channels the request's policies name, in their order
    (a disabled one records its row as dead; a deleted one is skipped)."""
    names = []
    for entry in req.requirements:
        names.extend(n for n in entry.get("channels", []) if n not in names)
    if not names:
        return []
    found = {c.name: c for c in Channel.objects.filter(name__in=names)}
    for name in names:
        if name not in found:
            logger.warning("approval request %s: no notification channel named %r",
                           req.pk, name)
    return [found[name] for name in names if name in found]


def _email_channel():
    name = settings.APPROVALS_EMAIL_CHANNEL
    if not name:
        return None
    channel = Channel.objects.filter(name=name, kind=Channel.Kind.EMAIL).first()
    if channel is None:
        logger.warning("APPROVALS_EMAIL_CHANNEL %r is not an e-mail channel", name)
    return channel


def _addresses(user_ids):
    """{user id: address} of the active users among ``user_ids`` that have one."""
    return dict(get_user_model().objects.filter(pk__in=list(user_ids), is_active=True)
                .exclude(email="").values_list("pk", "email"))


def _blast_radius(req):
    """Markdown lines: environments and hosts (by environment)."""
    hosts = hosts_from_facts(req.facts)
    by_env = Counter(h.environment for h in hosts)
    spread = ", ".join(f"{env}: {n}" for env, n in sorted(by_env.items()))
    lines = [_("- Environments: %(envs)s") % {"envs": ", ".join(req.environments) or "—"},
             _("- Hosts: %(n)d") % {"n": len(hosts)} + (f" ({spread})" if spread else "")]
    if req.not_before:
        lines.append(_("- Scheduled for: %(at)s") % {"at": _when(req.not_before)})
    return lines


def _when(at):
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M %Z")


def _data(req, event, **extra):
    hosts = hosts_from_facts(req.facts)
    return {
        "request": req.pk, "event": event, "status": req.status, "round": req.round,
        "digest": req.digest, "title": req.title, "author": req.author_name,
        "subject": {"type": req.subject_type, "id": req.subject_id,
                    "link": absolute_url(req.link) if req.link else ""},
        "environments": list(req.environments), "hosts": len(hosts),
        "by_environment": dict(sorted(Counter(h.environment for h in hosts).items())),
        **extra,
    }


def _subject_line(req):
    if not req.link:
        return []
    return ["", f"[{req.title}]({absolute_url(req.link)})"]


def _send(req, event, message, *, people=()):
    """Queue ``message`` to the request's channels and, by e-mail, to each of ``people``
    (user ids): one row per channel and per person, each under its own key."""
    for channel in _channels(req):
        _enqueue(channel, message, _key(req, f"{event}:channel:{channel.name}"), req)
    people = set(people)
    email = _email_channel() if people else None
    if email is None:
        return
    for user_id, address in sorted(_addresses(people).items()):
        personal = Message(**{**message.as_dict(), "mentions": (address,)})
        _enqueue(email, personal, _key(req, f"{event}:user:{user_id}"), req)


def _enqueue(channel, message, key, req):
    try:
        enqueue(channel, message, key=key[:255], ref=f"approval:{req.pk}")
    except NotifyError:  # the key went to another channel (a renamed setting): a
        # notification must never undo the decision it is about
        logger.warning("approval request %s: %s already queued elsewhere", req.pk, key)


def approvers_needed(req, user_ids, *, again=False):
    """``req`` (pending) needs deciding: tell its channels and mail ``user_ids``.
    Call inside the transaction that opened the round."""
    with translation.override(settings.LANGUAGE_CODE):
        if again:
            title = _("Approval needed again: %(title)s") % {"title": req.title}
        else:
            title = _("Approval needed: %(title)s") % {"title": req.title}
        lines = [_("%(author)s asks for approval of “%(title)s”.") % {
            "author": req.author_name, "title": req.title}]
        if again:
            lines.append(_("It was edited after earlier approvals: they no longer count."))
        lines += ["", *_blast_radius(req),
                  _("- Needs: %(needs)s") % {"needs": _needs(req)},
                  _("- Expires: %(at)s") % {"at": _when(req.expires_at)}]
        lines += _subject_line(req)
        message = Message(title=title[:300], text="\n".join(lines), severity="info",
                          link=request_url(req), digest_key=f"approval:{req.pk}",
                          data=_data(req, "needed", again=again,
                                     progress=_progress(req)))
    _send(req, "needed", message, people=user_ids)


def _progress(req):
    from approvals.services.requests import progress_text  # it imports this module

    return progress_text(req)


def _needs(req):
    parts = []
    for entry in req.requirements:
        for r in entry["requirements"]:
            parts.append(_("%(count)d of %(group)s") % r)
    return ", ".join(parts) or "—"


def decided(req, decision):
    """``decision`` was made on ``req`` (the request as it is afterwards): tell the
    channels, and mail the author unless it was the author's own."""
    with translation.override(settings.LANGUAGE_CODE):
        what = {K.APPROVE: _("approved"), K.REJECT: _("rejected"),
                K.REQUEST_CHANGES: _("changes asked for"), K.COMMENT: _("commented"),
                K.EMERGENCY: _("emergency bypass recorded")}[decision.kind]
        if decision.kind == K.APPROVE and req.status == req.Status.APPROVED:
            what = _("approved: ready to start")
        elif decision.kind == K.REJECT and req.status == req.Status.REJECTED:
            what = _("rejected: the request is closed")
        message = _closing_message(
            req, what, by_name=decision.by_name, comment=decision.comment,
            severity="info" if decision.kind in (K.APPROVE, K.COMMENT) else "warning",
            data=_data(req, decision.kind, decision=decision.pk, by=decision.by_name,
                       comment=decision.comment))
    people = [] if decision.by_id == req.author_id else [req.author_id]
    _send(req, f"decision:{decision.pk}", message, people=[p for p in people if p])


def closed(req, event, *, comment="", by=None):
    """``req`` ended without a verdict: ``expired``, ``missed`` (its start), or
    ``withdrawn`` (``by`` someone): tell the channels (approvers need not look any more)
    and the author, unless it was the author's own doing."""
    with translation.override(settings.LANGUAGE_CODE):
        what = {"expired": _("expired"), "missed": _("missed its scheduled start"),
                "withdrawn": _("withdrawn")}[event]
        by_name = by.get_username() if by is not None else ""
        message = _closing_message(
            req, what, by_name=by_name, comment=comment,
            severity="info" if event == "withdrawn" else "warning",
            data=_data(req, event, comment=comment, by=by_name))
    people = [req.author_id] if req.author_id and req.author_id != getattr(by, "pk", None) \
        else []
    _send(req, event, message, people=people)


def _closing_message(req, what, *, by_name="", comment="", severity, data):
    title = _("%(title)s: %(what)s") % {"title": req.title, "what": what}
    lines = [_("“%(title)s” %(what)s.") % {"title": req.title, "what": what}]
    if by_name:
        lines.append(_("By: %(name)s") % {"name": by_name})
    if comment:
        lines += ["", comment]
    lines += ["", *_blast_radius(req)]
    if req.status == req.Status.PENDING:
        lines.append(_("- Progress: %(progress)s") % {"progress": _progress(req)})
    lines += _subject_line(req)
    return Message(title=title[:300], text="\n".join(lines), severity=severity,
                   link=request_url(req), digest_key=f"approval:{req.pk}", data=data)
