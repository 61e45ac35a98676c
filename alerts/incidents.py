"""What people do to an incident: acknowledge, unacknowledge, resolve, snooze.

The one home of these actions: the incident pages, the live board, the API and the
signed links in notifications all call these functions, naming where they were done
(``via``: board, page, api, link) for the audit trail and the metrics.

Each takes the incident's row lock, reads its current status and moves it through
``alerts.states.transition`` (a compare-and-set UPDATE) in one transaction. Two people
(or a person and the source's resolution) acting at once are serialised by the lock:
an ack after a resolve finds the incident resolved and fails with ``TransitionError``;
a resolve after an ack resolves the acknowledged incident. Nothing un-resolves.

Escalation (``alerts/escalation.py``) follows the status: an ack or a snooze stops it;
an unack, and the end of an ack timeout or a snooze (done by the escalation tick),
start a new cycle from the policy's first step.
"""

from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alerts import escalation, live, metrics, services, states
from alerts.models import Incident, IncidentEvent
from opsplane import audit

S = Incident.Status
VIA = ("board", "page", "api", "link")
MAX_SNOOZE_MINUTES = 7 * 24 * 60
MAX_ACK_TIMEOUT_MINUTES = 7 * 24 * 60


class AlreadyDone(states.TransitionError):
    """Nothing to do: the incident is already where the action would take it (a second
    click, a replayed link). Nothing changed."""


def can_act(user):
    """Acknowledge, unacknowledge, resolve and snooze incidents: on-call staff and
    admins (the same people who answer to alerts elsewhere: ``services.can_respond``)."""
    return services.can_respond(user)


def _require(user):
    if not can_act(user):
        raise PermissionDenied(_("Your role does not allow this."))


def _minutes(value, *, field, maximum):
    """``value`` (minutes as a number, or a timedelta, or None) -> timedelta or None."""
    if value in (None, "", 0):
        return None
    if not isinstance(value, timedelta):
        try:
            value = timedelta(minutes=int(value))
        except (TypeError, ValueError):
            raise ValidationError({field: [_("Give a whole number of minutes.")]}) from None
    if value <= timedelta(0) or value > timedelta(minutes=maximum):
        raise ValidationError({field: [_("Give between 1 and %(max)d minutes.")
                                       % {"max": maximum}]})
    return value


def _locked(incident):
    return Incident.objects.select_for_update(of=("self",)).select_related(
        "acknowledged_by").get(pk=incident.pk)


def _copy(source, target):
    """Bring the caller's object up to date with what was saved."""
    if target is not source:
        target.__dict__.update({k: v for k, v in source.__dict__.items()
                                if not k.startswith("_")})
        target._state = source._state


def _who(incident):
    user = incident.acknowledged_by
    return user.get_username() if user is not None else _("someone")


def acknowledge(incident, by, *, via, timeout=None, request=None, now=None):
    """Acknowledge: escalation stops. ``timeout`` (minutes or a timedelta): after it the
    incident returns to triggered and escalation starts again, unless it was resolved.
    Raises ``AlreadyDone`` when it is acknowledged already, ``TransitionError`` when
    resolved, ``PermissionDenied``, ``ValidationError`` for a bad timeout."""
    _require(by)
    timeout = _minutes(timeout, field="timeout", maximum=MAX_ACK_TIMEOUT_MINUTES)
    now = now or timezone.now()
    with transaction.atomic():
        current = _locked(incident)
        if current.status == S.ACKNOWLEDGED:
            raise AlreadyDone(_("%(incident)s is already acknowledged by %(who)s.")
                              % {"incident": current, "who": _who(current)})
        first = not IncidentEvent.objects.filter(
            incident=current, kind=IncidentEvent.Kind.ACKNOWLEDGED).exists()
        detail = {"via": via}
        if timeout:
            detail["timeout_minutes"] = int(timeout.total_seconds() // 60)
        states.transition(current, S.ACKNOWLEDGED, now=now, by=by, request=request,
                          detail=detail, acknowledged_at=now, acknowledged_by=by,
                          ack_until=now + timeout if timeout else None, snoozed_until=None)
        metrics.on_commit(lambda: metrics.acknowledgements.labels(via=via).inc())
        if first:
            seconds = max((now - current.opened_at).total_seconds(), 0)
            metrics.on_commit(lambda: metrics.time_to_acknowledge.observe(seconds))
    _copy(current, incident)
    return current


def unacknowledge(incident, by, *, via, request=None, now=None):
    """Back to triggered: escalation starts again from the policy's first step."""
    _require(by)
    now = now or timezone.now()
    with transaction.atomic():
        current = _locked(incident)
        if current.status == S.TRIGGERED:
            raise AlreadyDone(_("%(incident)s is not acknowledged.") % {"incident": current})
        states.transition(current, S.TRIGGERED, now=now, by=by, request=request,
                          detail={"via": via}, acknowledged_at=None, acknowledged_by=None,
                          **escalation.restart_fields(current, now))
    _copy(current, incident)
    return current


def resolve(incident, by, *, via, request=None, now=None):
    """Resolve by hand (triggered or acknowledged): escalation and its timers end. The
    incident's alerts keep their own status; new firing alerts open a new incident."""
    _require(by)
    now = now or timezone.now()
    with transaction.atomic():
        current = _locked(incident)
        if current.status == S.RESOLVED:
            raise AlreadyDone(_("%(incident)s is already resolved.") % {"incident": current})
        states.transition(current, S.RESOLVED, now=now, by=by, request=request,
                          detail={"via": via})
    _copy(current, incident)
    return current


def snooze(incident, by, *, minutes, via, request=None, now=None):
    """Quiet for ``minutes``: the incident counts as acknowledged by ``by`` until then,
    when it returns to triggered and escalation starts again (unless it was resolved).
    Snoozing an acknowledged incident replaces its ack timeout."""
    _require(by)
    length = _minutes(minutes, field="minutes", maximum=MAX_SNOOZE_MINUTES)
    if length is None:
        raise ValidationError({"minutes": [_("Give how many minutes to snooze.")]})
    now = now or timezone.now()
    until = now + length
    detail = {"via": via, "minutes": int(length.total_seconds() // 60),
              "until": until.isoformat()}
    with transaction.atomic():
        current = _locked(incident)
        if current.status == S.TRIGGERED:
            states.transition(current, S.ACKNOWLEDGED, now=now, by=by, request=request,
                              detail=detail, event=IncidentEvent.Kind.SNOOZED,
                              acknowledged_at=now, acknowledged_by=by, snoozed_until=until,
                              ack_until=None)
        elif current.status == S.ACKNOWLEDGED:
            # Same status: no transition, but the same compare-and-set on it.
            updated = Incident.objects.filter(pk=current.pk, status=S.ACKNOWLEDGED).update(
                snoozed_until=until, ack_until=None)
            if not updated:  # cannot happen under the lock; kept as the rule
                raise states.TransitionError(_("%(incident)s changed meanwhile.")
                                             % {"incident": current})
            current.snoozed_until, current.ack_until = until, None
            IncidentEvent.objects.create(incident=current, at=now,
                                         kind=IncidentEvent.Kind.SNOOZED, actor=by,
                                         detail={"from": current.status, **detail})
            audit.record("incident.snoozed", by=by, obj=current, request=request,
                         detail=detail)
            live.board_changed([current.pk])
        else:
            raise states.TransitionError(_("%(incident)s is resolved; it cannot be snoozed.")
                                         % {"incident": current})
    _copy(current, incident)
    return current


ACTIONS = {"acknowledge": acknowledge, "unacknowledge": unacknowledge, "resolve": resolve,
           "snooze": snooze}
