"""The on-call app's one API: who is on call (``on_call``, ``shifts``, ``next_shifts``)
and every write (schedules, layers, overrides). Views, the API, other apps (alerts'
escalation) and tests call these.

Reading: a schedule's layers and overrides are loaded in three queries and expanded by
``oncall/rotations.py`` (pure, with the DST rule documented there).
"""

from datetime import UTC, date, time, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from oncall import rotations
from oncall.models import Layer, LayerMember, Override, Schedule
from opsplane import audit
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, require

NEXT_HORIZON = timedelta(days=400)
# How far back a shift "now" is looked for, beyond the longest shift of any layer.
LOOKBACK_MARGIN = timedelta(days=1)


class OnCallError(DomainError):
    status = 400


# --- who may do what ----------------------------------------------------------------------------


def can_view(user):
    """See schedules, shifts and who is on call."""
    return has_role(user, Role.ONCALL, Role.OPERATOR)


def can_override(user):
    """Add and remove overrides (swap a shift)."""
    return has_role(user, Role.ONCALL)


def can_admin(user):
    """Create, edit and delete schedules and their layers."""
    return has_role(user, Role.ADMIN)


# --- reading ------------------------------------------------------------------------------------


def _now(at):
    at = at or timezone.now()
    if timezone.is_naive(at):
        raise ValueError("an aware datetime is needed")
    return at


def _layer_spec(layer, members):
    length, unit = layer.length_and_unit
    restriction = None
    if layer.restrict_days:
        restriction = rotations.Restriction(
            frozenset(layer.restrict_days), layer.restrict_start or time(0),
            layer.restrict_end or time(0))
    return rotations.LayerSpec(
        id=layer.pk, level=layer.level, participants=tuple(members), start_date=layer.start_date,
        handoff=layer.handoff_time, length=length, unit=unit, restriction=restriction)


def _load(schedule_ids, start, end, *, lookback=False):
    """{schedule id: (layer specs, override specs)} for the range, in three queries.
    ``lookback``: widen the range back by the longest shift of the schedule's layers (and
    a day), so the shift going on at ``start`` is found whole; returns the widened
    start of each schedule as a third item."""
    members = {}
    for layer_id, user_id in (LayerMember.objects.filter(layer__schedule_id__in=schedule_ids)
                              .order_by("layer_id", "position").values_list("layer_id", "user_id")):
        members.setdefault(layer_id, []).append(user_id)
    found = {pk: ([], [], start) for pk in schedule_ids}
    for layer in Layer.objects.filter(schedule_id__in=schedule_ids):
        if members.get(layer.pk):
            specs, _overrides, since = found[layer.schedule_id]
            spec = _layer_spec(layer, members[layer.pk])
            specs.append(spec)
            if lookback:
                since = min(since, start - spec.step - LOOKBACK_MARGIN)
            found[layer.schedule_id] = (specs, _overrides, since)
    earliest = min((since for _l, _o, since in found.values()), default=start)
    for o in Override.objects.filter(schedule_id__in=schedule_ids, start__lt=end,
                                     end__gt=earliest):
        found[o.schedule_id][1].append(rotations.OverrideSpec(o.pk, o.user_id, o.start, o.end))
    return found


def _specs(schedule, start, end):
    """The schedule's layers (with participants) and the overrides touching the range."""
    layers, overrides, _since = _load([schedule.pk], start, end)[schedule.pk]
    return layers, overrides


def shifts(schedule, start, end):
    """Who is on call over ``[start, end)``: ``rotations.Shift`` tuples ``(start, end,
    user_id, source)`` in UTC, clipped to the range, in order, never overlapping.
    ``source`` is ``"layer:<id>"`` or ``"override:<id>"``."""
    if end < start:
        raise OnCallError(_("The end is before the start."))
    layers, overrides = _specs(schedule, start, end)
    return rotations.expand(layers, overrides, schedule.time_zone, start, end)


def on_call(schedule, at=None):
    """The users on call on ``schedule`` at instant ``at`` (default now); an empty list
    when nobody is. At a hand-off instant the incoming person is on call."""
    at = _now(at)
    found = shifts(schedule, at, at + timedelta(microseconds=1))
    if not found:
        return []
    users = get_user_model().objects.in_bulk([s.user_id for s in found])
    return [users[s.user_id] for s in found if s.user_id in users]


def next_shifts(schedule, at=None, count=1):
    """The next ``count`` shifts that begin after ``at`` (hand-offs to come; the shift
    going on at ``at`` is not one of them), looking up to ``NEXT_HORIZON`` ahead."""
    at = _now(at)
    span = timedelta(days=14)
    while True:
        found = [s for s in shifts(schedule, at, at + span) if s.start > at]
        # The last shift found may be cut at the range end: keep one spare.
        if len(found) > count or span >= NEXT_HORIZON:
            return found[:count]
        span = min(span * 4, NEXT_HORIZON)


