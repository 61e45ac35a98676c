"""Freeze and maintenance windows on hosts: editing them, what is open when, whether a
start may be scheduled, and the calendar."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from approvals import matching, metrics, windows
from approvals.matching import hosts_from_facts
from approvals.models import ApprovalRequest, FreezeWindow, MaintenanceWindow
from approvals.services.access import can_edit_windows, require
from opsplane import audit

S = ApprovalRequest.Status
# Two scheduled subjects starting closer than this on a shared host are a conflict.
CONFLICT_WINDOW = timedelta(hours=2)


WINDOW_FIELDS = ("name", "description", "enabled", "environments", "selector", "kind",
                 "timezone", "start_weekday", "end_weekday", "start_date", "end_date",
                 "start_time", "end_time")


def _clean_window(window):
    errors = {}
    try:
        matching.parse_selector(window.selector)
    except matching.SelectorError as exc:
        errors["selector"] = [exc.message]
    try:
        windows.zone(window.timezone)
    except ValueError:
        errors["timezone"] = [_("Not a time zone name (e.g. Asia/Shanghai, Europe/Berlin, "
                                "UTC).")]
    if window.kind == windows.WEEKLY:
        window.start_date = window.end_date = None
        for field in ("start_weekday", "end_weekday"):
            if getattr(window, field) is None:
                errors[field] = [_("Pick a day.")]
    else:
        window.start_weekday = window.end_weekday = None
        for field in ("start_date", "end_date"):
            if getattr(window, field) is None:
                errors[field] = [_("Pick a date.")]
        if not errors and (window.end_date, window.end_time) <= (window.start_date,
                                                                 window.start_time):
            errors["end_date"] = [_("The end must come after the start.")]
    if errors:
        raise ValidationError(errors)


def save_window(window, data, *, by, request=None):
    """Create or edit a freeze or maintenance window (admins)."""
    require(can_edit_windows(by))
    created = window.pk is None
    for field, value in data.items():
        setattr(window, field, value)
    _clean_window(window)
    window.full_clean()
    with transaction.atomic():
        window.save()
        kind = window._meta.model_name
        audit.record(f"{kind}.create" if created else f"{kind}.edit", by=by, obj=window,
                     request=request, detail={"when": window.describe(),
                                              "environments": window.environments,
                                              "selector": window.selector,
                                              "enabled": window.enabled})
    return window


def delete_window(window, *, by, request=None):
    require(can_edit_windows(by))
    with transaction.atomic():
        audit.record(f"{window._meta.model_name}.delete", by=by, obj=window, request=request,
                     detail={"when": window.describe()})
        window.delete()


def _window_hosts(window, hosts):
    return matching.hosts_matching(hosts, environments=window.environments,
                                   selector=window.selector)


def active_freezes(hosts, at, *, freezes=None):
    """[(window, start, end, hosts)] of the freeze windows open at ``at`` on any of
    ``hosts``. ``freezes``: the enabled freeze windows, when the caller has read them."""
    found = []
    if freezes is None:
        freezes = FreezeWindow.objects.filter(enabled=True)
    for window in freezes:
        hit = _window_hosts(window, hosts)
        if hit:
            occurrence = windows.open_at(window, at)
            if occurrence:
                found.append((window, *occurrence, hit))
    return found


def _local(instant, tz_name):
    return instant.astimezone(windows.zone(tz_name)).strftime("%Y-%m-%d %H:%M %Z")


def freeze_message(frozen):
    parts = []
    for window, _start, end, hit in frozen:
        parts.append(_("freeze “%(name)s” (%(when)s) on %(hosts)s until %(until)s") % {
            "name": window.name, "when": window.describe(), "until": _local(end, window.timezone),
            "hosts": ", ".join(h.name for h in hit[:5]) + (" …" if len(hit) > 5 else "")})
    return _("Frozen: %(freezes)s.") % {"freezes": "; ".join(parts)}


def maintenance_problem(hosts, at, *, maintenance=None):
    """Why starting at ``at`` is outside the maintenance windows of ``hosts`` ("" when
    it is inside, or no window covers them). Each host a window covers must be inside
    one of its windows. ``maintenance``: the enabled maintenance windows, when the
    caller has read them."""
    if maintenance is None:
        maintenance = list(MaintenanceWindow.objects.filter(enabled=True))
    outside = []
    for host in hosts:
        mine = [w for w in maintenance if _window_hosts(w, [host])]
        if mine and not any(windows.open_at(w, at) for w in mine):
            outside.append((host, mine))
    if not outside:
        return ""
    names = sorted({w.name for _, mine in outside for w in mine})
    upcoming = sorted(start for _, mine in outside for w in mine
                      for start, _end in windows.occurrences(w, at, at + timedelta(days=40))
                      if start > at)
    message = _("%(at)s is outside the maintenance windows of %(hosts)s (%(windows)s).") % {
        "at": timezone.localtime(at).strftime("%Y-%m-%d %H:%M %Z"),
        "hosts": ", ".join(h.name for h, _ in outside[:5]) + (" …" if len(outside) > 5
                                                              else ""),
        "windows": ", ".join(names)}
    if upcoming:
        message += " " + _("The next one opens at %(at)s.") % {
            "at": timezone.localtime(upcoming[0]).strftime("%Y-%m-%d %H:%M %Z")}
    return message


def schedule_problem(hosts, at):
    """Why ``hosts`` (``HostFacts``) cannot be scheduled to start at ``at`` ("" when
    they can): a freeze window open then, or outside their maintenance windows."""
    frozen = active_freezes(hosts, at)
    if frozen:
        metrics.freeze_refusals.labels(stage="schedule").inc()
        return freeze_message(frozen)
    return maintenance_problem(hosts, at)


def calendar(start, end):
    """Freezes, maintenance windows and scheduled subjects between ``start`` and ``end``,
    and the conflicts among the scheduled ones: two starting less than
    ``CONFLICT_WINDOW`` apart on a shared host."""
    events = []
    # Read once: every scheduled subject below is checked against them.
    freezes = list(FreezeWindow.objects.filter(enabled=True))
    maintenance = list(MaintenanceWindow.objects.filter(enabled=True))
    for found, kind in ((freezes, "freeze"), (maintenance, "maintenance")):
        for window in found:
            for s, e in windows.occurrences(window, start, end):
                events.append({"kind": kind, "start": s, "end": e, "window": window})
    scheduled = list(ApprovalRequest.objects.filter(
        not_before__gte=start, not_before__lt=end, status__in=[S.PENDING, S.APPROVED],
        started_at__isnull=True).order_by("not_before", "id"))
    conflicts = []
    for i, a in enumerate(scheduled):
        a_hosts = {h["name"] for h in a.facts.get("hosts", [])}
        for b in scheduled[i + 1:]:
            if b.not_before - a.not_before >= CONFLICT_WINDOW:
                break
            shared = a_hosts & {h["name"] for h in b.facts.get("hosts", [])}
            if shared:
                conflicts.append({"a": a, "b": b, "hosts": sorted(shared)})
    conflicted = {r.pk for c in conflicts for r in (c["a"], c["b"])}
    for req in scheduled:
        hosts = hosts_from_facts(req.facts)
        events.append({"kind": "scheduled", "start": req.not_before, "end": None,
                       "request": req, "conflict": req.pk in conflicted,
                       "problem": _schedule_problem_quiet(hosts, req.not_before, freezes,
                                                          maintenance)})
    events.sort(key=lambda e: (e["start"], e["kind"]))
    return {"events": events, "conflicts": conflicts}


def _schedule_problem_quiet(hosts, at, freezes, maintenance):
    """``schedule_problem`` for display, against windows already read: counts no
    refusal."""
    frozen = active_freezes(hosts, at, freezes=freezes)
    if frozen:
        return freeze_message(frozen)
    return maintenance_problem(hosts, at, maintenance=maintenance)
