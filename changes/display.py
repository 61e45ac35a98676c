"""How a change's status reads to people, in one place for the list, the change page
and the API.

A submitted change stays ``pending_approval`` until it starts: approvals never calls
back, and ``start_run`` reads the request when someone starts it. So while a change
waits, what people need to see comes from its approval request: "awaiting approval
(1 of 2)", "approved: ready to start", "rejected", "expired", "withdrawn". Every other
status reads as itself.
"""

from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext as _

from approvals import services as approvals
from changes.models import Change
from changes.services import APPROVAL_SUBJECT


@dataclass(frozen=True)
class DisplayStatus:
    """``code``: the change's status, or for a change awaiting approval one of
    ``awaiting_approval``, ``approved``, ``rejected``, ``expired``, ``withdrawn``,
    ``missed``; ``label``: for people; ``tone``: what ``changes/_status.html`` colours."""

    code: str
    label: str
    tone: str


_UNKNOWN = object()  # "not looked up yet", as opposed to "has no request" (None)

# The tones of the closed outcomes ("approved" is built apart: its label says when).
TONES = {"rejected": "failed", "expired": "failed", "withdrawn": "cancelled", "missed": "failed"}


def display_status(change, request=_UNKNOWN, now=None):
    """``change``'s ``DisplayStatus``. ``request``: its approval request (or None) when
    the caller has looked it up (``display_statuses`` does for a page); read here
    otherwise."""
    if change.status != Change.Status.PENDING_APPROVAL:
        return DisplayStatus(change.status, change.get_status_display(), change.status)
    if request is _UNKNOWN:
        request = approvals.requests_for(APPROVAL_SUBJECT, [change.pk]).get(str(change.pk))
    if request is None:  # submitted before approvals existed, or a broken row
        return DisplayStatus("awaiting_approval", change.get_status_display(), "pending")
    standing = approvals.standing(request, now=now)
    status = standing["status"]
    if status == "pending":
        return DisplayStatus("awaiting_approval", _("awaiting approval (%(got)d of %(needed)d)")
                             % standing, "pending")
    if status == "approved":
        if change.scheduled_at and change.scheduled_at > (now or timezone.now()):
            label = _("approved: starts %(at)s") % {
                "at": timezone.localtime(change.scheduled_at).strftime("%Y-%m-%d %H:%M")}
        else:
            label = _("approved: ready to start")
        return DisplayStatus("approved", label, "ok")
    labels = {"rejected": _("rejected"), "expired": _("approval expired"),
              "withdrawn": _("withdrawn"), "missed": _("missed its start")}
    return DisplayStatus(status, labels.get(status, status), TONES.get(status, "pending"))


def display_statuses(changes):
    """``{change pk: DisplayStatus}`` for ``changes`` (a page of them), with one query
    for the approval requests of those awaiting approval (two with their decisions)."""
    changes = list(changes)
    waiting = [c.pk for c in changes if c.status == Change.Status.PENDING_APPROVAL]
    requests = approvals.requests_for(APPROVAL_SUBJECT, waiting) if waiting else {}
    now = timezone.now()
    return {c.pk: display_status(c, requests.get(str(c.pk)), now=now) for c in changes}