def current_shift(schedule, at=None):
    """The shift going on at ``at`` with its real start and end (not cut at ``at``), or
    None. Looked for back to the longest shift of the schedule's layers, and ahead up to
    ``NEXT_HORIZON``."""
    at = _now(at)
    span = timedelta(days=14)
    while True:
        current, _next = overview([schedule], at, span)[schedule.pk]
        if current is None or current.end < at + span or span >= NEXT_HORIZON:
            return current
        span = min(span * 4, NEXT_HORIZON)


def overview(schedules, at=None, ahead=timedelta(days=60)):
    """{schedule id: (current shift or None, next shift or None)} for the list page, in
    four queries whatever the number of schedules. The next shift is looked for up to
    ``ahead``; a current shift that lasts beyond it ends there."""
    at = _now(at)
    loaded = _load([s.pk for s in schedules], at, at + ahead, lookback=True)
    result = {}
    for schedule in schedules:
        layers, overrides, since = loaded[schedule.pk]
        found = rotations.expand(layers, overrides, check_zone(schedule.time_zone), since,
                                 at + ahead)
        current = next((s for s in found if s.start <= at < s.end), None)
        upcoming = next((s for s in found if s.start > at), None)
        result[schedule.pk] = (current, upcoming)
    return result


def users_by_id(found):
    """{user id: user} for the shifts in ``found``."""
    return get_user_model().objects.in_bulk({s.user_id for s in found})


# --- validation ---------------------------------------------------------------------------------


def check_zone(name):
    try:
        return rotations.zone(name)
    except ValueError:
        raise OnCallError(_("Unknown time zone: %(zone)s.") % {"zone": name}) from None


def _check_participants(participants):
    users = list(participants or [])
    if not users:
        raise OnCallError(_("A rotation needs at least one participant."))
    user_model = get_user_model()
    ids = [u.pk if isinstance(u, user_model) else int(u) for u in users]
    found = user_model.objects.filter(pk__in=ids, is_active=True).in_bulk()
    missing = [i for i in ids if i not in found]
    if missing:
        raise OnCallError(_("Unknown or inactive user: %(ids)s.") % {
            "ids": ", ".join(str(i) for i in missing)})
    return [found[i] for i in ids]


def _clean(obj):
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise OnCallError("; ".join(f"{k}: {' '.join(v)}" if k != "__all__" else " ".join(v)
                                    for k, v in exc.message_dict.items())) from None


# --- schedules ----------------------------------------------------------------------------------


SCHEDULE_FIELDS = ("name", "description", "time_zone")


def save_schedule(schedule, data, *, by, request=None):
    """Create (``schedule.pk`` None) or edit a schedule from ``data`` (SCHEDULE_FIELDS)."""
    require(can_admin(by))
    created = schedule.pk is None
    for name in SCHEDULE_FIELDS:
        if name in data:
            setattr(schedule, name, data[name])
    schedule.name = (schedule.name or "").strip()
    schedule.time_zone = (schedule.time_zone or "").strip()
    if not schedule.name:
        raise OnCallError(_("A schedule needs a name."))
    check_zone(schedule.time_zone)
    if Schedule.objects.filter(name=schedule.name).exclude(pk=schedule.pk).exists():
        raise OnCallError(_("A schedule with this name exists already."))
    _clean(schedule)
    with transaction.atomic():
        schedule.save()
        audit.record("oncall_schedule.create" if created else "oncall_schedule.edit",
                     by=by, obj=schedule, request=request,
                     detail={"time_zone": schedule.time_zone})
    return schedule


def create_schedule(*, by, name, time_zone="UTC", description="", request=None):
    return save_schedule(Schedule(), {"name": name, "time_zone": time_zone,
                                      "description": description}, by=by, request=request)


def delete_schedule(schedule, *, by, request=None):
    require(can_admin(by))
    with transaction.atomic():
        audit.record("oncall_schedule.delete", by=by, obj=schedule, request=request)
        schedule.delete()


# --- layers -------------------------------------------------------------------------------------


LAYER_FIELDS = ("name", "level", "rotation", "shift_length", "shift_unit", "handoff_time",
                "start_date", "restrict_days", "restrict_start", "restrict_end")


def _check_layer(layer):
    if not (layer.name or "").strip():
        raise OnCallError(_("A layer needs a name."))
    layer.name = layer.name.strip()
    if layer.rotation not in Layer.Rotation.values:
        raise OnCallError(_("Unknown rotation: %(rotation)s.") % {"rotation": layer.rotation})
    if layer.rotation == Layer.Rotation.CUSTOM:
        if layer.shift_unit not in Layer.Unit.values:
            raise OnCallError(_("Unknown unit: %(unit)s.") % {"unit": layer.shift_unit})
        if not layer.shift_length or int(layer.shift_length) < 1:
            raise OnCallError(_("A shift is at least one hour or one day long."))
        if int(layer.shift_length) > (24 * 366 if layer.shift_unit == Layer.Unit.HOURS else 366):
            raise OnCallError(_("A shift is at most a year long."))
    else:
        layer.shift_length, layer.shift_unit = 1, Layer.Unit.DAYS
    if not isinstance(layer.start_date, date):
        raise OnCallError(_("A layer needs a start date."))
    if not isinstance(layer.handoff_time, time):
        raise OnCallError(_("A layer needs a hand-off time."))
    days = sorted(set(layer.restrict_days or []))
    if any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in days):
        raise OnCallError(_("Restricted days are weekdays 0 (Monday) to 6 (Sunday)."))
    layer.restrict_days = days
    if days and (layer.restrict_start is None or layer.restrict_end is None):
        raise OnCallError(_("A restriction needs a from and an until time."))
    if not days:
        layer.restrict_start = layer.restrict_end = None
    same_level = Layer.objects.filter(schedule=layer.schedule, level=layer.level)
    if same_level.exclude(pk=layer.pk).exists():
        raise OnCallError(_("This schedule has a layer at level %(level)s already.") % {
            "level": layer.level})


