"""The alerts REST API, and the intake endpoints that monitoring systems post to.

The intake authenticates with the integration's own token (in the URL or a bearer
header) and, when the integration has a secret, an HMAC signature; users' sessions and
API tokens play no part there. Everything else is the usual API: ``HasRole`` reads,
services check writes.
"""


import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import filters, intake, metrics, payloads, services
from alerts.models import Alert, AlertEvent, Incident, Silence
from alerts.routing_state import current_source
from opsplane.roles import HasRole, Role

logger = logging.getLogger(__name__)
Viewers = HasRole(Role.ONCALL, Role.OPERATOR)
DEFAULT_MAX_BODY = 10 * 1024 * 1024


# --- intake ---------------------------------------------------------------------------------


class GenericAlertSerializer(serializers.Serializer):
    labels = serializers.DictField(child=serializers.CharField(), help_text=(
        "Identity and routing: the fingerprint is computed from these as Alertmanager "
        "does (empty values are dropped). `severity` (critical, warning, info) chooses "
        "the default channels; `instance`, `host` or `hostname` links the CMDB host."))
    annotations = serializers.DictField(child=serializers.CharField(), required=False,
                                        help_text="Text for people: `summary`, `description`…")
    status = serializers.CharField(required=False, help_text=(
        "`firing` or `resolved`. Default: firing, or resolved when `endsAt` has passed."))
    startsAt = serializers.DateTimeField(required=False, help_text="RFC 3339; default now.")
    endsAt = serializers.DateTimeField(required=False, allow_null=True, help_text=(
        "RFC 3339. Absent, null or `0001-01-01T00:00:00Z`: no end (the integration's "
        "resolve timeout applies, if it has one). A time that passes resolves the alert."))
    generatorURL = serializers.CharField(required=False, help_text="Link to the source.")
    fingerprint = serializers.CharField(required=False, help_text=(
        "Your own identity for the alert (1-64 of A-Z a-z 0-9 . _ : -); default: "
        "Alertmanager's fingerprint of the labels."))


class GenericPayloadSerializer(serializers.Serializer):
    alerts = GenericAlertSerializer(many=True, help_text=(
        "Other top-level fields are kept with the request, unread. A bare JSON array of "
        "alerts is accepted too (Alertmanager's own /api/v2/alerts shape)."))


class IntakeResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    receipt = serializers.IntegerField()
    alerts = serializers.IntegerField(help_text="Alerts in the request.")
    new = serializers.IntegerField(help_text="Alerts seen for the first time.")
    firing = serializers.IntegerField()
    resolved = serializers.IntegerField()
    refired = serializers.IntegerField()
    incidents_opened = serializers.IntegerField()


class IntakeErrorItemSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Where, e.g. `alerts[3].labels.severity`.")
    message = serializers.CharField()


class IntakeErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = IntakeErrorItemSerializer(many=True, required=False)


# Under ASGI, Django runs each request's sync code in a thread of its own, which takes a
# connection from the process' pool (DATABASE_POOL_MAX_SIZE) for the request. The intake's
# database work runs instead on these long-lived threads, which keep theirs between
# requests (checked every HEALTH_CHECK_EVERY seconds): no pool round trip per alert
# request, and at most this many intake connections per process.
_DB_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="alerts-intake")
_DB_THREAD_STATE = threading.local()
# Django checks a kept connection (SELECT 1) at the start of every request; a busy
# intake thread does it at most this often, and at once after an error.
HEALTH_CHECK_EVERY = 10.0


def _on_db_thread(request, function, *args, **kwargs):
    if not hasattr(request, "scope"):  # WSGI (and the test client): in this thread
        return function(*args, **kwargs)

    def job():
        last = getattr(_DB_THREAD_STATE, "checked", 0.0)
        if time.monotonic() - last >= HEALTH_CHECK_EVERY:
            close_old_connections()  # what request_started does for a request thread
            _DB_THREAD_STATE.checked = time.monotonic()
        try:
            return function(*args, **kwargs)
        except Exception:
            close_old_connections()  # drop a broken connection now
            _DB_THREAD_STATE.checked = 0.0
            raise

    return _DB_THREADS.submit(job).result()


