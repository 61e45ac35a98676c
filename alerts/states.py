"""The incident status machine: ``Incident.TRANSITIONS`` and the one function that
moves an incident (a conditional UPDATE, an event, an audit record for people)."""

from django.utils.translation import gettext as _

from alerts.models import Incident, IncidentEvent
from opsplane import audit
from opsplane.errors import DomainError

S = Incident.Status
EVENT = {S.ACKNOWLEDGED: IncidentEvent.Kind.ACKNOWLEDGED,
         S.TRIGGERED: IncidentEvent.Kind.UNACKNOWLEDGED, S.RESOLVED: IncidentEvent.Kind.RESOLVED}


class TransitionError(DomainError):
    """The move is not allowed from the current status, or someone else moved first."""


def transition(incident, to, *, now, by=None, request=None, detail=None, **fields):
    """Move ``incident`` to ``to``; returns it updated. Call inside atomic. ``fields``
    are written in the same UPDATE."""
    current = incident.status
    if to not in Incident.TRANSITIONS[current]:
        raise TransitionError(_("%(incident)s is %(current)s; it cannot become %(to)s.") % {
            "incident": incident, "current": incident.get_status_display(),
            "to": S(to).label})
    if to == S.RESOLVED:
        fields.update(resolved_at=now, next_flush_at=None)
    updated = Incident.objects.filter(pk=incident.pk, status=current).update(status=to, **fields)
    if not updated:
        incident.refresh_from_db()
        raise TransitionError(_("%(incident)s changed meanwhile: it is now %(status)s.") % {
            "incident": incident, "status": incident.get_status_display()})
    for name, value in fields.items():
        setattr(incident, name, value)
    incident.status = to
    IncidentEvent.objects.create(incident=incident, at=now, kind=EVENT[to],
                                 actor=by if by is not None and by.pk else None,
                                 detail={"from": current, **(detail or {})})
    if by is not None:
        audit.record(f"incident.{to}", by=by, obj=incident, request=request,
                     detail={"from": current})
    return incident
