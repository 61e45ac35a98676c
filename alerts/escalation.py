"""Escalation: an incident walks its policy until someone acknowledges or it resolves.

State lives on the incident row (``escalation_policy``, ``escalation_cycle``,
``escalation_repeat``, ``escalation_step``, ``next_escalation_at``, ``ack_until``,
``snoozed_until``, ``exhausted_at``); beat's tick (``tick``, task ``alerts.escalate``)
advances it. Nothing waits in a Celery countdown, so a restart of workers or beat loses
nothing: the next tick finds what is due.

One tick:

1. wakes acknowledged incidents whose ack timeout or snooze has ended: back to
   triggered, a new cycle from the first step (``restart_fields``);
2. claims each due triggered incident with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a
   second beat or a redelivered task skips it or finds it no longer due) and, in that
   transaction, takes its steps up to the next wait: every notification goes to the
   outbox (``opsplane.notify.services.enqueue``) under a key naming the incident,
   cycle, repeat, step and recipient, every step becomes an ``IncidentEvent``, and
   the new position is saved. Either all of it commits or none: a crash repeats no
   step and loses none.

A new incident is due at once (``Incident.next_escalation_at`` defaults to now, cycle
0): its first tick picks the policy, from its route (``escalation:`` in the routing
tree, inherited by child routes) or else from its integration. After the last step the
policy starts over, ``repeat`` times; then the incident is marked exhausted. While every
firing alert of the incident is silenced, steps wait.

Signed links: every message to a person carries one-click links (acknowledge, resolve)
signed with ``django.core.signing`` for that incident, cycle and person (``sign_link``,
``load_link``); ``alerts/escalation_views.py`` serves them.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from alerts import live, metrics
from alerts.models import (
    Alert,
    EscalationPolicy,
    EscalationStep,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Integration,
    OnCallContact,
)
from opsplane import audit
from opsplane.notify.message import Message, absolute_url
from opsplane.notify.models import Channel
from opsplane.notify.services import enqueue
from opsplane.roles import Role, has_role, require

logger = logging.getLogger(__name__)

S = Incident.Status
K = EscalationStep.Kind
BATCH = 200
# A pass of a policy with no wait step is not walked twice in one tick.
PASS_GAP = timedelta(minutes=1)
# While all the incident's firing alerts are silenced, look again this much later.
SILENCED_RECHECK = timedelta(minutes=1)
LINK_SALT = "alerts.incident-link"
LINK_ACTIONS = ("acknowledge", "resolve")
MAX_STEPS = 50
MAX_LINES = 10


# --- who may do what --------------------------------------------------------------------------


def can_admin(user):
    """Create, edit and delete escalation policies: admins."""
    return has_role(user, Role.ADMIN)


# --- policies ----------------------------------------------------------------------------------

TARGET_FIELD = {K.SCHEDULE: "schedule", K.USER: "user", K.GROUP: "group", K.CHANNEL: "channel"}
TARGET_MISSING = {
    K.SCHEDULE: gettext_lazy("Step %(n)d: choose the schedule to notify."),
    K.USER: gettext_lazy("Step %(n)d: choose the user to notify."),
    K.GROUP: gettext_lazy("Step %(n)d: choose the group to notify."),
    K.CHANNEL: gettext_lazy("Step %(n)d: choose the channel to notify."),
}


def check_steps(steps, repeat):
    """``steps``: dicts with ``kind`` and its target (``schedule``/``user``/``group``/
    ``channel`` objects) or ``wait_minutes``. Raises ``ValidationError`` keyed
    ``steps`` with one message per problem, naming the step."""
    errors = []
    if not steps:
        errors.append(_("Add at least one step."))
    if len(steps) > MAX_STEPS:
        errors.append(_("At most %(n)d steps.") % {"n": MAX_STEPS})
    for number, step in enumerate(steps, 1):
        kind = step.get("kind")
        if kind not in K.values:
            errors.append(_("Step %(n)d: choose what it does.") % {"n": number})
        elif kind == K.WAIT:
            minutes = step.get("wait_minutes") or 0
            if not isinstance(minutes, int) or minutes < 1 or minutes > 24 * 60:
                errors.append(_("Step %(n)d: wait between 1 and 1440 minutes.") % {"n": number})
        elif step.get(TARGET_FIELD[kind]) is None:
            errors.append(TARGET_MISSING[kind] % {"n": number})
    if repeat and steps and not any(s.get("kind") == K.WAIT for s in steps):
        errors.append(_("A policy that repeats needs a wait step, or it would page everyone "
                        "again at once."))
    if errors:
        raise ValidationError({"steps": errors})


def save_policy(policy, data, steps, *, by, request=None):
    """Create (``policy.pk`` None) or edit a policy: ``data`` has name, description,
    repeat; ``steps`` replaces its steps in order (see ``check_steps``). Incidents
    walking it continue at their step number under the new steps."""
    require(can_admin(by))
    created = policy.pk is None
    for name in ("name", "description", "repeat"):
        if name in data:
            setattr(policy, name, data[name])
    policy.name = (policy.name or "").strip()
    if created:
        policy.created_by = by
    errors = {}
    try:
        policy.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        check_steps(steps, policy.repeat)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        policy.save()
        policy.steps.all().delete()
        EscalationStep.objects.bulk_create([_step(policy, i, step)
                                            for i, step in enumerate(steps)])
        audit.record("escalation_policy.create" if created else "escalation_policy.edit",
                     by=by, obj=policy, request=request,
                     detail={"steps": describe_steps(policy), "repeat": policy.repeat})
    return policy


def _step(policy, position, data):
    if data["kind"] == K.WAIT:
        return EscalationStep(policy=policy, position=position, kind=K.WAIT,
                              wait_minutes=data["wait_minutes"])
    field = TARGET_FIELD[data["kind"]]
    return EscalationStep(policy=policy, position=position, kind=data["kind"],
                          **{field: data[field]})


def delete_policy(policy, *, by, request=None):
    """Delete a policy. Routes naming it stop escalating (their incidents are left where
    they are); integrations falling back to it fall back to nothing."""
    require(can_admin(by))
    with transaction.atomic():
        audit.record("escalation_policy.delete", by=by, obj=policy, request=request)
        policy.delete()


def describe_steps(policy):
    return [describe(step) for step in policy.steps.all()]


def describe(step):
    if step.kind == K.WAIT:
        return f"wait {step.wait_minutes}m"
    target = step.target
    return f"{step.kind} {target if target is not None else '(deleted)'}"


def check_tree(tree):
    """The routing tree's ``escalation:`` names that are no policy; raises
    ``ValidationError`` keyed ``source`` naming each route's path."""
    refs = getattr(tree, "escalation_refs", [])
    known = set(EscalationPolicy.objects.filter(name__in=[name for _, name in refs])
                .values_list("name", flat=True))
    errors = [f"{path}: " + _("no escalation policy is named “%(name)s”") % {"name": name}
              for path, name in refs if name not in known]
    if errors:
        raise ValidationError({"source": errors})


