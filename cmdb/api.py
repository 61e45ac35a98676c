"""The inventory's REST API. Serializers shape and parse; ``cmdb.services`` writes."""

from django.db.models import Prefetch, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from cmdb import selectors, services
from cmdb.models import Credential, Environment, Group, Host, HostKey, Service
from opsplane.roles import HasRole, Role

ReadInventory = HasRole(Role.OPERATOR, Role.APPROVER, Role.ONCALL)


def WritesNeed(may_write):  # noqa: N802 - reads like a class in permission_classes lists
    """DRF permission: reading needs an inventory role, writing what ``may_write`` (one
    of ``services.can_edit``/``can_admin``) says. The service checks again and stays the
    rule; asking here too means a reader gets 403 before the request body is read, not a
    400 about its fields or a 409 from a connection made on their behalf."""

    class _WritesNeed(BasePermission):
        message = _("Your role does not allow this change to the inventory.")

        def has_permission(self, request, view):
            if request.method in SAFE_METHODS:
                return services.can_view(request.user)
            return may_write(request.user)

    return _WritesNeed


EditInventory = WritesNeed(services.can_edit)
AdminInventory = WritesNeed(services.can_admin)

SELECTOR_PARAM = OpenApiParameter(
    "selector", OpenApiTypes.STR,
    description="Target selector, e.g. `env=prod,role=web,!canary,zone in (a,b),"
                "group=frontend,name~web-*`.",
)


def selected_hosts(request, queryset=None):
    """Hosts filtered by the ``selector`` and ``search`` query parameters (400 on a bad
    selector, with the position and what was expected)."""
    text = request.query_params.get("selector", "")
    try:
        hosts = selectors.resolve(text, include_disabled=True, queryset=queryset)
    except selectors.SelectorError as exc:
        raise ValidationError({"selector": [str(exc)], "position": exc.position}) from None
    search = request.query_params.get("search", "").strip()
    if search:
        hosts = hosts.filter(Q(name__icontains=search) | Q(address__icontains=search)
                             | Q(description__icontains=search))
    return hosts


class HostKeySerializer(serializers.ModelSerializer):
    trusted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = HostKey
        fields = ["key", "fingerprint", "source", "trusted_by", "trusted_at"]


class HostSerializer(serializers.ModelSerializer):
    environment = serializers.SlugRelatedField(slug_field="name",
                                               queryset=Environment.objects.all())
    groups = serializers.SlugRelatedField(slug_field="name", many=True, required=False,
                                          queryset=Group.objects.all())
    services = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    credential = serializers.SlugRelatedField(slug_field="name", allow_null=True,
                                              required=False,
                                              queryset=Credential.objects.all())
    host_keys = HostKeySerializer(many=True, read_only=True)

    class Meta:
        model = Host
        fields = [
            "id", "name", "address", "port", "ssh_user", "environment", "labels", "groups",
            "services", "owner_team", "description", "enabled", "variables", "credential",
            "host_key_state", "host_keys", "presented_host_key", "facts", "facts_updated_at",
            "facts_error", "facts_error_detail", "created_at", "updated_at",
        ]
        read_only_fields = [
            "host_key_state", "presented_host_key", "facts", "facts_updated_at",
            "facts_error", "facts_error_detail", "created_at", "updated_at",
        ]
        # Model validation runs in the service (full_clean); DRF's own unique checks
        # would only repeat it with a query per field.
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class HostListSerializer(HostSerializer):
    """The list's rows: what a table or a script iterating hosts needs. Facts, variables
    and pinned keys are on the detail (``/api/v1/hosts/<name>/``)."""

    class Meta(HostSerializer.Meta):
        fields = [
            "id", "name", "address", "port", "ssh_user", "environment", "labels", "groups",
            "services", "owner_team", "enabled", "credential", "host_key_state",
            "facts_updated_at", "facts_error", "updated_at",
        ]


LIST_COLUMNS = ["id", "name", "address", "port", "ssh_user", "environment__name", "labels",
                "owner_team", "enabled", "credential__name", "host_key_state",
                "facts_updated_at", "facts_error", "updated_at"]