def _reject(code, reason, detail, errors=None, headers=None):
    metrics.rejected.labels(reason=reason).inc()
    body = {"detail": detail}
    if errors:
        body["errors"] = [{"path": path, "message": message} for path, message in errors]
    response = JsonResponse(body, status=code)
    for name, value in (headers or {}).items():
        response[name] = value
    # Django would log the path, and the path may hold the integration's token.
    response._has_been_logged = True
    logger.warning("alert intake refused (%s %s): %s", code, reason, detail)
    return response


def _bearer(request):
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return ""


INTAKE_DESCRIPTION = """\
Post alerts for one integration. Authenticate with the integration's token, either in
the URL (`/api/v1/alerts/intake/<token>/`) or as `Authorization: Bearer <token>` on
`/api/v1/alerts/intake/`. An integration with a signing secret also wants an HMAC:
Grafana's `X-Grafana-Alerting-Signature` (hex HMAC-SHA256 of `[timestamp:]body`, the
timestamp from the header configured on the integration) or, for the other kinds,
`X-Opsplane-Signature` with an optional `X-Opsplane-Timestamp`.

The body is the integration kind's format: Alertmanager's webhook (version 4), Grafana's
webhook contact point, or the generic format documented here. Everything is committed
(alerts, their events, routing into incidents, due notifications) before the answer;
a 4xx stores nothing and should not be retried. Bodies over the size limit get 413.
"""


def _intake_schema(operation_id, *, in_path):
    parameters = [OpenApiParameter("token", OpenApiTypes.STR, OpenApiParameter.PATH,
                                   description="The integration's token.")] if in_path else []
    return extend_schema(
        operation_id=operation_id, summary="Post alerts (Alertmanager, Grafana, generic)",
        description=INTAKE_DESCRIPTION, request=GenericPayloadSerializer, auth=[],
        parameters=parameters,
        responses={
            200: IntakeResultSerializer,
            400: OpenApiResponse(IntakeErrorSerializer, "What is wrong, by path."),
            401: OpenApiResponse(IntakeErrorSerializer, "No token, or an unknown one."),
            403: OpenApiResponse(IntakeErrorSerializer,
                                 "Integration disabled, or a missing or bad signature."),
            413: OpenApiResponse(IntakeErrorSerializer, "Body too large.")},
        tags=["alerts intake"],
    )


class Intake(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @_intake_schema("alerts_intake", in_path=False)
    def post(self, request, token=""):
        raw = request._request  # the Django request: the body is read once, here
        limit = getattr(settings, "OPSPLANE_ALERTS_MAX_BODY_BYTES", DEFAULT_MAX_BODY)
        try:
            length = int(raw.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return _reject(413, "too_large", f"The body is larger than {limit} bytes.")
        token = token or _bearer(raw)
        if not token:
            return _reject(401, "unauthenticated",
                           "No token: put the integration's token in the URL or in "
                           "`Authorization: Bearer <token>`.",
                           headers={"WWW-Authenticate": 'Bearer realm="alerts"'})
        body = raw.read(limit + 1)
        if len(body) > limit:
            return _reject(413, "too_large", f"The body is larger than {limit} bytes.")
        return _on_db_thread(raw, receive, token, body, raw.headers,
                             raw.META.get("REMOTE_ADDR", ""))


def receive(token, body, headers, source):
    """Authenticate, check the signature, parse and ingest one intake request; returns
    the response. Nothing is stored unless everything is right."""
    integration = services.integration_for_token(token)
    if integration is None:
        return _reject(401, "unauthenticated", "Unknown token.",
                       headers={"WWW-Authenticate": 'Bearer realm="alerts"'})
    if not integration.enabled:
        return _reject(403, "forbidden", "This integration is disabled.")
    now = timezone.now()
    problem = services.check_signature(integration, body, headers, now)
    if problem:
        return _reject(403, "bad_signature", f"Signature check failed: {problem}.")
    try:
        envelope, alerts = payloads.parse_body(
            integration.kind, body, now,
            resolve_timeout_minutes=integration.resolve_timeout_minutes)
    except payloads.PayloadError as exc:
        return _reject(400, "malformed", "The body is not what this integration "
                       f"({integration.get_kind_display()}) sends.", exc.errors)
    result = intake.ingest(integration, alerts, envelope=envelope, now=now, source=source)
    return JsonResponse({"status": "ok", **result.as_dict()})


class IntakeWithToken(Intake):
    """The same, with the token as the last part of the URL."""

    @_intake_schema("alerts_intake_token", in_path=True)
    def post(self, request, token=""):
        return super().post(request, token)


# --- alerts ---------------------------------------------------------------------------------


class AlertSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="`firing` or `resolved`.")
    integration = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    silenced_by = serializers.PrimaryKeyRelatedField(read_only=True)
    incidents = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "fingerprint", "alertname", "severity", "status", "labels",
                  "annotations", "starts_at", "ends_at", "generator_url", "integration",
                  "host", "host_hint", "first_received_at", "last_received_at",
                  "resolved_at", "resolution", "fire_count", "silenced_by", "incidents"]

    def get_incidents(self, alert) -> list[int]:
        return [m.incident_id for m in alert.memberships.all()]


class AlertEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertEvent
        fields = ["at", "kind", "detail"]


class AlertDetailSerializer(AlertSerializer):
    events = AlertEventSerializer(many=True, read_only=True)
    raw = serializers.JSONField(read_only=True)

    class Meta(AlertSerializer.Meta):
        fields = [*AlertSerializer.Meta.fields, "raw", "events"]


ALERT_FILTERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=text) for name, text in (
        ("status", "firing or resolved"), ("severity", "critical, warning or info"),
        ("integration", "integration name"), ("silenced", "yes or no"),
        ("host", "CMDB host name or the host label"), ("q", "alert name or fingerprint"))]


@extend_schema(parameters=ALERT_FILTERS)
class AlertList(generics.ListAPIView):
    """Alerts, most recently received first."""

    serializer_class = AlertSerializer
    permission_classes = [Viewers]

    def get_queryset(self):
        return filters.alerts(
            Alert.objects.select_related("integration", "host").prefetch_related("memberships"),
            self.request.query_params)


class AlertDetail(generics.RetrieveAPIView):
    serializer_class = AlertDetailSerializer
    permission_classes = [Viewers]
    queryset = Alert.objects.select_related("integration", "host").prefetch_related(
        "memberships", "events")


# --- incidents ------------------------------------------------------------------------------


class IncidentSerializer(serializers.ModelSerializer):
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    alerts = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = ["id", "title", "status", "severity", "route_path", "route_key",
                  "group_labels", "opened_at", "resolved_at", "acknowledged_at",
                  "acknowledged_by", "next_flush_at", "last_notified_at", "round", "alerts"]

    def get_alerts(self, incident) -> list[int]:
        return [m.alert_id for m in incident.members.all()]


@extend_schema(parameters=[
    OpenApiParameter("status", OpenApiTypes.STR,
                     description="triggered, acknowledged, resolved, or open"),
    OpenApiParameter("severity", OpenApiTypes.STR), OpenApiParameter("q", OpenApiTypes.STR)])
class IncidentList(generics.ListAPIView):
    """Incidents (aggregation groups), newest first."""

    serializer_class = IncidentSerializer
    permission_classes = [Viewers]

    def get_queryset(self):
        return filters.incidents(
            Incident.objects.select_related("acknowledged_by").prefetch_related("members"),
            self.request.query_params)


class IncidentDetail(generics.RetrieveAPIView):
    serializer_class = IncidentSerializer
    permission_classes = [Viewers]
    queryset = Incident.objects.select_related("acknowledged_by").prefetch_related("members")


class IncidentAction(APIView):
    """acknowledge / unacknowledge (on-call and admins)."""

    permission_classes = [Viewers]
    action = None

    @extend_schema(request=None, responses=IncidentSerializer)
    def post(self, request, pk):
        incident = get_object_or_404(Incident, pk=pk)
        act = services.acknowledge if self.action == "acknowledge" else services.unacknowledge
        incident = act(incident, by=request.user, request=request)
        return Response(IncidentSerializer(incident).data)


# --- silences -------------------------------------------------------------------------------