# --- contacts ----------------------------------------------------------------------------------


def save_contact(user, data, channels, *, by, request=None):
    """A person's own contact (or anyone's, for an admin): mobile, e-mail, chat id and
    the channels escalation reaches them through."""
    require(has_role(by, Role.ONCALL, Role.OPERATOR) if by.pk == user.pk
             else has_role(by, Role.ADMIN))
    contact = OnCallContact.objects.filter(user=user).first() or OnCallContact(user=user)
    for name in ("mobile", "email", "chat_id"):
        if name in data:
            setattr(contact, name, (data[name] or "").strip())
    contact.full_clean(exclude=["user"])
    with transaction.atomic():
        contact.save()
        contact.channels.set(channels)
        audit.record("oncall_contact.edit", by=by, obj=user, request=request,
                     detail={"channels": [c.name for c in channels]})
    return contact


def handles(contact, user, kind):
    """What @mentions (or addresses) ``user`` on a channel of ``kind``."""
    email = (contact.email if contact else "") or user.email
    mobile = contact.mobile if contact else ""
    chat_id = contact.chat_id if contact else ""
    found = {
        Channel.Kind.DINGTALK: [mobile], Channel.Kind.SMS: [mobile],
        Channel.Kind.WECOM: [chat_id or mobile], Channel.Kind.FEISHU: [chat_id],
        Channel.Kind.SLACK: [chat_id], Channel.Kind.EMAIL: [email],
    }.get(kind, [])
    return tuple(h for h in found if h)


