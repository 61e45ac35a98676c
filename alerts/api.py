"""The alerts REST API, and the intake endpoints that monitoring systems post to.

The intake authenticates with the integration's own token (in the URL or a bearer
header) and, when the integration has a secret, an HMAC signature; users' sessions and
API tokens play no part there. Under ASGI, ``IntakeApp`` serves its POSTs beside
Django's request cycle; the DRF views serve them under WSGI and the test client, and
describe them in the OpenAPI schema; both call ``receive``. Everything else is the usual
API: ``HasRole`` reads, services check writes.
"""

import asyncio
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve, reverse
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


# The intake's database work runs on these long-lived threads, which keep their
# connections between requests (checked every HEALTH_CHECK_EVERY seconds): no pool round
# trip per alert request, and at most this many intake connections per process.
_DB_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="alerts-intake")
_DB_THREAD_STATE = threading.local()
# Django checks a kept connection (SELECT 1) at the start of every request; a busy
# intake thread does it at most this often, and at once after an error.
HEALTH_CHECK_EVERY = 10.0


def _db_job(function, *args):
    last = getattr(_DB_THREAD_STATE, "checked", 0.0)
    if time.monotonic() - last >= HEALTH_CHECK_EVERY:
        close_old_connections()  # what request_started does for a request thread
        _DB_THREAD_STATE.checked = time.monotonic()
    try:
        return function(*args)
    except Exception:
        close_old_connections()  # drop a broken connection now
        _DB_THREAD_STATE.checked = 0.0
        raise


def close_db_connections():
    """Close the database connections the intake threads hold (they keep theirs between
    requests). Each of the threads runs one closing job: a barrier keeps every thread
    busy until all have one, so none takes two."""
    from django.db import connections

    workers = _DB_THREADS._max_workers
    barrier = threading.Barrier(workers)

    def close():
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [_DB_THREADS.submit(close) for _ in range(workers)]:
        future.result(timeout=30)


def _on_db_thread(request, function, *args):
    if not hasattr(request, "scope"):  # WSGI (and the test client): in this thread
        return function(*args)
    return _DB_THREADS.submit(_db_job, function, *args).result()


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


def _bearer(headers):
    header = headers.get("Authorization", "")
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
        limit = _max_body()
        token = token or _bearer(raw.headers)
        refused = _refuse_before_body(raw.META.get("CONTENT_LENGTH"), token, limit)
        if refused:
            return refused
        body = raw.read(limit + 1)
        if len(body) > limit:
            return _too_large(limit)
        return _on_db_thread(raw, receive, token, body, raw.headers,
                             raw.META.get("REMOTE_ADDR", ""))


def _max_body():
    return getattr(settings, "OPSPLANE_ALERTS_MAX_BODY_BYTES", DEFAULT_MAX_BODY)


def _too_large(limit):
    return _reject(413, "too_large", f"The body is larger than {limit} bytes.")


def _refuse_before_body(content_length, token, limit):
    """413 on the Content-Length alone, 401 without a token: before the body is read."""
    try:
        length = int(content_length or 0)
    except ValueError:
        length = 0
    if length > limit:
        return _too_large(limit)
    if not token:
        return _reject(401, "unauthenticated",
                       "No token: put the integration's token in the URL or in "
                       "`Authorization: Bearer <token>`.",
                       headers={"WWW-Authenticate": 'Bearer realm="alerts"'})
    return None


def receive(token, body, headers, source):
    """Authenticate, check the signature, parse and ingest one intake request; returns
    the response. Nothing is stored unless everything is right."""
    integration, versions = intake.authenticate(token)
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
    result = intake.ingest(integration, alerts, envelope=envelope, now=now, source=source,
                           versions=versions)
    return JsonResponse({"status": "ok", **result.as_dict()})


class IntakeWithToken(Intake):
    """The same, with the token as the last part of the URL."""

    @_intake_schema("alerts_intake_token", in_path=True)
    def post(self, request, token=""):
        return super().post(request, token)


