"""The changes REST API. Serializers shape and parse; ``changes.services`` writes."""

import json
import time

from channels.db import database_sync_to_async
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, renderers, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from changes import display, live, output, runbooks, services
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


class ChangeListSerializer(serializers.ListSerializer):
    """A page of changes: their display statuses read in one go."""

    def to_representation(self, data):
        items = list(data.all() if hasattr(data, "all") else data)
        self.child._displays = display.display_statuses(items)
        return super().to_representation(items)


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
    display_status = serializers.SerializerMethodField(help_text=(
        "The status as people read it: the change's own, except while it awaits approval: "
        "awaiting_approval, approved, rejected, expired, withdrawn or missed (its approval "
        "request)."))
    display_label = serializers.SerializerMethodField(help_text=(
        "display_status in words, e.g. \"awaiting approval (1 of 2)\" or \"approved: ready "
        "to start\"."))

    class Meta:
        model = Change
        fields = ["id", "title", "description", "runbook", "runbook_version", "params",
                  "selector", "strategy", "scheduled_at", "status", "display_status",
                  "display_label", "queue", "targets", "author", "runs", "created_at",
                  "updated_at"]
        read_only_fields = ["status", "queue", "created_at", "updated_at"]
        list_serializer_class = ChangeListSerializer

    def get_runs(self, change) -> list[int]:
        return [run.number for run in change.runs.all()]

    def _display(self, change):
        """Worked out once per change (a list sets them all in one query beforehand)."""
        if not hasattr(self, "_displays"):
            self._displays = {}
        if change.pk not in self._displays:
            self._displays[change.pk] = display.display_status(change)
        return self._displays[change.pk]

    def get_display_status(self, change) -> str:
        return self._display(change).code

    def get_display_label(self, change) -> str:
        return self._display(change).label

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


def _viewable_run(request, pk, number):
    run = get_object_or_404(Run.objects.select_related("change"), change_id=pk, number=number)
    if not services.can_view(request.user, run.change):
        raise PermissionDenied
    return run


_read_after = database_sync_to_async(output.read_after)


@database_sync_to_async
def _is_terminal(run_id):
    return Run.objects.filter(pk=run_id, status__in=Run.TERMINAL).exists()


def _log_stream(run_id, host):
    return StreamingHttpResponse(output.alog_text(run_id, host),
                                 content_type="text/plain; charset=utf-8")


class HostLog(APIView):
    """One host's output as plain text (stderr lines prefixed ``[stderr] ``), streamed."""

    permission_classes = [Viewers]

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request, pk, number, host):
        run = _viewable_run(request, pk, number)
        get_object_or_404(HostResult, run=run, host_name=host)
        return _log_stream(run.pk, host)


class RunLog(APIView):
    """The whole run's output as plain text, every line prefixed with ``<host> | ``."""

    permission_classes = [Viewers]

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request, pk, number):
        run = _viewable_run(request, pk, number)
        return _log_stream(run.pk, None)


class OutputEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text=(
        "Number of the first line in `text`; its other lines are numbered on from it. "
        "Lines are numbered per run, across all hosts, from 1 and without gaps."))
    host = serializers.CharField()
    step = serializers.IntegerField(allow_null=True, help_text="Step index (from 0); null "
                                    "for host events.")
    stream = serializers.ChoiceField(choices=output.STREAMS, help_text=(
        "stdout, stderr, diff (an upload's changes); the worker's own: cmd (a step "
        "starts), result (it ended), host (the host's new state is the text's first "
        "word)."))
    text = serializers.CharField(help_text=(
        "One or more lines, each ending in a newline except perhaps the last (a line the "
        "command had not finished). Secrets are masked as ********."))
    at = serializers.FloatField(help_text="When the worker read it (Unix time).")


class RunEventsSerializer(serializers.Serializer):
    events = OutputEventSerializer(many=True)
    last_seq = serializers.IntegerField(help_text=(
        "The number of the last line in `events` (`after` when there are none): pass it "
        "as `after` to get what follows, with no line missed or repeated."))
    finished = serializers.BooleanField(help_text=(
        "The run is over and nothing after `last_seq` is stored: no more events will come."))