# --- signed links ------------------------------------------------------------------------------


def link_max_age():
    return getattr(settings, "OPSPLANE_ACK_LINK_MAX_AGE", 24 * 3600)


def sign_link(incident, action, user=None):
    """The token of a one-click link doing ``action`` on ``incident`` in its current
    cycle as ``user`` (None: whoever is logged in when it is followed)."""
    assert action in LINK_ACTIONS
    return signing.dumps({"i": incident.pk, "c": incident.escalation_cycle,
                          "u": user.pk if user is not None else None, "a": action},
                         salt=LINK_SALT)


def link_url(incident, action, user=None):
    return absolute_url(reverse("alerts:incident_link",
                                args=[sign_link(incident, action, user)]))


def load_link(token):
    """{"i": incident id, "c": cycle, "u": user id or None, "a": action}. Raises
    ``signing.SignatureExpired`` or ``signing.BadSignature``."""
    data = signing.loads(token, salt=LINK_SALT, max_age=link_max_age())
    if not isinstance(data, dict) or data.get("a") not in LINK_ACTIONS:
        raise signing.BadSignature("unexpected content")
    return data


# --- which policy, and starting over -----------------------------------------------------------


def policy_for(incident, tree=None):
    """The policy ``incident`` walks: its route's (``escalation:``), else the first
    of its integrations' that has one; None when neither names one."""
    from alerts.routing_state import current_tree

    tree = tree or current_tree()
    route = tree.route(incident.route_key)
    name = getattr(route, "escalation", "") if route is not None else ""
    if name:
        policy = EscalationPolicy.objects.filter(name=name).first()
        if policy is not None:
            return policy
    policy_id = (Integration.objects.filter(alerts__memberships__incident=incident,
                                            escalation_policy__isnull=False)
                 .order_by("pk").values_list("escalation_policy", flat=True).first())
    return EscalationPolicy.objects.filter(pk=policy_id).first() if policy_id else None


def restart_fields(incident, now, tree=None):
    """The fields that start a new escalation cycle (from the first step) now."""
    policy = policy_for(incident, tree)
    return {"escalation_policy": policy, "escalation_cycle": incident.escalation_cycle + 1,
            "escalation_repeat": 0, "escalation_step": 0, "exhausted_at": None,
            "next_escalation_at": now if policy is not None else None}


# --- the tick ----------------------------------------------------------------------------------


def tick(now=None, *, limit=BATCH):
    """Beat's escalation tick: wake ended ack timeouts and snoozes, then advance every
    due incident. Returns {"woken": n, "advanced": n}."""
    from alerts.routing_state import current_tree

    now = now or timezone.now()
    tree = current_tree()
    woken = wake(now, tree, limit=limit)
    advanced, failed = 0, []
    while advanced + len(failed) < limit:
        pk = None
        try:
            with transaction.atomic():
                incident = (Incident.objects.select_for_update(skip_locked=True)
                            .filter(status=S.TRIGGERED, next_escalation_at__lte=now)
                            .exclude(pk__in=failed)
                            .order_by("next_escalation_at", "pk").first())
                if incident is None:
                    break
                pk = incident.pk
                advance(incident, now, tree)
        except Exception:
            # One broken incident must not stop the others; it stays due and is tried
            # again at the next tick.
            logger.exception("escalation of incident %s failed", pk)
            if pk is None:  # the claim itself failed (e.g. the database): next tick
                break
            failed.append(pk)
            continue
        advanced += 1
    return {"woken": woken, "advanced": advanced}


def wake(now, tree, *, limit=BATCH):
    """Acknowledged incidents whose ack timeout or snooze has ended: triggered again,
    with a new escalation cycle due now."""
    from alerts import states

    woken = 0
    ids = list(Incident.objects.filter(status=S.ACKNOWLEDGED).filter(
        Q(ack_until__lte=now) | Q(snoozed_until__lte=now)).values_list("pk", flat=True)[:limit])
    for pk in ids:
        with transaction.atomic():
            incident = (Incident.objects.select_for_update(skip_locked=True)
                        .filter(pk=pk, status=S.ACKNOWLEDGED)
                        .filter(Q(ack_until__lte=now) | Q(snoozed_until__lte=now)).first())
            if incident is None:
                continue
            reason = "snooze ended" if incident.snoozed_until else "acknowledgement timed out"
            states.transition(incident, S.TRIGGERED, now=now, detail={"reason": reason},
                              acknowledged_at=None, acknowledged_by=None,
                              **restart_fields(incident, now, tree))
            woken += 1
    return woken


