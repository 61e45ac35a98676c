"""The changes REST API. Serializers shape and parse; ``changes.services`` writes."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from changes import runbooks, services
from changes.models import Change, HostResult, Run, Runbook
from opsplane.roles import HasRole, Role

Viewers = HasRole(Role.OPERATOR, Role.APPROVER, Role.ONCALL)


class RunbookSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="latest.number", read_only=True)
    parameters = serializers.JSONField(source="latest.parameters", read_only=True)
    steps = serializers.JSONField(source="latest.steps", read_only=True)
    definition = serializers.CharField(write_only=True, help_text=(
        "YAML (or JSON) with `parameters` and `steps`; see changes/runbooks.py."))

    class Meta:
        model = Runbook
        fields = ["id", "name", "description", "version", "parameters", "steps",
                  "definition", "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class RunbookList(generics.ListCreateAPIView):
    serializer_class = RunbookSerializer
    permission_classes = [Viewers]
    queryset = Runbook.objects.filter(archived=False).prefetch_related("versions")

    def perform_create(self, serializer):
        serializer.instance = services.save_runbook(
            Runbook(), by=self.request.user, request=self.request,
            description=serializer.validated_data.get("description", ""),
            name=serializer.validated_data["name"],
            definition=serializer.validated_data["definition"])


class RunbookDetail(generics.RetrieveUpdateAPIView):
    serializer_class = RunbookSerializer
    permission_classes = [Viewers]
    lookup_field = "name"
    queryset = Runbook.objects.all()

    def perform_update(self, serializer):
        runbook = serializer.instance
        data = serializer.validated_data
        latest = runbook.latest
        definition = data.get("definition") or runbooks.dump_definition(
            latest.parameters, latest.steps)
        serializer.instance = services.save_runbook(
            runbook, by=self.request.user, request=self.request,
            name=data.get("name", runbook.name),
            description=data.get("description", runbook.description), definition=definition)


class StrategySerializer(serializers.Serializer):
    parallelism = serializers.IntegerField(required=False, default=20)
    batches = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    max_fail_percentage = serializers.FloatField(required=False, allow_null=True, default=None)
    pause_between_batches = serializers.FloatField(required=False, default=0)
    check_mode = serializers.BooleanField(required=False, default=False)


class ChangeSerializer(serializers.ModelSerializer):
    runbook = serializers.SlugRelatedField(slug_field="name", source="runbook_version.runbook",
                                           queryset=Runbook.objects.all())
    runbook_version = serializers.IntegerField(source="runbook_version.number", read_only=True)
    params = serializers.DictField(required=False, default=dict, help_text=(
        "Parameter values by name. Secret parameters are write-only."))
    strategy = StrategySerializer(required=False)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)
    targets = serializers.ListField(source="target_names", read_only=True)
    runs = serializers.SerializerMethodField()

    class Meta:
        model = Change
        fields = ["id", "title", "description", "runbook", "runbook_version", "params",
                  "selector", "strategy", "scheduled_at", "status", "queue", "targets", "author",
                  "runs", "created_at", "updated_at"]
        read_only_fields = ["status", "queue", "created_at", "updated_at"]

    def get_runs(self, change) -> list[int]:
        return [run.number for run in change.runs.all()]

    def save_with(self, request, change=None):
        data = self.validated_data
        runbook = data["runbook_version"]["runbook"] if "runbook_version" in data else (
            change.runbook_version.runbook)
        change = services.compose_change(
            by=request.user, request=request, change=change,
            title=data.get("title", change.title if change else ""),
            description=data.get("description", change.description if change else ""),
            runbook=runbook,
            params=data.get("params", dict(change.params) if change else {}),
            selector=data.get("selector", change.selector if change else ""),
            strategy=data.get("strategy", change.strategy if change else None),
            scheduled_at=data.get("scheduled_at", change.scheduled_at if change else None))
        if change.status == Change.Status.DRAFT:
            services.submit_change(change, by=request.user, request=request)
        self.instance = change
        return change


class ChangeList(generics.ListCreateAPIView):
    """Changes, newest first; `status` filters."""

    serializer_class = ChangeSerializer
    permission_classes = [Viewers]

    def get_queryset(self):
        changes = Change.objects.select_related("author", "runbook_version__runbook") \
            .prefetch_related("runs")
        if status_ := self.request.query_params.get("status"):
            changes = changes.filter(status=status_)
        return changes

    def perform_create(self, serializer):
        serializer.save_with(self.request)


class ChangeDetail(generics.RetrieveUpdateAPIView):
    serializer_class = ChangeSerializer
    permission_classes = [Viewers]
    queryset = Change.objects.select_related("author", "runbook_version__runbook")

    def perform_update(self, serializer):
        serializer.save_with(self.request, change=serializer.instance)


class HostResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostResult
        fields = ["host_name", "state", "exit_status", "error_reason", "error", "started_at",
                  "finished_at"]


class RunSerializer(serializers.ModelSerializer):
    results = HostResultSerializer(many=True, read_only=True)
    started_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Run
        fields = ["id", "number", "status", "check_mode", "started_by", "queued_at",
                  "started_at", "finished_at", "cancel_requested_at", "aborted_reason",
                  "results"]


class ChangeAction(APIView):
    """start / cancel / retry: 202 with the run it concerns (or 200 with the change)."""

    permission_classes = [Viewers]
    action = None

    @extend_schema(request=None, responses={202: RunSerializer, 200: ChangeSerializer})
    def post(self, request, pk):
        change = get_object_or_404(Change, pk=pk)
        if self.action == "start":
            run = services.start_run(change, by=request.user, request=request)
        elif self.action == "retry":
            last = change.runs.order_by("-number").first()
            if last is None:
                return Response({"detail": "This change has not run yet."},
                                status=status.HTTP_409_CONFLICT)
            run = services.retry_run(last, by=request.user, request=request)
        else:
            change = services.cancel_change(change, by=request.user, request=request)
            return Response(ChangeSerializer(change).data)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunDetail(APIView):
    permission_classes = [Viewers]

    @extend_schema(responses=RunSerializer)
    def get(self, request, pk, number):
        run = get_object_or_404(Run.objects.prefetch_related("results"), change_id=pk,
                                number=number)
        return Response(RunSerializer(run).data)


class RunCancel(APIView):
    permission_classes = [Viewers]

    @extend_schema(request=None, responses={202: RunSerializer})
    def post(self, request, pk, number):
        run = get_object_or_404(Run, change_id=pk, number=number)
        run = services.request_cancel(run, by=request.user, request=request)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class HostLog(APIView):
    permission_classes = [Viewers]

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request, pk, number, host):
        result = get_object_or_404(HostResult, run__change_id=pk, run__number=number,
                                   host_name=host)
        return HttpResponse(result.log, content_type="text/plain; charset=utf-8")