def next_level(schedule):
    """The level a new layer takes by default: on top of the schedule's others."""
    top = Layer.objects.filter(schedule=schedule).order_by("-level").first()
    return top.level + 1 if top else 1


def save_layer(layer, data, *, participants=None, by, request=None):
    """Create (``layer.pk`` None, ``layer.schedule`` set) or edit a layer from ``data``
    (LAYER_FIELDS). ``participants``: users (or ids) in rotation order; required when
    creating, None keeps them when editing. A new layer without a level goes on top."""
    require(can_admin(by))
    created = layer.pk is None
    for name in LAYER_FIELDS:
        if name in data:
            setattr(layer, name, data[name])
    if created and "level" not in data:
        layer.level = next_level(layer.schedule)
    if created or participants is not None:
        users = _check_participants(participants)
    _check_layer(layer)
    _clean(layer)
    with transaction.atomic():
        layer.save()
        if created or participants is not None:
            LayerMember.objects.filter(layer=layer).delete()
            LayerMember.objects.bulk_create(
                [LayerMember(layer=layer, user=user, position=i) for i, user in enumerate(users)])
        audit.record("oncall_layer.create" if created else "oncall_layer.edit", by=by, obj=layer,
                     request=request, detail=_layer_detail(layer))
    return layer


def _layer_detail(layer):
    return {
        "schedule": layer.schedule_id, "level": layer.level, "rotation": layer.rotation,
        "length": list(layer.length_and_unit), "handoff": layer.handoff_time.isoformat("minutes"),
        "start_date": layer.start_date.isoformat(),
        "participants": list(layer.members.values_list("user__username", flat=True)),
        "restrict_days": layer.restrict_days,
    }


def create_layer(schedule, *, by, participants, request=None, **data):
    return save_layer(Layer(schedule=schedule), data, participants=participants, by=by,
                      request=request)


def delete_layer(layer, *, by, request=None):
    require(can_admin(by))
    with transaction.atomic():
        audit.record("oncall_layer.delete", by=by, obj=layer, request=request,
                     detail={"schedule": layer.schedule_id})
        layer.delete()


# --- overrides ----------------------------------------------------------------------------------


def create_override(schedule, *, user, start, end, by, note="", request=None):
    """``user`` takes ``[start, end)`` (aware instants) on ``schedule``, above every layer."""
    require(can_override(by))
    if start is None or end is None or timezone.is_naive(start) or timezone.is_naive(end):
        raise OnCallError(_("An override needs a start and an end."))
    if end <= start:
        raise OnCallError(_("The end of an override must be after its start."))
    if end - start > timedelta(days=366):
        raise OnCallError(_("An override lasts at most a year."))
    (user,) = _check_participants([user])
    override = Override(schedule=schedule, user=user, start=start.astimezone(UTC),
                        end=end.astimezone(UTC), note=(note or "").strip(), created_by=by)
    _clean(override)
    with transaction.atomic():
        override.save()
        audit.record("oncall_override.create", by=by, obj=override, request=request, detail={
            "schedule": schedule.pk, "user": user.get_username(),
            "start": override.start.isoformat(), "end": override.end.isoformat()})
    return override


def delete_override(override, *, by, request=None):
    require(can_override(by))
    with transaction.atomic():
        audit.record("oncall_override.delete", by=by, obj=override, request=request,
                     detail={"schedule": override.schedule_id,
                             "user": override.user.get_username()})
        override.delete()


def calendar(schedule, start, end):
    """The schedule over ``[start, end)`` lane by lane, for the calendar: ``final`` (who
    is on call), ``layers`` ({layer id: that layer's own shifts}) and ``overrides``, all
    clipped to the range."""
    if end < start:
        raise OnCallError(_("The end is before the start."))
    tz = check_zone(schedule.time_zone)
    layers, overrides = _specs(schedule, start, end)
    return {
        "final": rotations.expand(layers, overrides, tz, start, end),
        "layers": {spec.id: rotations.layer_shifts(spec, tz, start, end) for spec in layers},
        "overrides": [rotations.Shift(max(o.start, start), min(o.end, end), o.user_id,
                                      f"{rotations.OVERRIDE}:{o.id}")
                      for o in sorted(overrides, key=lambda o: (o.start, o.id))],
    }
