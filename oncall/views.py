"""On-call pages. Thin: parse the request, call ``oncall.services``, render.

On-call staff and operators see every schedule; on-call staff (and admins) add and
remove overrides; admins create and edit schedules and layers. Times are shown in the
viewer's time zone (``?tz=``, then the ``opsplane_tz`` cookie the page's script sets
from the browser, then the site's zone), with the schedule's own zone beside them.
"""

from datetime import datetime, time, timedelta
from urllib.parse import unquote, urlencode
from zoneinfo import available_timezones

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from oncall import rotations, services
from oncall.forms import LayerForm, OverrideForm, ScheduleForm
from oncall.models import Layer, Override, Schedule
from opsplane.errors import DomainError
from opsplane.roles import Role, role_required

VIEWERS = (Role.ONCALL, Role.OPERATOR)
TZ_COOKIE = "opsplane_tz"
VIEW_DAYS = (7, 14)
COLORS = 8
_ZONES = None


def zone_names():
    global _ZONES  # noqa: PLW0603 - computed once per process
    if _ZONES is None:
        _ZONES = sorted(z for z in available_timezones() if "/" in z or z == "UTC")
    return _ZONES


def viewer_zone(request):
    """(zone name, ZoneInfo, chosen now): the zone to show times in."""
    asked = request.GET.get("tz", "")
    cookie = unquote(request.COOKIES.get(TZ_COOKIE, ""))
    for name in (asked, cookie, settings.TIME_ZONE, "UTC"):
        if name:
            try:
                return name, rotations.zone(name), name == asked
            except ValueError:
                continue
    raise AssertionError("UTC is always a zone")


def _remember_zone(response, name, chosen):
    if chosen:
        response.set_cookie(TZ_COOKIE, name, max_age=365 * 24 * 3600, samesite="Lax",
                            secure=settings.SESSION_COOKIE_SECURE)
    return response


def _error(request, exc):
    messages.error(request, str(exc) if isinstance(exc, DomainError) else _("Not allowed."))


# --- list ---------------------------------------------------------------------------------------


@role_required(*VIEWERS)
def index(request):
    tz_name, tz, chosen = viewer_zone(request)
    now = timezone.now()
    schedules = list(Schedule.objects.all())
    overview = services.overview(schedules, now)
    users = services.users_by_id([s for pair in overview.values() for s in pair if s])
    rows = [{"schedule": s, "current": overview[s.pk][0], "next": overview[s.pk][1],
             "current_user": users.get(overview[s.pk][0].user_id) if overview[s.pk][0] else None,
             "next_user": users.get(overview[s.pk][1].user_id) if overview[s.pk][1] else None}
            for s in schedules]
    with timezone.override(tz):
        response = render(request, "oncall/schedule_list.html", {
            "rows": rows, "now": now, "tz": tz_name, "zones": zone_names(),
            "can_admin": services.can_admin(request.user)})
    return _remember_zone(response, tz_name, chosen)


# --- a schedule and its calendar ----------------------------------------------------------------


def _first_day(request, tz, today):
    try:
        return datetime.strptime(request.GET.get("start", ""), "%Y-%m-%d").date()
    except ValueError:
        return today - timedelta(days=today.weekday())