class IntakeApp:
    """ASGI: the intake's POSTs served beside Django's request cycle, everything else
    passed on to ``django_app``.

    A monitoring system posting alerts needs none of what Django's middleware does for
    people (sessions, CSRF, locale, messages, login, axes), and under ASGI each of those
    costs a hop between the event loop and a thread: about half the CPU time of a
    single-alert request. Here the body is read on the event loop and the request's one
    piece of sync work (``receive``) runs on an intake database thread, so a request makes
    one thread hop. What the middleware would have refused is left to Django: a Host not
    in ALLOWED_HOSTS, plain HTTP when SECURE_SSL_REDIRECT wants HTTPS. urls.py still says
    which paths are the intake; the DRF views serve them under WSGI and the test client.
    """

    VIEWS = (Intake, IntakeWithToken)

    def __init__(self, django_app):
        self.django_app = django_app
        self.prefix = None
        self.bare = None
        self.security = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            if self.prefix is None:
                self.prefix = reverse("api-alerts-intake")
            if self.prefix in scope["path"]:
                request = ASGIRequest(scope, io.BytesIO())
                match = self._match(request)
                if match is not None:
                    return await self._serve(request, match.kwargs.get("token", ""),
                                             receive, send)
        return await self.django_app(scope, receive, send)

    def _match(self, request):
        match = self.bare if request.path_info == self.prefix else None
        if match is None:
            try:
                match = resolve(request.path_info)
            except Resolver404:
                return None
            if getattr(match.func, "view_class", None) not in self.VIEWS:
                return None
            if request.path_info == self.prefix:
                self.bare = match  # the one path without a token: resolved once
        try:
            request.get_host()
        except DisallowedHost:
            return None
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            return None
        return match

    async def _serve(self, request, token, receive, send):
        limit = _max_body()
        token = token or _bearer(request.headers)
        response = _refuse_before_body(request.META.get("CONTENT_LENGTH"), token, limit)
        if response is None:
            body = await _read_body(receive, limit)
            if body is None:
                return  # the client went away
            if len(body) > limit:
                response = _too_large(limit)
            else:
                response = await self._receive(token, body, request)
        if self.security is None:
            self.security = (SecurityMiddleware(_no_response),
                             XFrameOptionsMiddleware(_no_response))
        for middleware in self.security:
            response = middleware.process_response(request, response)
        headers = [(name.encode("latin1"), value.encode("latin1"))
                   for name, value in response.items()]
        content = response.content
        headers.append((b"Content-Length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _receive(self, token, body, request):
        try:
            return await asyncio.wrap_future(_DB_THREADS.submit(
                _db_job, receive, token, body, request.headers,
                request.META.get("REMOTE_ADDR", "")))
        except Exception:
            # Django would log the path, and the path may hold the integration's token.
            logger.exception("alert intake failed")
            return JsonResponse({"detail": "Internal error."}, status=500)


def _no_response(request):
    raise AssertionError("only process_response is used")


async def _read_body(receive, limit):
    """The request body, or its first ``limit + 1`` bytes when it is longer; None when
    the client disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


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
    escalation_policy = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Incident
        fields = ["id", "title", "status", "severity", "route_path", "route_key",
                  "group_labels", "opened_at", "resolved_at", "acknowledged_at",
                  "acknowledged_by", "next_flush_at", "last_notified_at", "round", "alerts",
                  # escalation (alerts/escalation.py)
                  "escalation_policy", "escalation_cycle", "escalation_repeat",
                  "escalation_step", "next_escalation_at", "ack_until", "snoozed_until",
                  "exhausted_at"]

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
            Incident.objects.select_related("acknowledged_by", "escalation_policy")
            .prefetch_related("members"), self.request.query_params)


class IncidentDetail(generics.RetrieveAPIView):
    serializer_class = IncidentSerializer
    permission_classes = [Viewers]
    queryset = Incident.objects.select_related("acknowledged_by", "escalation_policy") \
        .prefetch_related("members")


# Incident actions (acknowledge, resolve, snooze...): alerts/escalation_api.py.


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
    apply = serializers.BooleanField(
        default=False, help_text=(
            "false: only convert and tell what importing would do. true: import in one "
            "transaction (create the channels that do not exist, admins only; save the "
            "tree as a new version, on-call and admins)."))


class PlannedChannelSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    receiver = serializers.CharField()
    origin = serializers.CharField(help_text="The Alertmanager integration, e.g. "
                                             "webhook_configs[0].")
    placeholder = serializers.BooleanField(help_text="Made disabled, to be filled in.")
    target = serializers.CharField(help_text="Where it sends (host or recipients); never "
                                             "the URL or a token.")
    description = serializers.CharField()


class RoutingImportResultSerializer(serializers.Serializer):
    source = serializers.CharField()
    notes = serializers.ListField(child=serializers.CharField())
    channels_to_create = PlannedChannelSerializer(many=True)
    existing_channels = serializers.ListField(child=serializers.CharField())
    version = serializers.IntegerField(allow_null=True, help_text="The saved version "
                                                                  "(apply), else null.")


class RoutingImport(APIView):
    """Convert an alertmanager.yml into our tree and the channels its receivers need;
    with ``apply`` import it (channels and tree in one transaction)."""

    permission_classes = [Viewers]

    @extend_schema(request=RoutingImportSerializer, responses=RoutingImportResultSerializer)
    def post(self, request):
        serializer = RoutingImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        text = serializer.validated_data["alertmanager_yml"]
        imported, create, existing = services.import_alertmanager(text)
        version = None
        if serializer.validated_data["apply"]:
            config, _created, _warnings = services.apply_import(text, by=request.user,
                                                                request=request)
            version = config.version
        return Response(RoutingImportResultSerializer({
            "source": imported.source, "notes": imported.notes, "channels_to_create": create,
            "existing_channels": existing, "version": version}).data,
            status=status.HTTP_200_OK)