class SilenceSerializer(serializers.ModelSerializer):
    matchers = serializers.ListField(
        child=serializers.CharField(), help_text=(
            "Matchers as Alertmanager writes them: `alertname=\"HighCPU\"`, "
            "`instance=~\"web-.*\"`, `env!=\"dev\"`."))
    state = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Silence
        fields = ["id", "matchers", "starts_at", "ends_at", "comment", "author",
                  "created_by", "created_at", "state"]
        read_only_fields = ["author", "created_at"]
        extra_kwargs = {"starts_at": {"required": False}}

    def get_state(self, silence) -> str:
        return silence.state()

    def to_representation(self, silence):
        data = super().to_representation(silence)
        from alerts import matchers as m

        data["matchers"] = [str(x) for x in m.from_lists(silence.matchers)]
        return data


class SilenceList(generics.ListCreateAPIView):
    """Silences, latest ending first; POST creates one (on-call and admins)."""

    serializer_class = SilenceSerializer
    permission_classes = [Viewers]
    queryset = Silence.objects.select_related("created_by")

    def perform_create(self, serializer):
        data = serializer.validated_data
        matchers = services.parse_silence_matchers("\n".join(data["matchers"]))
        serializer.instance = services.create_silence(
            matchers, starts_at=data.get("starts_at"), ends_at=data["ends_at"],
            comment=data.get("comment", ""), by=self.request.user, request=self.request)


class SilenceDetail(generics.RetrieveDestroyAPIView):
    """DELETE expires the silence now (it stays on record)."""

    serializer_class = SilenceSerializer
    permission_classes = [Viewers]
    queryset = Silence.objects.select_related("created_by")

    def destroy(self, request, *args, **kwargs):
        silence = services.expire_silence(self.get_object(), by=request.user, request=request)
        return Response(SilenceSerializer(silence).data)


# --- the routing tree ------------------------------------------------------------------------


class RoutingSerializer(serializers.Serializer):
    source = serializers.CharField(help_text=(
        "The tree as YAML: Alertmanager's route, receivers, inhibit_rules and "
        "time_intervals sections, plus severity_channels."), trim_whitespace=False)
    comment = serializers.CharField(required=False, allow_blank=True, write_only=True)
    version = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_by = serializers.CharField(read_only=True, allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True)


def _routing_data(source, config, warnings=()):
    return {"source": source, "version": config.version if config else 0,
            "created_at": config.created_at if config else None,
            "created_by": config.created_by.get_username() if config and config.created_by
            else None, "warnings": list(warnings)}


class Routing(APIView):
    """The routing tree in force; PUT saves a new version (on-call and admins)."""

    permission_classes = [Viewers]

    @extend_schema(responses=RoutingSerializer)
    def get(self, request):
        source, config = current_source()
        return Response(RoutingSerializer(_routing_data(source, config)).data)

    @extend_schema(request=RoutingSerializer, responses=RoutingSerializer)
    def put(self, request):
        serializer = RoutingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        config, warnings = services.save_routing(
            serializer.validated_data["source"], by=request.user, request=request,
            comment=serializer.validated_data.get("comment", ""))
        return Response(RoutingSerializer(_routing_data(config.source, config, warnings)).data)


class RoutingTestSerializer(serializers.Serializer):
    labels = serializers.DictField(child=serializers.CharField())


class RoutingTest(APIView):
    """Which routes these labels match and who would be notified (nothing is stored)."""

    permission_classes = [Viewers]

    @extend_schema(request=RoutingTestSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        serializer = RoutingTestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(services.explain(serializer.validated_data["labels"]))


class RoutingImportSerializer(serializers.Serializer):
    alertmanager_yml = serializers.CharField(trim_whitespace=False)


class RoutingImportResultSerializer(serializers.Serializer):
    source = serializers.CharField()
    notes = serializers.ListField(child=serializers.CharField())
    unknown_channels = serializers.ListField(child=serializers.CharField())


class RoutingImport(APIView):
    """Convert an alertmanager.yml into our tree (not saved: PUT it to the tree after)."""

    permission_classes = [Viewers]

    @extend_schema(request=RoutingImportSerializer, responses=RoutingImportResultSerializer)
    def post(self, request):
        serializer = RoutingImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        source, notes, unknown = services.import_alertmanager(
            serializer.validated_data["alertmanager_yml"])
        return Response({"source": source, "notes": notes, "unknown_channels": unknown},
                        status=status.HTTP_200_OK)


