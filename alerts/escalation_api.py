"""REST API of escalation: policies (CRUD; admins write, on-call staff and operators
read) and the incident actions (acknowledge with an optional timeout, unacknowledge,
resolve, snooze). The rules are in ``alerts.escalation`` and ``alerts.incidents``."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import escalation
from alerts import incidents as actions
from alerts.api import IncidentSerializer
from alerts.models import EscalationPolicy, EscalationStep, Incident
from oncall.models import Schedule
from opsplane.notify.models import Channel
from opsplane.roles import HasRole, Role

Viewers = HasRole(Role.ONCALL, Role.OPERATOR)
K = EscalationStep.Kind


class EscalationStepSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=K.choices)
    schedule = serializers.SlugRelatedField(
        slug_field="name", queryset=Schedule.objects.all(), required=False, allow_null=True,
        help_text="`schedule` steps: the schedule's name (who is on call then is notified).")
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.filter(is_active=True),
        required=False, allow_null=True, help_text="`user` steps: a username.")
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True,
        help_text="`group` steps: a group name (each active member is notified).")
    channel = serializers.SlugRelatedField(
        slug_field="name", queryset=Channel.objects.all(), required=False, allow_null=True,
        help_text="`channel` steps: a notification channel's name.")
    wait_minutes = serializers.IntegerField(required=False, min_value=1, max_value=24 * 60,
                                            help_text="`wait` steps: minutes.")

    def to_representation(self, step):
        data = {"kind": step.kind}
        if step.kind == K.WAIT:
            data["wait_minutes"] = step.wait_minutes
        else:
            field = escalation.TARGET_FIELD[step.kind]
            target = step.target
            data[field] = (None if target is None else
                           target.get_username() if field == "user" else target.name)
        return data


class EscalationPolicySerializer(serializers.ModelSerializer):
    steps = EscalationStepSerializer(many=True, help_text=(
        "In order; a `wait` step holds the next ones back. After the last step the "
        "policy starts over `repeat` more times."))

    class Meta:
        model = EscalationPolicy
        fields = ["id", "name", "description", "repeat", "steps", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def save(self, **kwargs):
        data = dict(self.validated_data)
        steps = [dict(step) for step in data.pop("steps", [])]
        request = self.context["request"]
        self.instance = escalation.save_policy(self.instance or EscalationPolicy(), data,
                                               steps, by=request.user, request=request)
        return self.instance


class EscalationPolicyList(generics.ListCreateAPIView):
    """Escalation policies; POST creates one (admins)."""

    serializer_class = EscalationPolicySerializer
    permission_classes = [Viewers]
    queryset = EscalationPolicy.objects.prefetch_related(
        "steps__schedule", "steps__user", "steps__group", "steps__channel")


class EscalationPolicyDetail(generics.RetrieveUpdateDestroyAPIView):
    """One policy; PUT replaces it with its steps, DELETE deletes it (admins)."""

    serializer_class = EscalationPolicySerializer
    permission_classes = [Viewers]
    queryset = EscalationPolicyList.queryset
    http_method_names = ["get", "put", "delete", "head", "options"]

    def perform_destroy(self, policy):
        escalation.delete_policy(policy, by=self.request.user, request=self.request)


class IncidentActionSerializer(serializers.Serializer):
    timeout_minutes = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=actions.MAX_ACK_TIMEOUT_MINUTES,
        help_text="acknowledge: after this many minutes the incident is triggered again "
                  "and escalation restarts, unless it was resolved.")
    minutes = serializers.IntegerField(
        required=False, min_value=1, max_value=actions.MAX_SNOOZE_MINUTES,
        help_text="snooze (required): quiet for this many minutes, then triggered again.")


class IncidentAction(APIView):
    """acknowledge / unacknowledge / resolve / snooze an incident (on-call staff and
    admins). 409 when the incident is not in a state that allows it (e.g. an ack of a
    resolved incident, or a second ack)."""

    permission_classes = [Viewers]
    action = None

    @extend_schema(request=IncidentActionSerializer, responses={
        200: IncidentSerializer, 403: OpenApiResponse(description="Role not allowed."),
        409: OpenApiResponse(description="Not possible in the incident's current status.")})
    def post(self, request, pk):
        incident = get_object_or_404(Incident, pk=pk)
        serializer = IncidentActionSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        options = {}
        if self.action == "acknowledge":
            options["timeout"] = serializer.validated_data.get("timeout_minutes")
        elif self.action == "snooze":
            if not serializer.validated_data.get("minutes"):
                return Response({"minutes": ["This field is required."]},
                                status=status.HTTP_400_BAD_REQUEST)
            options["minutes"] = serializer.validated_data["minutes"]
        incident = actions.ACTIONS[self.action](incident, request.user, via="api",
                                                request=request, **options)
        incident = Incident.objects.select_related(
            "acknowledged_by", "escalation_policy").prefetch_related("members").get(pk=incident.pk)
        return Response(IncidentSerializer(incident).data)