def _pages(incident, now):
    """False while every firing alert of the incident is silenced: escalation waits."""
    members = IncidentAlert.objects.filter(incident=incident, active=True,
                                           alert__status="firing")
    if not members.exists():
        return True  # e.g. resolved alerts not flushed yet: the flush decides
    return members.filter(Q(alert__silenced_by__isnull=True)
                          | Q(alert__silenced_by__ends_at__lte=now)
                          | Q(alert__silenced_by__starts_at__gt=now)).exists()


def _event(incident, now, event, **detail):
    IncidentEvent.objects.create(incident=incident, at=now, kind=event, detail={
        "cycle": incident.escalation_cycle, "repeat": incident.escalation_repeat, **detail})


FIELDS = ["escalation_policy", "escalation_cycle", "escalation_repeat", "escalation_step",
          "next_escalation_at", "exhausted_at"]


def advance(incident, now, tree):
    """Take ``incident``'s due steps up to the next wait, and save where it is. Call
    inside atomic with the (triggered, due) incident locked."""
    if incident.escalation_cycle == 0:
        for name, value in restart_fields(incident, now, tree).items():
            setattr(incident, name, value)
        if incident.escalation_policy is None and EscalationPolicy.objects.exists():
            _event(incident, now, IncidentEvent.Kind.ESCALATED,
                   note="no escalation policy applies")
    policy = incident.escalation_policy
    if policy is None:
        incident.next_escalation_at = None
        incident.save(update_fields=FIELDS)
        return
    if not _pages(incident, now):
        incident.next_escalation_at = now + SILENCED_RECHECK
        incident.save(update_fields=FIELDS)
        return
    steps = list(policy.steps.select_related("schedule", "user", "group", "channel"))
    walked = 0
    incident.next_escalation_at = None
    while True:
        if incident.escalation_step >= len(steps):
            if incident.escalation_repeat < policy.repeat and steps:
                incident.escalation_repeat += 1
                incident.escalation_step = 0
                if walked >= len(steps):  # a whole pass without a wait: not again now
                    incident.next_escalation_at = now + PASS_GAP
                    break
                continue
            incident.exhausted_at = now
            _event(incident, now, IncidentEvent.Kind.EXHAUSTED, policy=policy.name,
                   passes=incident.escalation_repeat + 1)
            metrics.on_commit(metrics.exhausted.inc)
            break
        position = incident.escalation_step
        step = steps[position]
        incident.escalation_step += 1
        walked += 1
        metrics.on_commit(lambda kind=step.kind: metrics.escalation_steps.labels(kind).inc())
        if step.kind == K.WAIT:
            incident.next_escalation_at = now + timedelta(minutes=step.wait_minutes)
            _event(incident, now, IncidentEvent.Kind.ESCALATED, step=position + 1,
                   kind=K.WAIT.value, minutes=step.wait_minutes, policy=policy.name)
            break
        outcome = notify_step(incident, step, position, policy, now, count=len(steps))
        _event(incident, now, IncidentEvent.Kind.ESCALATED, step=position + 1,
               kind=step.kind, policy=policy.name, **outcome)
    incident.save(update_fields=FIELDS)
    live.board_changed([incident.pk])  # the board shows who was paged, and exhaustion


def recipients(step, now):
    """The users a person-step notifies (active ones), in a stable order."""
    if step.kind == K.SCHEDULE:
        if step.schedule is None:
            return []
        from oncall.services import on_call

        return [u for u in on_call(step.schedule, at=now) if u.is_active]
    if step.kind == K.USER:
        return [step.user] if step.user is not None and step.user.is_active else []
    if step.kind == K.GROUP:
        if step.group is None:
            return []
        return list(get_user_model().objects.filter(groups=step.group, is_active=True)
                    .order_by("username"))
    return []


