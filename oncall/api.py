"""The on-call REST API: schedules and their layers (admins write), overrides (on-call
staff and admins write), who is on call now and the shifts over a range (on-call staff
and operators read). Writes go through ``oncall.services``, which checks roles again."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from oncall import services
from oncall.models import Layer, Override, Schedule
from opsplane.roles import HasRole, Role

Viewers = HasRole(Role.ONCALL, Role.OPERATOR)
Admins = HasRole(Role.ADMIN)
Responders = HasRole(Role.ONCALL)
MAX_RANGE = timedelta(days=93)


class _RolePermissions:
    """Viewers read; ``write_permission`` writes (services check again)."""

    write_permission = Admins

    def get_permissions(self):
        if self.request.method in SAFE_METHODS:
            return [Viewers()]
        return [self.write_permission()]


# --- serializers --------------------------------------------------------------------------------


class OnCallUserRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class ParticipantsField(serializers.ListField):
    """User names in rotation order (written as names, read from the layer's members)."""

    def get_attribute(self, layer):
        return [m.user.get_username() for m in layer.members.all()]

    def to_representation(self, names):
        return list(names)


class OnCallLayerSerializer(serializers.ModelSerializer):
    participants = ParticipantsField(
        child=serializers.CharField(), allow_empty=False, help_text=(
            "User names in rotation order; shift k goes to participant k mod n."))
    restrict_days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6), required=False, help_text=(
            "Weekdays (0 = Monday) the layer is limited to, between `restrict_start` and "
            "`restrict_end` (an end before the start runs into the next day). Empty: "
            "round the clock."))

    class Meta:
        model = Layer
        fields = ["id", "name", "level", "rotation", "shift_length", "shift_unit",
                  "handoff_time", "start_date", "restrict_days", "restrict_start",
                  "restrict_end", "participants"]
        extra_kwargs = {
            "level": {"required": False, "help_text": "Higher wins; default: on top."},
            "shift_length": {"help_text": "For `custom` rotations: the length in `shift_unit`."},
            "handoff_time": {"help_text": "Wall-clock time in the schedule's zone."},
            "start_date": {"help_text": "The first shift begins on this day at the hand-off "
                                        "time, in the schedule's zone."},
        }
        # Unique levels are the service's rule (a clear message), not the serializer's.
        validators = []

    def validate_participants(self, names):
        users = get_user_model().objects.filter(username__in=names, is_active=True).in_bulk(
            field_name="username")
        unknown = [n for n in names if n not in users]
        if unknown:
            raise ValidationError(f"unknown or inactive users: {', '.join(unknown)}")
        return [users[n] for n in names]