def _days(schedule, first, count, tz, layers):
    """The calendar: one entry per local day of the viewer, each with its lanes (who is
    on call, each layer, the overrides) as bars positioned in minutes since midnight."""
    start = rotations.to_instant(datetime.combine(first, time(0)), tz)
    end = rotations.to_instant(datetime.combine(first + timedelta(days=count), time(0)), tz)
    data = services.calendar(schedule, start, end)
    users = services.users_by_id(data["final"] + data["overrides"]
                                 + [s for found in data["layers"].values() for s in found])
    colors = {pk: i % COLORS for i, pk in enumerate(sorted(users))}
    names = {layer.pk: layer.name for layer in layers}
    lanes = [("final", _("On call"), data["final"])]
    lanes += [(f"layer-{layer.pk}", layer.name, data["layers"].get(layer.pk, []))
              for layer in layers]
    lanes.append(("overrides", _("Overrides"), data["overrides"]))

    def describe(shift, day_start, day_end):
        user = users.get(shift.user_id)
        return {
            "start": shift.start, "end": shift.end, "user": user,
            "name": user.get_username() if user else "?", "color": colors.get(shift.user_id, 0),
            "override": shift.kind == rotations.OVERRIDE,
            "layer": names.get(shift.source_id) if shift.kind == rotations.LAYER else "",
            "x": int((max(shift.start, day_start) - day_start).total_seconds() // 60),
            "w": max(1, int((min(shift.end, day_end) - max(shift.start, day_start))
                            .total_seconds() // 60)),
            "continues": shift.end > day_end, "began": shift.start < day_start,
        }

    days = []
    for i in range(count):
        day = first + timedelta(days=i)
        day_start = rotations.to_instant(datetime.combine(day, time(0)), tz)
        day_end = rotations.to_instant(datetime.combine(day + timedelta(days=1), time(0)), tz)
        minutes = int((day_end - day_start).total_seconds() // 60)
        day_lanes = []
        for key, label, found in lanes:
            bars = [describe(s, day_start, day_end) for s in found
                    if s.start < day_end and s.end > day_start]
            day_lanes.append({"key": key, "label": label, "bars": bars})
        ticks = [int((rotations.to_instant(datetime.combine(day, time(h)), tz) - day_start)
                     .total_seconds() // 60) for h in (6, 12, 18)]
        days.append({"date": day, "minutes": minutes, "lanes": day_lanes, "ticks": ticks,
                     "shifts": day_lanes[0]["bars"]})
    return days


@role_required(*VIEWERS)
def schedule_detail(request, pk):
    return _schedule_page(request, get_object_or_404(Schedule, pk=pk))


def _schedule_page(request, schedule, override_form=None):
    """The schedule page; ``override_form``: a bound form with errors to show again."""
    tz_name, tz, chosen = viewer_zone(request)
    now = timezone.now()
    today = timezone.localtime(now, tz).date()
    first = _first_day(request, tz, today)
    try:
        count = int(request.GET.get("days", 7))
    except ValueError:
        count = 7
    count = count if count in VIEW_DAYS else 7
    layers = list(Layer.objects.filter(schedule=schedule).prefetch_related("members__user"))
    context = {
        "schedule": schedule, "tz": tz_name, "now": now, "today": today, "first": first,
        "count": count, "previous": first - timedelta(days=count),
        "next": first + timedelta(days=count), "view_days": VIEW_DAYS,
        "days": _days(schedule, first, count, tz, layers),
        "keep": [("start", first.isoformat()), ("days", count)],
        "can_override": services.can_override(request.user),
    }
    template = "oncall/schedule_detail.html"
    if request.htmx and not request.htmx.boosted and override_form is None:
        template += "#calendar"
    else:
        current, upcoming = services.overview([schedule], now)[schedule.pk]
        users = services.users_by_id([s for s in (current, upcoming) if s])
        initial = {"start": request.GET.get("override_start"),
                   "end": request.GET.get("override_end"),
                   "user": request.user.pk}
        context.update(
            layers=layers, zones=zone_names(),
            current=current, upcoming=upcoming,
            current_user=users.get(current.user_id) if current else None,
            next_user=users.get(upcoming.user_id) if upcoming else None,
            overrides=Override.objects.filter(schedule=schedule, end__gt=now)
            .select_related("user", "created_by"),
            override_form=override_form or OverrideForm(initial=initial),
            can_admin=services.can_admin(request.user),
        )
    with timezone.override(tz):
        response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return _remember_zone(response, tz_name, chosen)


@require_POST
@role_required(Role.ONCALL)
def override_new(request, pk):
    schedule = get_object_or_404(Schedule, pk=pk)
    tz_name, tz, _chosen = viewer_zone(request)
    with timezone.override(tz):  # the form's local times are the viewer's
        form = OverrideForm(request.POST)
        valid = form.is_valid()
    if not valid:
        return _schedule_page(request, schedule, override_form=form)
    try:
        override = services.create_override(schedule, by=request.user, request=request,
                                            **form.cleaned_data)
    except DomainError as exc:
        form.add_error(None, str(exc))
        return _schedule_page(request, schedule, override_form=form)
    with timezone.override(tz):
        messages.success(request, _("%(user)s is on call from %(start)s until %(end)s.") % {
            "user": override.user.get_username(),
            "start": timezone.localtime(override.start).strftime("%Y-%m-%d %H:%M"),
            "end": timezone.localtime(override.end).strftime("%Y-%m-%d %H:%M")})
    back = reverse("oncall:schedule", args=[schedule.pk])
    return redirect(f"{back}?{urlencode({'tz': tz_name})}")


@require_POST
@role_required(Role.ONCALL)
def override_delete(request, pk, override_pk):
    override = get_object_or_404(Override, pk=override_pk, schedule_id=pk)
    try:
        services.delete_override(override, by=request.user, request=request)
    except (DomainError, PermissionDenied) as exc:
        _error(request, exc)
    else:
        messages.success(request, _("Override removed."))
    return redirect("oncall:schedule", pk=pk)


# --- editing (admins) ---------------------------------------------------------------------------


@role_required(Role.ADMIN)
def schedule_edit(request, pk=None):
    schedule = get_object_or_404(Schedule, pk=pk) if pk else Schedule()
    form = ScheduleForm(request.POST or None, instance=schedule)
    if request.method == "POST" and form.is_valid():
        try:
            services.save_schedule(schedule, form.cleaned_data, by=request.user, request=request)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, _("Schedule saved."))
            return redirect("oncall:schedule", pk=schedule.pk)
    return render(request, "oncall/schedule_form.html", {
        "form": form, "schedule": schedule if pk else None, "zones": zone_names()})


@require_POST
@role_required(Role.ADMIN)
def schedule_delete(request, pk):
    schedule = get_object_or_404(Schedule, pk=pk)
    services.delete_schedule(schedule, by=request.user, request=request)
    messages.success(request, _("Schedule deleted."))
    return redirect("oncall:index")


@role_required(Role.ADMIN)
def layer_edit(request, pk, layer_pk=None):
    schedule = get_object_or_404(Schedule, pk=pk)
    layer = (get_object_or_404(Layer, pk=layer_pk, schedule=schedule) if layer_pk
             else Layer(schedule=schedule, start_date=timezone.localdate()))
    if layer.pk is None:
        layer.level = services.next_level(schedule)
    form = LayerForm(request.POST or None, instance=layer)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        participants = data.pop("participants")
        try:
            services.save_layer(layer, data, participants=participants, by=request.user,
                                request=request)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, _("Layer saved."))
            return redirect("oncall:schedule", pk=schedule.pk)
    return render(request, "oncall/layer_form.html", {
        "form": form, "schedule": schedule, "layer": layer if layer_pk else None})


@require_POST
@role_required(Role.ADMIN)
def layer_delete(request, pk, layer_pk):
    layer = get_object_or_404(Layer, pk=layer_pk, schedule_id=pk)
    services.delete_layer(layer, by=request.user, request=request)
    messages.success(request, _("Layer deleted."))
    return redirect("oncall:schedule", pk=pk)
