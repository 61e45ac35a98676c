"""The approvals REST API. Serializers shape and parse; ``approvals.services`` writes and
checks who may do what (the permission classes here only turn away people without any
business in approvals before a body is read)."""

from datetime import datetime, timedelta

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError as APIValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import policy_io, services
from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    Decision,
    FreezeWindow,
    MaintenanceWindow,
)
from opsplane.roles import HasRole, Role

People = HasRole(Role.OPERATOR, Role.APPROVER)
Readers = HasRole(Role.OPERATOR, Role.APPROVER, Role.ONCALL)


class ReadOrAdmin(BasePermission):
    """Reading: anyone who composes, approves or is on call; writing: admins."""

    message = "Editing policies and windows needs the admin role."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return services.can_read_setup(request.user)
        return services.can_edit_policies(request.user)


# --- requests --------------------------------------------------------------------------------


class DecisionSerializer(serializers.ModelSerializer):
    # Plain strings (not enums) here and below: drf-spectacular names an enum after its
    # field, and one choice set used by several components would get clashing names.
    kind = serializers.CharField(read_only=True, help_text=(
        "approve, reject, request_changes, comment or emergency"))
    by = serializers.CharField(source="by_name", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    earlier_version = serializers.SerializerMethodField(
        help_text="Given on another digest than the request's current one: it no longer "
                  "counts.")

    class Meta:
        model = Decision
        fields = ["id", "round", "digest", "kind", "by", "groups", "comment", "created_at",
                  "earlier_version", "reviewed_at", "reviewed_by", "review_note"]

    def get_earlier_version(self, decision) -> bool:
        return decision.digest != decision.request.digest


class RequirementProgressSerializer(serializers.Serializer):
    group = serializers.CharField()
    count = serializers.IntegerField()
    by = serializers.ListField(child=serializers.CharField())


class PolicyProgressSerializer(serializers.Serializer):
    policy = serializers.CharField(help_text="Empty: the protected environments' default.")
    environments = serializers.ListField(child=serializers.CharField())
    met = serializers.BooleanField()
    requirements = RequirementProgressSerializer(many=True)


class RequestListSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author_name", read_only=True)
    status = serializers.CharField(read_only=True, help_text=(
        "pending, approved, rejected, expired, withdrawn or missed"))

    class Meta:
        model = ApprovalRequest
        fields = ["id", "subject_type", "subject_id", "title", "link", "digest", "author",
                  "status", "round", "automatic", "environments", "not_before", "opened_at",
                  "decided_at", "expires_at", "started_at", "close_reason"]


class RequestSerializer(RequestListSerializer):
    progress = serializers.SerializerMethodField()
    decisions = DecisionSerializer(many=True, read_only=True)
    emergency = serializers.SerializerMethodField(
        help_text="The current digest has an emergency bypass.")
    summary = serializers.JSONField(read_only=True)

    class Meta(RequestListSerializer.Meta):
        fields = [*RequestListSerializer.Meta.fields, "summary", "progress", "emergency",
                  "decisions"]

    @extend_schema_field(PolicyProgressSerializer(many=True))
    def get_progress(self, req) -> list[dict]:
        return services.progress(req)

    def get_emergency(self, req) -> bool:
        return services.has_emergency(req)


class RequestList(generics.ListAPIView):
    """Approval requests, newest first. Approvers and admins see every request, others
    their own. `status` filters; `mine=1` keeps your own; `inbox=1` lists what you may
    decide now, oldest first."""

    serializer_class = RequestListSerializer
    permission_classes = [People]

    @extend_schema(parameters=[
        OpenApiParameter("status", OpenApiTypes.STR, enum=ApprovalRequest.Status.values),
        OpenApiParameter("mine", OpenApiTypes.BOOL),
        OpenApiParameter("inbox", OpenApiTypes.BOOL),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        user = self.request.user
        params = self.request.query_params
        if params.get("inbox") in ("1", "true"):
            ids = [r.pk for r in services.inbox(user)]
            return ApprovalRequest.objects.filter(pk__in=ids).order_by("opened_at", "id")
        requests = ApprovalRequest.objects.order_by("-opened_at", "-id")
        if not services.can_see_all(user) or params.get("mine") in ("1", "true"):
            requests = requests.filter(author=user)
        if status_ := params.get("status"):
            requests = requests.filter(status=status_)
        return requests


class RequestDetail(APIView):
    permission_classes = [People]

    @extend_schema(responses=RequestSerializer)
    def get(self, request, pk):
        req = services.access_request(request.user, pk)
        return Response(RequestSerializer(req).data)


class DecisionCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["approve", "reject", "request_changes", "comment"])
    comment = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="Required to reject or to ask for changes.")


class DecisionCreate(APIView):
    """Approve, reject, ask for changes or comment on the current round. 201 with the
    request afterwards; 403 when you may not decide it (not in a required group, or its
    author); 409 when it is no longer pending, you already decided, or a freeze window
    is open at its planned start."""

    permission_classes = [People]

    @extend_schema(request=DecisionCreateSerializer, responses={201: RequestSerializer})
    def post(self, request, pk):
        req = services.access_request(request.user, pk)
        body = DecisionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.decide(req, by=request.user, request=request, **body.validated_data)
        req.refresh_from_db()
        return Response(RequestSerializer(req).data, status=status.HTTP_201_CREATED)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RequestAction(APIView):
    """withdraw (the author or an admin), resubmit (ask again after a rejection, expiry
    or withdrawal), emergency (members of `emergency_approver`, with a reason)."""

    permission_classes = [People]
    action = None

    @extend_schema(request=ReasonSerializer, responses={200: RequestSerializer})
    def post(self, request, pk):
        req = services.access_request(request.user, pk)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data["reason"]
        if self.action == "withdraw":
            services.withdraw(req, by=request.user, request=request, reason=reason)
        elif self.action == "resubmit":
            services.resubmit(req, by=request.user, request=request)
        else:
            services.emergency_bypass(req, by=request.user, request=request, reason=reason)
        req.refresh_from_db()
        return Response(RequestSerializer(req).data)


# --- post-incident review --------------------------------------------------------------------


class BypassSerializer(DecisionSerializer):
    request = RequestListSerializer(read_only=True)

    class Meta(DecisionSerializer.Meta):
        fields = [*DecisionSerializer.Meta.fields, "request"]


class ReviewList(generics.ListAPIView):
    """Emergency bypasses awaiting their post-incident review, oldest first."""

    serializer_class = BypassSerializer
    permission_classes = [HasRole(Role.APPROVER)]

    def get_queryset(self):
        return services.review_list()


class ReviewCreate(APIView):
    permission_classes = [HasRole(Role.APPROVER)]

    @extend_schema(request=inline_serializer("Review", {"note": serializers.CharField(
        required=False, allow_blank=True)}), responses={200: BypassSerializer})
    def post(self, request, pk):
        decision = get_object_or_404(Decision, pk=pk, kind=Decision.Kind.EMERGENCY)
        decision = services.review_bypass(decision, by=request.user, request=request,
                                          note=str(request.data.get("note", "")))
        return Response(BypassSerializer(decision).data)


# --- policies --------------------------------------------------------------------------------


class RequirementSerializer(serializers.Serializer):
    group = serializers.CharField(max_length=150)
    count = serializers.IntegerField(min_value=1, max_value=20)


class PolicySerializer(serializers.ModelSerializer):
    environments = serializers.ListField(child=serializers.CharField(max_length=50),
                                         required=False, default=list)
    runbooks = serializers.ListField(child=serializers.CharField(max_length=100),
                                     required=False, default=list)
    requirements = RequirementSerializer(many=True)
    min_risk = serializers.CharField(required=False, allow_blank=True, default="", help_text=(
        "low, medium, high or critical: the subject's risk at least this; empty: any"))
    channels = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list,
        help_text="Names of notification channels told when a request needs approvers "
                  "and about each decision.")

    class Meta:
        model = ApprovalPolicy
        fields = ["id", "name", "description", "enabled", "environments", "selector",
                  "runbooks", "min_risk", "requirements", "allow_author", "validity_hours",
                  "rejection_ends", "channels", "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    def save_with(self, request, policy):
        data = dict(self.validated_data)
        data["requirements"] = [dict(r) for r in data.get("requirements",
                                                          policy.requirements)]
        self.instance = services.save_policy(policy, data, by=request.user, request=request)
        return self.instance


class PolicyList(generics.ListCreateAPIView):
    """Approval policies; admins create them."""

    serializer_class = PolicySerializer
    permission_classes = [ReadOrAdmin]
    queryset = ApprovalPolicy.objects.all()
    pagination_class = None

    def perform_create(self, serializer):
        serializer.save_with(self.request, ApprovalPolicy())


class PolicyDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = PolicySerializer
    permission_classes = [ReadOrAdmin]
    queryset = ApprovalPolicy.objects.all()
    lookup_field = "name"

    def perform_update(self, serializer):
        serializer.save_with(self.request, serializer.instance)

    def perform_destroy(self, instance):
        services.delete_policy(instance, by=self.request.user, request=self.request)


class PolicyExport(APIView):
    """All policies as the YAML document that import reads."""

    permission_classes = [Readers]

    @extend_schema(responses={(200, "application/yaml"): OpenApiTypes.STR})
    def get(self, request):
        return HttpResponse(services.export_policies(),
                            content_type="application/yaml; charset=utf-8")


class PolicyImport(APIView):
    """Create or update policies from a YAML document, all or nothing. 400 with
    `errors`: {field path: message} when it does not pass the schema."""

    permission_classes = [ReadOrAdmin]

    @extend_schema(
        request=inline_serializer("PolicyImport", {
            "document": serializers.CharField(help_text="YAML, as exported."),
            "prune": serializers.BooleanField(required=False, default=False, help_text=(
                "Delete the policies the document does not name."))}),
        responses={200: inline_serializer("PolicyImportResult", {
            "created": serializers.ListField(child=serializers.CharField()),
            "updated": serializers.ListField(child=serializers.CharField()),
            "deleted": serializers.ListField(child=serializers.CharField())})})
    def post(self, request):
        document = request.data.get("document")
        if not isinstance(document, str):
            raise APIValidationError({"document": ["The YAML text of the policies."]})
        prune = str(request.data.get("prune", "")).lower() in ("1", "true", "yes", "on")
        try:
            created, updated, deleted = services.import_policies(
                document, by=request.user, request=request, prune=prune)
        except policy_io.PolicyFileError as exc:
            return Response({"errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"created": created, "updated": updated, "deleted": deleted})


# --- windows and the calendar ------------------------------------------------------------------


class WindowSerializer(serializers.ModelSerializer):
    environments = serializers.ListField(child=serializers.CharField(max_length=50),
                                         required=False, default=list)
    when = serializers.CharField(source="describe", read_only=True)
    kind = serializers.CharField(required=False, default="weekly",
                                 help_text="weekly (weekdays and times) or dated (dates and times)")
    start_weekday = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                             max_value=6, help_text="0 is Monday (weekly)")
    end_weekday = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                           max_value=6, help_text="0 is Monday (weekly)")

    class Meta:
        fields = ["id", "name", "description", "enabled", "environments", "selector", "kind",
                  "timezone", "start_weekday", "end_weekday", "start_date", "end_date",
                  "start_time", "end_time", "when", "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class FreezeWindowSerializer(WindowSerializer):
    class Meta(WindowSerializer.Meta):
        model = FreezeWindow


class MaintenanceWindowSerializer(WindowSerializer):
    class Meta(WindowSerializer.Meta):
        model = MaintenanceWindow


class WindowMixin:
    permission_classes = [ReadOrAdmin]

    def get_queryset(self):
        return self.serializer_class.Meta.model.objects.all()

    def _save(self, serializer, window):
        data = {f: serializer.validated_data[f] for f in services.WINDOW_FIELDS
                if f in serializer.validated_data}
        serializer.instance = services.save_window(window, data, by=self.request.user,
                                                   request=self.request)

    def perform_create(self, serializer):
        self._save(serializer, self.serializer_class.Meta.model())

    def perform_update(self, serializer):
        self._save(serializer, serializer.instance)

    def perform_destroy(self, instance):
        services.delete_window(instance, by=self.request.user, request=self.request)


class FreezeWindowList(WindowMixin, generics.ListCreateAPIView):
    """Freeze windows: no change starts on their hosts while one is open."""

    serializer_class = FreezeWindowSerializer
    pagination_class = None


class FreezeWindowDetail(WindowMixin, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = FreezeWindowSerializer


class MaintenanceWindowList(WindowMixin, generics.ListCreateAPIView):
    """Maintenance windows: scheduled starts on their hosts must fall inside one."""

    serializer_class = MaintenanceWindowSerializer
    pagination_class = None


class MaintenanceWindowDetail(WindowMixin, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = MaintenanceWindowSerializer


class CalendarEventSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["freeze", "maintenance", "scheduled"])
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(allow_null=True)
    name = serializers.CharField()
    window = serializers.IntegerField(allow_null=True)
    request = serializers.IntegerField(allow_null=True)
    link = serializers.CharField(allow_blank=True)
    conflict = serializers.BooleanField()
    problem = serializers.CharField(allow_blank=True)


class ConflictSerializer(serializers.Serializer):
    requests = serializers.ListField(child=serializers.IntegerField())
    hosts = serializers.ListField(child=serializers.CharField())


class CalendarSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    events = CalendarEventSerializer(many=True)
    conflicts = ConflictSerializer(many=True)


class Calendar(APIView):
    """Freeze and maintenance window occurrences and scheduled subjects between `start`
    and `end` (ISO 8601; default: the next 28 days, at most 92), and the pairs of
    scheduled subjects that start close together on shared hosts."""

    permission_classes = [Readers]

    @extend_schema(parameters=[OpenApiParameter("start", OpenApiTypes.DATETIME),
                               OpenApiParameter("end", OpenApiTypes.DATETIME)],
                   responses=CalendarSerializer)
    def get(self, request):
        start = _when(request, "start") or timezone.now()
        end = _when(request, "end") or start + timedelta(days=28)
        if not start < end <= start + timedelta(days=92):
            raise APIValidationError({"end": ["After start, and at most 92 days later."]})
        data = services.calendar(start, end)
        events = []
        for e in data["events"]:
            window, req = e.get("window"), e.get("request")
            events.append({
                "kind": e["kind"], "start": e["start"], "end": e["end"],
                "name": window.name if window else req.title,
                "window": window.pk if window else None, "request": req.pk if req else None,
                "link": req.link if req else "", "conflict": e.get("conflict", False),
                "problem": e.get("problem", "")})
        conflicts = [{"requests": [c["a"].pk, c["b"].pk], "hosts": c["hosts"]}
                     for c in data["conflicts"]]
        return Response(CalendarSerializer({"start": start, "end": end, "events": events,
                                            "conflicts": conflicts}).data)


def _when(request, name):
    text = request.query_params.get(name)
    if not text:
        return None
    value = parse_datetime(text)
    if value is None:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise APIValidationError({name: ["An ISO 8601 date and time."]}) from None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value