def notify_step(incident, step, position, policy, now, *, count):
    """Queue the step's messages (``count``: the policy's steps); returns what the
    timeline records about it."""
    base = (f"alerts:escalation:{incident.pk}:{incident.escalation_cycle}:"
            f"{incident.escalation_repeat}:{position}")
    # One query for every recipient's message, not one per person and channel.
    firing = list(Alert.objects.filter(memberships__incident=incident,
                                       memberships__active=True, status=Alert.Status.FIRING)
                  .order_by("starts_at")[:MAX_LINES + 1])
    context = {"policy": policy, "position": position, "count": count, "firing": firing}
    if step.kind == K.CHANNEL:
        channel = step.channel
        if channel is None:
            return {"target": None, "notified": [], "note": "the channel was deleted"}
        message = build_message(incident, None, (), **context)
        enqueue(channel, message, key=f"{base}:channel:{channel.pk}",
                ref=f"incident:{incident.pk}")
        return {"target": channel.name, "channels": [channel.name]}
    users = recipients(step, now)
    target = step.target
    outcome = {"target": str(target) if target is not None else None, "notified": [],
               "unreachable": [], "channels": []}
    if target is None:
        outcome["note"] = "the target was deleted"
    contacts = {c.user_id: c for c in OnCallContact.objects.filter(
        user__in=users).prefetch_related("channels")}
    for user in users:
        contact = contacts.get(user.pk)
        channels = [c for c in contact.channels.all() if c.enabled] if contact else []
        if not channels:
            outcome["unreachable"].append(user.get_username())
            continue
        for channel in channels:
            message = build_message(incident, user, handles(contact, user, channel.kind),
                                    **context)
            enqueue(channel, message, key=f"{base}:user:{user.pk}:channel:{channel.pk}",
                    ref=f"incident:{incident.pk}")
            if channel.name not in outcome["channels"]:
                outcome["channels"].append(channel.name)
        outcome["notified"].append(user.get_username())
    if not users and target is not None:
        outcome["note"] = "nobody to notify"
    return outcome


def build_message(incident, user, mentions, *, policy, position, count, firing):
    """The escalation message for one recipient (``user`` None: a channel), with its
    one-click links. ``firing``: the incident's firing alerts, up to ``MAX_LINES + 1``."""
    from alerts.notifications import _line, incident_link

    ack, resolve = link_url(incident, "acknowledge", user), link_url(incident, "resolve", user)
    page = incident_link(incident)
    with translation.override(settings.LANGUAGE_CODE):
        title = _("[ESCALATION] #%(id)d %(title)s") % {"id": incident.pk,
                                                        "title": incident.title}
        lines = [_("Incident #%(id)d is %(status)s (%(severity)s), opened %(opened)s UTC.") % {
            "id": incident.pk, "status": incident.get_status_display(),
            "severity": incident.get_severity_display(),
            "opened": incident.opened_at.strftime("%Y-%m-%d %H:%M")},
            _("Escalation policy %(policy)s, step %(step)d of %(count)d.") % {
                "policy": policy.name, "step": position + 1, "count": count}]
        if user is not None:
            lines.append(_("For %(user)s.") % {"user": user.get_username()})
        lines.append("")
        lines.extend(_line(alert) for alert in firing[:MAX_LINES])
        if len(firing) > MAX_LINES:
            lines.append(_("- … and more"))
        lines.append("")
        acknowledge, resolve_label, open_label = _("Acknowledge"), _("Resolve"), _("Open")
        lines.append(f"[{acknowledge}]({ack}) · [{resolve_label}]({resolve}) · "
                     f"[{open_label}]({page})")
    data = {"incident": incident.pk, "status": incident.status,
            "escalation": {"policy": policy.name, "step": position + 1,
                           "cycle": incident.escalation_cycle,
                           "repeat": incident.escalation_repeat},
            "user": user.get_username() if user is not None else None,
            "acknowledge_url": ack, "resolve_url": resolve}
    return Message(title=title[:300], text="\n".join(lines), severity=incident.severity,
                   link=page, mentions=mentions, digest_key=f"incident:{incident.pk}",
                   data=data)
