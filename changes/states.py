"""The status machines of changes and runs, in one place.

``TRANSITIONS`` says which moves exist; ``transition()`` makes one with a conditional
UPDATE (``WHERE status = <from>``), so of two concurrent requests exactly one wins, and
records the audit event in the same transaction.
"""

from django.utils import timezone
from django.utils.translation import gettext as _

from changes.models import Change, Run
from opsplane import audit
from opsplane.errors import DomainError

C, R = Change.Status, Run.Status

CHANGE_TRANSITIONS = {
    C.DRAFT: {C.PENDING_APPROVAL, C.READY, C.CANCELLED},
    C.PENDING_APPROVAL: {C.READY, C.DRAFT, C.CANCELLED},
    C.READY: {C.RUNNING, C.DRAFT, C.CANCELLED},
    C.RUNNING: {C.SUCCEEDED, C.FAILED, C.CANCELLED, C.INTERRUPTED},
    # A retry runs the hosts that did not finish ok again (services.retry_run).
    C.FAILED: {C.RUNNING},
    C.INTERRUPTED: {C.RUNNING},
    C.CANCELLED: {C.RUNNING},
    C.SUCCEEDED: set(),
}

RUN_TRANSITIONS = {
    R.QUEUED: {R.RUNNING, R.CANCELLED},
    R.RUNNING: {R.SUCCEEDED, R.FAILED, R.CANCELLED, R.INTERRUPTED},
    R.SUCCEEDED: set(),
    R.FAILED: set(),
    R.CANCELLED: set(),
    R.INTERRUPTED: set(),
}


class TransitionError(DomainError):
    """The move is not allowed from the current status, or someone else moved first."""


def transition(obj, to, *, by=None, request=None, source="", detail=None, **fields):
    """Move ``obj`` (a Change or Run) to status ``to``; returns it refreshed.

    Call inside ``transaction.atomic()``. ``fields`` are written in the same UPDATE (e.g.
    ``started_at``). Raises ``TransitionError`` when the move is not in the map or the
    row is no longer in the status ``obj`` had (someone else won)."""
    table = CHANGE_TRANSITIONS if isinstance(obj, Change) else RUN_TRANSITIONS
    current = obj.status
    if to not in table[current]:
        raise TransitionError(_("%(obj)s is %(current)s; it cannot become %(to)s.") % {
            "obj": obj, "current": obj.get_status_display(), "to": type(obj).Status(to).label})
    if isinstance(obj, Run) and to in Run.TERMINAL:
        fields.setdefault("finished_at", timezone.now())
    updated = type(obj).objects.filter(pk=obj.pk, status=current).update(status=to, **fields)
    if not updated:
        obj.refresh_from_db()
        raise TransitionError(_("%(obj)s changed meanwhile: it is now %(status)s.") % {
            "obj": obj, "status": obj.get_status_display()})
    kind = "change" if isinstance(obj, Change) else "run"
    audit.record(f"{kind}.{to}", by=by, obj=obj, request=request, source=source,
                 detail={"from": current, **(detail or {})})
    obj.refresh_from_db()
    return obj