class OnCallScheduleSerializer(serializers.ModelSerializer):
    layers = OnCallLayerSerializer(many=True, read_only=True)

    class Meta:
        model = Schedule
        fields = ["id", "name", "description", "time_zone", "layers", "created_at",
                  "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}


class OnCallOverrideSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.filter(is_active=True),
        help_text="Who takes over.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Override
        fields = ["id", "user", "start", "end", "note", "created_by", "created_at"]
        read_only_fields = ["created_at"]


class OnCallShiftSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    user = OnCallUserRefSerializer(allow_null=True)
    source = serializers.CharField(help_text="`layer:<id>` or `override:<id>`.")
    kind = serializers.ChoiceField(choices=["layer", "override"])


class OnCallNowSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    on_call = OnCallUserRefSerializer(many=True, help_text="Empty when nobody is on call.")
    shift = OnCallShiftSerializer(allow_null=True, help_text="The shift going on, whole.")
    next = OnCallShiftSerializer(allow_null=True, help_text="The next hand-off.")


def _shift_data(shift, users):
    if shift is None:
        return None
    user = users.get(shift.user_id)
    return {"start": shift.start, "end": shift.end, "source": shift.source, "kind": shift.kind,
            "user": {"id": user.pk, "username": user.get_username()} if user else None}


def _schedule_queryset():
    return Schedule.objects.prefetch_related("layers__members__user")


# --- schedules ----------------------------------------------------------------------------------


class ScheduleList(_RolePermissions, generics.ListCreateAPIView):
    """On-call schedules with their layers; POST creates one (admins)."""

    serializer_class = OnCallScheduleSerializer

    def get_queryset(self):
        return _schedule_queryset()

    def perform_create(self, serializer):
        serializer.instance = services.save_schedule(
            Schedule(), serializer.validated_data, by=self.request.user, request=self.request)


class ScheduleDetail(_RolePermissions, generics.RetrieveUpdateDestroyAPIView):
    """A schedule; PUT/PATCH edit it, DELETE removes it with its layers and overrides
    (admins)."""

    serializer_class = OnCallScheduleSerializer

    def get_queryset(self):
        return _schedule_queryset()

    def perform_update(self, serializer):
        services.save_schedule(serializer.instance, serializer.validated_data,
                               by=self.request.user, request=self.request)

    def perform_destroy(self, schedule):
        services.delete_schedule(schedule, by=self.request.user, request=self.request)


# --- layers -------------------------------------------------------------------------------------


class _InSchedule:
    def schedule(self):
        if not hasattr(self, "_schedule"):
            self._schedule = get_object_or_404(Schedule, pk=self.kwargs["pk"])
        return self._schedule


class LayerList(_RolePermissions, _InSchedule, generics.ListCreateAPIView):
    """A schedule's layers, highest first; POST adds one (admins)."""

    serializer_class = OnCallLayerSerializer

    def get_queryset(self):
        return Layer.objects.filter(schedule=self.schedule()).prefetch_related("members__user")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        participants = data.pop("participants")
        serializer.instance = services.save_layer(
            Layer(schedule=self.schedule()), data, participants=participants,
            by=self.request.user, request=self.request)


class LayerDetail(_RolePermissions, _InSchedule, generics.RetrieveUpdateDestroyAPIView):
    """A layer; PUT/PATCH edit it (participants replace the rotation), DELETE removes it
    (admins)."""

    serializer_class = OnCallLayerSerializer
    lookup_url_kwarg = "layer_pk"

    def get_queryset(self):
        return Layer.objects.filter(schedule=self.schedule()).prefetch_related("members__user")

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        participants = data.pop("participants", None)
        services.save_layer(serializer.instance, data, participants=participants,
                            by=self.request.user, request=self.request)

    def perform_destroy(self, layer):
        services.delete_layer(layer, by=self.request.user, request=self.request)


# --- overrides ----------------------------------------------------------------------------------


class OverrideList(_RolePermissions, _InSchedule, generics.ListCreateAPIView):
    """A schedule's overrides that have not ended (``?all=1``: past ones too); POST adds
    one (on-call staff and admins): ``user`` takes ``[start, end)``, above every layer."""

    serializer_class = OnCallOverrideSerializer
    write_permission = Responders

    def get_queryset(self):
        found = Override.objects.filter(schedule=self.schedule()).select_related(
            "user", "created_by")
        if self.request.query_params.get("all") not in ("1", "true"):
            found = found.filter(end__gt=timezone.now())
        return found

    @extend_schema(parameters=[OpenApiParameter("all", OpenApiTypes.BOOL, description=(
        "Include overrides that have ended."))])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def perform_create(self, serializer):
        serializer.instance = services.create_override(
            self.schedule(), by=self.request.user, request=self.request,
            **serializer.validated_data)


class OverrideDetail(_RolePermissions, _InSchedule, generics.RetrieveDestroyAPIView):
    """An override; DELETE removes it (on-call staff and admins)."""

    serializer_class = OnCallOverrideSerializer
    write_permission = Responders
    lookup_url_kwarg = "override_pk"

    def get_queryset(self):
        return Override.objects.filter(schedule=self.schedule()).select_related(
            "user", "created_by")

    def perform_destroy(self, override):
        services.delete_override(override, by=self.request.user, request=self.request)


# --- who is on call -----------------------------------------------------------------------------


def _instant(value, name):
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None or timezone.is_naive(parsed):
        raise ValidationError({name: ["an RFC 3339 date-time with an offset, "
                                      "e.g. 2026-03-02T09:00:00Z"]})
    return parsed


class Now(APIView):
    """Who is on call on the schedule at ``at`` (default now), the shift going on and
    the next hand-off."""

    permission_classes = [Viewers]

    @extend_schema(responses=OnCallNowSerializer, parameters=[OpenApiParameter(
        "at", OpenApiTypes.DATETIME, description="RFC 3339 with an offset; default now.")])
    def get(self, request, pk):
        schedule = get_object_or_404(Schedule, pk=pk)
        at = _instant(request.query_params["at"], "at") if request.query_params.get("at") \
            else timezone.now()
        current, upcoming = services.overview([schedule], at)[schedule.pk]
        users = services.users_by_id([s for s in (current, upcoming) if s])
        # Who is on call is the current shift's user (what ``services.on_call`` finds).
        people = [users[current.user_id]] if current and current.user_id in users else []
        return Response(OnCallNowSerializer({
            "at": at, "on_call": [{"id": u.pk, "username": u.get_username()} for u in people],
            "shift": _shift_data(current, users), "next": _shift_data(upcoming, users),
        }).data)


class Shifts(APIView):
    """Who is on call over ``[start, end)`` (default: the next 7 days, at most 93): shifts
    in time order, never overlapping, cut at the range's edges. Where nobody is on call
    there is no shift."""

    permission_classes = [Viewers]

    @extend_schema(responses=OnCallShiftSerializer(many=True), parameters=[
        OpenApiParameter("start", OpenApiTypes.DATETIME, description="Default now."),
        OpenApiParameter("end", OpenApiTypes.DATETIME, description="Default start + 7 days.")])
    def get(self, request, pk):
        schedule = get_object_or_404(Schedule, pk=pk)
        params = request.query_params
        start = _instant(params["start"], "start") if params.get("start") else timezone.now()
        end = _instant(params["end"], "end") if params.get("end") else start + timedelta(days=7)
        if end < start:
            raise ValidationError({"end": ["the end is before the start"]})
        if end - start > MAX_RANGE:
            raise ValidationError({"end": [f"at most {MAX_RANGE.days} days after the start"]})
        found = services.shifts(schedule, start, end)
        users = services.users_by_id(found)
        data = [_shift_data(s, users) for s in found]
        return Response(OnCallShiftSerializer(data, many=True).data)
