"""The notification layer's REST API: channels (secrets write-only), the outbox with
each row's attempts, test messages and template previews. ``services`` writes."""

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from opsplane.notify import render, services
from opsplane.notify.models import Attempt, Channel, Notification


class ReadsViewWritesManage(BasePermission):
    """Reading: admins, operators and on-call staff; writing: admins. The services
    check again and stay the rule."""

    message = _("Your role does not allow this.")

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return services.can_view(request.user)
        return services.can_manage(request.user)


SECRET_HELP = {
    "url": "The robot's or endpoint's full URL (write-only).",
    "signing_secret": "DingTalk SEC… secret, Feishu signature key, or the webhook's HMAC "
                      "key (write-only).",
    "token": "Bearer token (write-only).",
}


class ChannelSerializer(serializers.ModelSerializer):
    """Secrets go in and never come out: ``secret_fields`` says which are stored. Omit a
    secret (or send "") to keep it; send null to remove it."""

    url = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                allow_null=True, help_text=SECRET_HELP["url"])
    signing_secret = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                           allow_null=True,
                                           help_text=SECRET_HELP["signing_secret"])
    token = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                  allow_null=True, help_text=SECRET_HELP["token"])
    config = serializers.JSONField(required=False, help_text="Settings of the kind: "
                                   "mentions, at_all, format, recipients, from_email, method, "
                                   "content_type, body_template, headers, result_field, "
                                   "ok_values.")
    budget = serializers.CharField(source="budget_display", read_only=True,
                                   help_text="The rate budget in force (messages/seconds).")

    class Meta:
        model = Channel
        fields = ["id", "name", "kind", "description", "enabled", "config", "rate_budget",
                  "budget", "template", "target", "secret_fields", "url", "signing_secret",
                  "token", "created_at", "updated_at"]
        read_only_fields = ["target", "secret_fields", "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    def save_with(self, channel, request):
        data = dict(self.validated_data)
        given = {name: data.pop(name) for name in SECRET_HELP if name in data}
        clear = [name for name, value in given.items() if value is None]
        self.instance = services.save_channel(
            channel, data, secret_fields={k: v for k, v in given.items() if v},
            clear=clear, by=request.user, request=request)
        return self.instance


class ChannelList(generics.ListCreateAPIView):
    serializer_class = ChannelSerializer
    permission_classes = [ReadsViewWritesManage]
    queryset = Channel.objects.all()

    def perform_create(self, serializer):
        serializer.save_with(Channel(), self.request)


class ChannelDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ChannelSerializer
    permission_classes = [ReadsViewWritesManage]
    lookup_field = "name"
    queryset = Channel.objects.all()

    def perform_update(self, serializer):
        serializer.save_with(serializer.instance, self.request)

    def perform_destroy(self, instance):
        services.delete_channel(instance, by=self.request.user, request=self.request)


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ["number", "started_at", "duration_ms", "ok", "http_status", "provider_code",
                  "provider_message", "error"]


class NotificationSerializer(serializers.ModelSerializer):
    channel = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Notification
        fields = ["id", "channel", "idempotency_key", "ref", "state", "attempts",
                  "next_attempt_at", "last_error", "provider_code", "is_digest", "digest",
                  "payload", "created_at", "sent_at"]
        read_only_fields = fields


class NotificationDetailSerializer(NotificationSerializer):
    attempt_set = AttemptSerializer(many=True, read_only=True)
    folded = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta(NotificationSerializer.Meta):
        fields = [*NotificationSerializer.Meta.fields, "attempt_set", "folded"]
        read_only_fields = fields


class NotificationList(generics.ListAPIView):
    """The outbox, newest first, filtered by `channel` (name), `state` and `ref`."""

    serializer_class = NotificationSerializer
    permission_classes = [ReadsViewWritesManage]

    @extend_schema(parameters=[
        OpenApiParameter("channel", OpenApiTypes.STR, description="Channel name."),
        OpenApiParameter("state", OpenApiTypes.STR, enum=Notification.State.values),
        OpenApiParameter("ref", OpenApiTypes.STR, description="What it is about, e.g. "
                         "`incident:42`."),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        rows = Notification.objects.select_related("channel")
        params = self.request.query_params
        if params.get("channel"):
            rows = rows.filter(channel__name=params["channel"])
        if params.get("state"):
            rows = rows.filter(state=params["state"])
        if params.get("ref"):
            rows = rows.filter(ref=params["ref"])
        return rows


class NotificationDetail(generics.RetrieveAPIView):
    serializer_class = NotificationDetailSerializer
    permission_classes = [ReadsViewWritesManage]
    queryset = Notification.objects.select_related("channel").prefetch_related(
        "attempt_set", "folded")


QUEUED = inline_serializer("NotificationQueued", {"notification": serializers.IntegerField()})


class ChannelTest(APIView):
    """Queue a test message to the channel (admins); answers the outbox row's id."""

    permission_classes = [ReadsViewWritesManage]

    @extend_schema(request=None, responses={202: QUEUED})
    def post(self, request, name):
        channel = get_object_or_404(Channel, name=name)
        row = services.send_test(channel, by=request.user, request=request)
        return Response({"notification": row.pk}, status=status.HTTP_202_ACCEPTED)


class NotificationRetry(APIView):
    """Try a dead notification again, with a fresh set of attempts (admins)."""

    permission_classes = [ReadsViewWritesManage]

    @extend_schema(request=None, responses={202: NotificationSerializer})
    def post(self, request, pk):
        row = services.retry(get_object_or_404(Notification, pk=pk), by=request.user,
                             request=request)
        return Response(NotificationSerializer(row).data, status=status.HTTP_202_ACCEPTED)


class Preview(APIView):
    """Render a template for a kind of channel with a sample alert (or the message
    given): the text, and the body the provider would receive (no URL, no signature)."""

    permission_classes = [ReadsViewWritesManage]

    @extend_schema(
        request=inline_serializer("NotifyPreviewRequest", {
            "kind": serializers.ChoiceField(choices=Channel.Kind.choices),
            "template": serializers.CharField(required=False, allow_blank=True,
                                              help_text="Empty: the kind's default."),
            "config": serializers.JSONField(required=False),
        }),
        responses={200: inline_serializer("NotifyPreview", {
            "title": serializers.CharField(), "text": serializers.CharField(),
            "body": serializers.CharField(allow_null=True),
        })},
    )
    def post(self, request):
        from rest_framework.exceptions import ValidationError

        kind = request.data.get("kind")
        if kind not in Channel.Kind.values:
            raise ValidationError({"kind": [f"one of {', '.join(Channel.Kind.values)}"]})
        config = request.data.get("config") or {}
        if not isinstance(config, dict):
            raise ValidationError({"config": ["an object"]})
        try:
            result = services.preview(kind, request.data.get("template") or "",
                                      config=config)
        except render.TemplateError as exc:
            raise ValidationError({"template": [str(exc)]}) from None
        return Response(result)