def host_queryset():
    return Host.objects.select_related("environment", "credential").prefetch_related(
        Prefetch("groups", queryset=Group.objects.only("id", "name")),
        Prefetch("services", queryset=Service.objects.only("id", "name")),
        Prefetch("host_keys", queryset=HostKey.objects.select_related("trusted_by")),
    )


HOST_ORDERING = {"name", "-name", "created_at", "-created_at", "updated_at", "-updated_at",
                 "environment", "-environment", "facts_updated_at", "-facts_updated_at"}


class HostList(generics.ListCreateAPIView):
    """Hosts, filtered by `selector` and `search`, sorted by `ordering`."""

    permission_classes = [EditInventory]

    def get_serializer_class(self):
        return HostListSerializer if self.request.method == "GET" else HostSerializer

    @extend_schema(parameters=[
        SELECTOR_PARAM,
        OpenApiParameter("search", OpenApiTypes.STR, description="Text in name, address, "
                         "description."),
        OpenApiParameter("ordering", OpenApiTypes.STR, enum=sorted(HOST_ORDERING)),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        ordering = self.request.query_params.get("ordering", "name")
        if ordering not in HOST_ORDERING:
            raise ValidationError({"ordering": [f"one of {', '.join(sorted(HOST_ORDERING))}"]})
        field = ordering.replace("environment", "environment__name")
        hosts = Host.objects.select_related("environment", "credential").only(
            *LIST_COLUMNS).prefetch_related(
            Prefetch("groups", queryset=Group.objects.only("id", "name")),
            Prefetch("services", queryset=Service.objects.only("id", "name")))
        return selected_hosts(self.request, hosts).order_by(field, "name")

    def perform_create(self, serializer):
        serializer.instance = services.save_host(Host(), dict(serializer.validated_data),
                                                 by=self.request.user, request=self.request)


class HostDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = HostSerializer
    permission_classes = [EditInventory]
    lookup_field = "name"
    queryset = host_queryset()

    def perform_update(self, serializer):
        serializer.instance = services.save_host(
            serializer.instance, dict(serializer.validated_data), by=self.request.user,
            request=self.request,
        )

    def perform_destroy(self, instance):
        services.delete_host(instance, by=self.request.user, request=self.request)


class TrustHostKey(APIView):
    """Pin a host key: the one given, or (first contact) the one the host presents now."""

    permission_classes = [EditInventory]

    @extend_schema(
        request=inline_serializer("TrustKey", {"key": serializers.CharField(required=False)}),
        responses=HostKeySerializer,
    )
    def post(self, request, name):
        host = get_object_or_404(Host, name=name)
        pinned = services.trust_host_key(host, request.data.get("key") or None,
                                         by=request.user, request=request)
        return Response(HostKeySerializer(pinned).data, status=status.HTTP_201_CREATED)


class RetrustHostKey(APIView):
    """Admins: accept the changed key the host now presents."""

    permission_classes = [HasRole(Role.ADMIN)]

    @extend_schema(request=None, responses=HostSerializer)
    def post(self, request, name):
        host = get_object_or_404(Host, name=name)
        services.retrust_host_key(host, by=request.user, request=request)
        return Response(HostSerializer(host_queryset().get(pk=host.pk)).data)


class GatherFacts(APIView):
    """Queue fact gathering for one host; 202, results appear on the host."""

    permission_classes = [EditInventory]

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, name):
        host = get_object_or_404(Host, name=name)
        # Disabled hosts are never contacted: say so rather than claim a queued run.
        queued = services.queue_fact_gathering(Host.objects.filter(pk=host.pk), by=request.user)
        return Response({"queued": [host.name] if queued else []},
                        status=status.HTTP_202_ACCEPTED)


class GatherFactsForSelector(APIView):
    """Queue fact gathering for every enabled host a selector matches; 202."""

    permission_classes = [EditInventory]

    @extend_schema(
        request=inline_serializer("FactsRequest", {"selector": serializers.CharField()}),
        responses={202: inline_serializer("FactsQueued", {
            "queued": serializers.IntegerField()})},
    )
    def post(self, request):
        try:
            hosts = selectors.resolve(request.data.get("selector", ""))
        except selectors.SelectorError as exc:
            raise ValidationError({"selector": [str(exc)]}) from None
        queued = services.queue_fact_gathering(hosts, by=request.user)
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


class BulkLabels(APIView):
    """Set and remove labels on every host a selector matches."""

    permission_classes = [EditInventory]

    @extend_schema(
        request=inline_serializer("BulkLabels", {
            "selector": serializers.CharField(),
            "set": serializers.DictField(child=serializers.CharField(), required=False),
            "remove": serializers.ListField(child=serializers.CharField(), required=False),
        }),
        responses=inline_serializer("BulkLabelsResult", {"changed": serializers.IntegerField()}),
    )
    def post(self, request):
        text = request.data.get("selector", "")
        if not isinstance(text, str) or not text.strip():
            # A forgotten selector must not relabel every host.
            raise ValidationError({"selector": ["Name the hosts to change: an empty "
                                                "selector would match every host."]})
        try:
            hosts = selectors.resolve(text, include_disabled=True)
        except selectors.SelectorError as exc:
            raise ValidationError({"selector": [str(exc)], "position": exc.position}) from None
        set_labels = request.data.get("set") or {}
        remove = request.data.get("remove") or []
        if not isinstance(set_labels, dict) or not isinstance(remove, list):
            raise ValidationError({"detail": ["`set` is a mapping, `remove` a list of keys"]})
        changed = services.bulk_edit_labels(hosts, set_labels=set_labels, remove_keys=remove,
                                            by=request.user, request=request)
        return Response({"changed": changed})


class SelectorPreview(APIView):
    """How many and which hosts a selector matches (the first 20 names)."""

    permission_classes = [ReadInventory]

    @extend_schema(parameters=[SELECTOR_PARAM], responses=inline_serializer("Preview", {
        "count": serializers.IntegerField(),
        "hosts": serializers.ListField(child=serializers.CharField()),
    }))
    def get(self, request):
        hosts = selected_hosts(request)
        return Response({"count": hosts.count(),
                         "hosts": list(hosts.values_list("name", flat=True)[:20])})


# --- groups, services, environments, credentials ------------------------------------------


class GroupSerializer(serializers.ModelSerializer):
    parents = serializers.SlugRelatedField(slug_field="name", many=True, required=False,
                                           queryset=Group.objects.all())
    children = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Group
        fields = ["id", "name", "description", "parents", "children", "variables",
                  "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class GroupList(generics.ListCreateAPIView):
    serializer_class = GroupSerializer
    permission_classes = [EditInventory]
    queryset = Group.objects.prefetch_related("parents", "children")

    def perform_create(self, serializer):
        serializer.instance = services.save_group(Group(), dict(serializer.validated_data),
                                                  by=self.request.user, request=self.request)


class GroupDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = GroupSerializer
    permission_classes = [EditInventory]
    lookup_field = "name"
    queryset = Group.objects.prefetch_related("parents", "children")

    def perform_update(self, serializer):
        serializer.instance = services.save_group(
            serializer.instance, dict(serializer.validated_data), by=self.request.user,
            request=self.request)

    def perform_destroy(self, instance):
        services.delete_group(instance, by=self.request.user, request=self.request)


class ServiceSerializer(serializers.ModelSerializer):
    hosts = serializers.SlugRelatedField(slug_field="name", many=True, required=False,
                                         queryset=Host.objects.all())

    class Meta:
        model = Service
        fields = ["id", "name", "description", "owner_team", "tier", "hosts", "created_at",
                  "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class ServiceList(generics.ListCreateAPIView):
    serializer_class = ServiceSerializer
    permission_classes = [EditInventory]
    queryset = Service.objects.prefetch_related("hosts")

    def perform_create(self, serializer):
        serializer.instance = services.save_service(
            Service(), dict(serializer.validated_data), by=self.request.user,
            request=self.request)


class ServiceDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ServiceSerializer
    permission_classes = [EditInventory]
    lookup_field = "name"
    queryset = Service.objects.prefetch_related("hosts")

    def perform_update(self, serializer):
        serializer.instance = services.save_service(
            serializer.instance, dict(serializer.validated_data), by=self.request.user,
            request=self.request)

    def perform_destroy(self, instance):
        services.delete_service(instance, by=self.request.user, request=self.request)


class EnvironmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Environment
        fields = ["id", "name", "description", "protected"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}


class EnvironmentList(generics.ListCreateAPIView):
    serializer_class = EnvironmentSerializer
    permission_classes = [AdminInventory]
    queryset = Environment.objects.all()
    pagination_class = None

    def perform_create(self, serializer):
        serializer.instance = services.save_environment(
            Environment(), dict(serializer.validated_data), by=self.request.user,
            request=self.request)


class CredentialSerializer(serializers.ModelSerializer):
    """Secrets are write-only: they go in, they never come out."""

    private_key = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                        style={"base_template": "textarea.html"})
    passphrase = serializers.CharField(write_only=True, required=False, allow_blank=True)
    password = serializers.CharField(write_only=True, required=False, allow_blank=True)

    class Meta:
        model = Credential
        fields = ["id", "name", "kind", "description", "public_key", "fingerprint",
                  "private_key", "passphrase", "password", "created_at", "updated_at"]
        read_only_fields = ["public_key", "fingerprint", "created_at", "updated_at"]
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    def save_with(self, credential, request):
        data = dict(self.validated_data)
        secrets = {k: data.pop(k, None) or None for k in ("private_key", "passphrase",
                                                          "password")}
        self.instance = services.save_credential(credential, data, **secrets, by=request.user,
                                                 request=request)
        return self.instance


class CredentialList(generics.ListCreateAPIView):
    serializer_class = CredentialSerializer
    permission_classes = [HasRole(Role.ADMIN)]
    queryset = Credential.objects.all()

    def perform_create(self, serializer):
        serializer.save_with(Credential(), self.request)


class CredentialDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = CredentialSerializer
    permission_classes = [HasRole(Role.ADMIN)]
    lookup_field = "name"
    queryset = Credential.objects.all()

    def perform_update(self, serializer):
        serializer.save_with(serializer.instance, self.request)

    def perform_destroy(self, instance):
        services.delete_credential(instance, by=self.request.user, request=self.request)


class InventoryImport(APIView):
    """Import an Ansible (INI/YAML), CSV or JSON inventory. With `dry_run` (the default)
    nothing is written: the answer is the plan. 400 lists errors with line numbers."""

    permission_classes = [HasRole(Role.OPERATOR)]

    @extend_schema(
        request=inline_serializer("InventoryImport", {
            "format": serializers.ChoiceField(choices=["ini", "yaml", "csv", "json"]),
            "content": serializers.CharField(),
            "environment": serializers.CharField(help_text="for new hosts"),
            "dry_run": serializers.BooleanField(default=True),
        }),
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        from cmdb import inventory

        fmt = request.data.get("format")
        if fmt not in inventory.FORMATS:
            raise ValidationError({"format": [f"one of {', '.join(inventory.FORMATS)}"]})
        environment = Environment.objects.filter(name=request.data.get("environment")).first()
        if environment is None:
            raise ValidationError({"environment": ["no such environment"]})
        content = request.data.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ValidationError({"content": ["the inventory text"]})
        plan = inventory.plan_import(content, fmt, environment=environment)
        body = {"counts": plan.counts(), "errors": plan.errors, "warnings": plan.warnings,
                "changes": [{"name": i.name, "action": i.action, "changes": i.changes,
                             "line": i.line} for i in plan.hosts + plan.groups
                            if i.action != "unchanged"]}
        if plan.errors:
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        dry_run = request.data.get("dry_run", True) not in (False, "false", "0", 0)
        if not dry_run:
            body["applied"] = inventory.apply_import(plan, by=request.user, request=request)
        return Response(body)


class InventoryExport(APIView):
    """The hosts a selector matches as `ansible` (YAML), `file_sd` (JSON) or `csv`."""

    permission_classes = [ReadInventory]

    @extend_schema(parameters=[
        SELECTOR_PARAM,
        OpenApiParameter("format", OpenApiTypes.STR, enum=["ansible", "file_sd", "csv"]),
    ], responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request):
        from cmdb import inventory

        hosts = selected_hosts(request)
        try:
            text, content_type, filename = inventory.export(
                request.query_params.get("format", "ansible"), hosts)
        except ValueError as exc:
            raise ValidationError({"format": [str(exc)]}) from None
        response = HttpResponse(text, content_type=f"{content_type}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