class NDJSONRenderer(renderers.BaseRenderer):
    media_type = "application/x-ndjson"
    format = "ndjson"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() + b"\n"


def _event_json(event):
    seq, host, step, stream, text, at = event
    return {"seq": seq, "host": host, "step": step, "stream": stream, "text": text, "at": at}


class RunEvents(APIView):
    """Tail a run's output after a line number, with no line missed or repeated.

    Long-poll: `GET ...?after=<seq>&wait=<seconds>` answers at once when lines after
    `seq` are stored, else as soon as some are written (or the run ends), else after
    `wait` seconds with no events. Call again with `after=last_seq` until `finished`.

    Streaming: with `?stream=ndjson` (or `Accept: application/x-ndjson`) the answer is
    newline-delimited JSON, one event object per line, as they are written, ending with
    `{"type": "end", "last_seq": n}` when the run is over; lines `{"type": "tick"}` come
    every 15 s of quiet. Reconnect with `after` = the last line number received.
    """

    permission_classes = [Viewers]
    renderer_classes = [renderers.JSONRenderer, NDJSONRenderer]
    MAX_WAIT = 60
    TICK = 15

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Return lines numbered above this "
                             "(default 0: from the start)."),
            OpenApiParameter("wait", float, description=f"Long-poll: seconds to wait for "
                             f"new lines when there are none (0 to {MAX_WAIT}; default 0)."),
            OpenApiParameter("limit", int, description="About this many lines at most "
                             "(1 to 10000; default 5000)."),
            OpenApiParameter("host", str, description="Only this host's events."),
            OpenApiParameter("stream", str, enum=["ndjson"], description="Stream NDJSON "
                             "until the run ends instead of answering once."),
        ],
        responses={(200, "application/json"): RunEventsSerializer,
                   (200, "application/x-ndjson"): OutputEventSerializer},
    )
    def get(self, request, pk, number):
        run = _viewable_run(request, pk, number)
        params = request.query_params
        try:
            after = max(0, int(params.get("after", 0)))
            wait = min(max(0.0, float(params.get("wait", 0))), self.MAX_WAIT)
            limit = min(max(1, int(params.get("limit", 5000))), 10_000)
        except ValueError:
            raise ValidationError({"detail": "after and limit are whole numbers, wait a "
                                             "number of seconds"}) from None
        host = params.get("host") or None
        if params.get("stream") == "ndjson" or request.accepted_renderer.format == "ndjson":
            return StreamingHttpResponse(self._stream(run.pk, after, host),
                                         content_type="application/x-ndjson")
        return StreamingHttpResponse(self._poll(run.pk, after, wait, limit, host),
                                     content_type="application/json")

    async def _poll(self, run_id, after, wait, limit, host):
        deadline = time.monotonic() + wait
        # Subscribe before reading: a batch written after the read wakes us.
        async with live.subscribe(run_id) as receive:
            while True:
                finished = await _is_terminal(run_id)  # before the read: then it is all
                page = await _read_after(run_id, after, limit=limit, host=host)
                left = deadline - time.monotonic()
                if page or finished or left <= 0:
                    break
                # Woken by the next batch; and every few seconds anyway, should a wake-up
                # be lost.
                await receive(min(left, 5.0))
        body = {"events": [_event_json(e) for e in page],
                "last_seq": output.last_seq_of(page[-1]) if page else after,
                "finished": finished and not page}
        if finished and page:
            # Only the last page of a finished run says so.
            more = await _read_after(run_id, body["last_seq"], limit=1, host=host)
            body["finished"] = not more
        yield json.dumps(body).encode()

    async def _stream(self, run_id, after, host):
        async with live.subscribe(run_id) as receive:
            while True:
                finished = await _is_terminal(run_id)
                while page := await _read_after(run_id, after, limit=5000, host=host):
                    yield "".join(json.dumps(_event_json(e)) + "\n" for e in page).encode()
                    after = output.last_seq_of(page[-1])
                if finished:
                    yield (json.dumps({"type": "end", "last_seq": after}) + "\n").encode()
                    return
                if await receive(self.TICK) is None:
                    yield b'{"type": "tick"}\n'
