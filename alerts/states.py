"""The incident status machine: ``Incident.TRANSITIONS`` and the one function that
moves an incident (a conditional UPDATE, an event, an audit record for people)."""

from django.utils.translation import gettext as _

from alerts import live, metrics
from alerts.models import Incident, IncidentEvent
from opsplane import audit
from opsplane.errors import DomainError

S = Incident.Status
EVENT = {S.ACKNOWLEDGED: IncidentEvent.Kind.ACKNOWLEDGED,
         S.TRIGGERED: IncidentEvent.Kind.UNACKNOWLEDGED, S.RESOLVED: IncidentEvent.Kind.RESOLVED}


class TransitionError(DomainError):
    """The move is not allowed from the current status, or someone else moved first."""


def transition(incident, to, *, now, by=None, request=None, detail=None, event=None,
               **fields):
    """Move ``incident`` to ``to``; returns it updated. Call inside atomic. ``fields``
    are written in the same UPDATE; ``event`` overrides the timeline event's kind (a
    snooze is an acknowledgement that ends by itself)."""
    current = incident.status
    if to not in Incident.TRANSITIONS[current]:
        raise TransitionError(_("%(incident)s is %(current)s; it cannot become %(to)s.") % {
            "incident": incident, "current": incident.get_status_display(),
            "to": S(to).label})
    if to == S.RESOLVED:
        # However it ends (a person, the source's resolutions, a routing change),
        # escalation and its timers end with it.
        fields.update(resolved_at=now, next_flush_at=None, next_escalation_at=None,
                      ack_until=None, snoozed_until=None)
    elif to == S.ACKNOWLEDGED:
        fields.setdefault("next_escalation_at", None)
    elif to == S.TRIGGERED:
        fields.update(ack_until=None, snoozed_until=None)
    updated = Incident.objects.filter(pk=incident.pk, status=current).update(status=to, **fields)
    if not updated:
        incident.refresh_from_db()
        raise TransitionError(_("%(incident)s changed meanwhile: it is now %(status)s.") % {
            "incident": incident, "status": incident.get_status_display()})
    for name, value in fields.items():
        setattr(incident, name, value)
    incident.status = to
    IncidentEvent.objects.create(incident=incident, at=now, kind=event or EVENT[to],
                                 actor=by if by is not None and by.pk else None,
                                 detail={"from": current, **(detail or {})})
    if by is not None:
        audit.record(f"incident.{to}", by=by, obj=incident, request=request,
                     detail={"from": current, **(detail or {})})
    if to == S.RESOLVED:
        metrics.observe_resolved(incident, now)
    live.board_changed([incident.pk])  # the live board hears of it on commit
    return incident
