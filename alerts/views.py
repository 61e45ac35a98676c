"""Alert pages. Thin: parse the request, call ``alerts.services``, render.

On-call staff and operators read everything; on-call staff (and admins) edit routes,
silences and acknowledge; admins manage integrations.
"""

from datetime import timedelta

import yaml
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alerts import filters, services
from alerts import matchers as m
from alerts.forms import (
    ImportForm,
    IntegrationForm,
    LabelsForm,
    RoutingForm,
    SilenceAlertForm,
    SilenceForm,
)
from alerts.models import (
    Alert,
    Incident,
    IncidentEvent,
    Integration,
    Notification,
    RoutingConfig,
    Severity,
    Silence,
)
from alerts.routing_state import current_source, current_tree
from changes.models import HostResult
from opsplane.errors import DomainError
from opsplane.roles import Role, role_required

VIEWERS = (Role.ONCALL, Role.OPERATOR)


def _form_errors(form, exc):
    for name, errors in exc.message_dict.items():
        form.add_error(name if name in form.fields else None, errors)


def _page(request, queryset, size=50):
    page = Paginator(queryset, size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()


# --- alerts ------------------------------------------------------------------------------------


@role_required(*VIEWERS)
def index(request):
    alerts = filters.alerts(
        Alert.objects.select_related("integration", "host", "silenced_by"), request.GET)
    page, query = _page(request, alerts)
    return render(request, "alerts/alert_list.html", {
        "page": page, "query": query, "params": request.GET, "now": timezone.now(),
        "statuses": Alert.Status.choices, "severities": Severity.choices,
        "integrations": Integration.objects.values_list("name", flat=True),
        "open_incidents": Incident.objects.filter(status__in=Incident.OPEN).count(),
    })


def _host_panel(host, now):
    if host is None:
        return None
    since = now - timedelta(hours=24)
    results = (HostResult.objects.filter(host=host, run__queued_at__gte=since)
               .select_related("run__change").order_by("-run__queued_at")[:20])
    return {"host": host, "services": list(host.services.all()), "results": results}


@role_required(*VIEWERS)
def alert_detail(request, pk):
    alert = get_object_or_404(Alert.objects.select_related(
        "integration", "host__environment", "silenced_by"), pk=pk)
    now = timezone.now()
    host = alert.host
    if host is None and alert.host_hint:
        # The host may have joined the CMDB after the alert arrived.
        from cmdb.models import Host

        host = Host.objects.filter(Q(name=alert.host_hint) | Q(address=alert.host_hint)) \
            .select_related("environment").first()
    return render(request, "alerts/alert_detail.html", {
        "alert": alert, "events": alert.events.all(), "now": now,
        "incidents": Incident.objects.filter(members__alert=alert).distinct(),
        "host_panel": _host_panel(host, now),
        "silence_form": SilenceAlertForm(),
        "can_respond": services.can_respond(request.user),
        "silence_active": alert.silenced_by is not None and alert.silenced_by.ends_at > now,
    })


@require_POST
@role_required(Role.ONCALL)
def alert_silence(request, pk):
    alert = get_object_or_404(Alert, pk=pk)
    form = SilenceAlertForm(request.POST)
    if form.is_valid():
        try:
            silence = services.silence_alert(alert, by=request.user, request=request,
                                             **form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, _("Silenced until %(end)s (silence #%(id)s).") % {
                "end": timezone.localtime(silence.ends_at).strftime("%Y-%m-%d %H:%M"),
                "id": silence.pk})
    return redirect("alerts:alert", pk=alert.pk)


# --- incidents ---------------------------------------------------------------------------------


@role_required(*VIEWERS)
def incident_list(request):
    params = request.GET.copy()
    params.setdefault("status", "open")
    incidents = filters.incidents(
        Incident.objects.annotate(
            firing=Count("members", filter=Q(members__active=True,
                                             members__alert__status=Alert.Status.FIRING)),
            total=Count("members")).order_by("-opened_at", "-pk"),
        params)
    page, query = _page(request, incidents)
    return render(request, "alerts/incident_list.html", {
        "page": page, "query": query, "params": params, "severities": Severity.choices,
        "statuses": [("open", _("open")), *Incident.Status.choices, ("all", _("all"))],
    })


@role_required(*VIEWERS)
def incident_detail(request, pk):
    incident = get_object_or_404(Incident.objects.select_related("acknowledged_by"), pk=pk)
    tree = current_tree()
    route = tree.route(incident.route_key)
    receiver, channels, _sr = tree.targets(route, incident.severity) if route else ("", (), True)
    return render(request, "alerts/incident_detail.html", {
        "incident": incident, "route": route, "receiver": receiver, "channels": channels,
        "muted_by_time": tree.muted_by_time(route, timezone.now()) if route else "",
        "alerts": services.incident_alerts(incident).select_related("silenced_by"),
        "events": IncidentEvent.objects.filter(incident=incident).select_related("actor"),
        "notifications": Notification.objects.filter(incident=incident),
        "can_respond": services.can_respond(request.user), "now": timezone.now(),
    })


@require_POST
@role_required(Role.ONCALL)
def incident_action(request, pk, action):
    incident = get_object_or_404(Incident, pk=pk)
    act = services.acknowledge if action == "acknowledge" else services.unacknowledge
    try:
        act(incident, by=request.user, request=request)
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("alerts:incident", pk=incident.pk)


# --- routing -----------------------------------------------------------------------------------


@role_required(*VIEWERS)
def routes(request):
    """The YAML editor. "Check" validates and shows warnings; "Save" saves a version."""
    source, config = current_source()
    form = RoutingForm(request.POST or None, initial={"source": source})
    warnings, checked = [], False
    if request.method == "POST":
        if not services.can_respond(request.user):
            raise PermissionDenied
        if form.is_valid():
            try:
                if "check" in request.POST:
                    _tree, warnings = services.validate_routing(form.cleaned_data["source"])
                    checked = True
                else:
                    saved, warnings = services.save_routing(
                        form.cleaned_data["source"], by=request.user, request=request,
                        comment=form.cleaned_data["comment"])
                    messages.success(request, _("Routing tree saved as version %(v)d.")
                                     % {"v": saved.version})
                    for warning in warnings:
                        messages.warning(request, warning)
                    return redirect("alerts:routes")
            except ValidationError as exc:
                _form_errors(form, exc)
    return render(request, "alerts/routes.html", {
        "form": form, "config": config, "warnings": warnings, "checked": checked,
        "versions": RoutingConfig.objects.select_related("created_by")[:10],
        "tree": current_tree(), "can_respond": services.can_respond(request.user),
        "labels_form": LabelsForm(),
    })


@role_required(Role.ONCALL)
def routes_import(request):
    """Convert an alertmanager.yml; the result opens in the editor, unsaved."""
    form = ImportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            source, notes, unknown = services.import_alertmanager(
                form.cleaned_data["alertmanager_yml"])
        except ValidationError as exc:
            form.add_error("alertmanager_yml", exc.messages)
        else:
            editor = RoutingForm(initial={"source": source,
                                          "comment": _("Imported from alertmanager.yml")})
            _src, config = current_source()
            return render(request, "alerts/routes.html", {
                "form": editor, "config": config, "imported": True, "notes": notes,
                "unknown_channels": unknown, "tree": current_tree(), "can_respond": True,
                "versions": RoutingConfig.objects.select_related("created_by")[:10],
                "labels_form": LabelsForm()})
    return render(request, "alerts/routes_import.html", {"form": form})


def parse_labels(text):
    """The test console's input: YAML/JSON mapping, ``{a="b"}`` or name=value lines."""
    text = (text or "").strip()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    # {a="b"} reads as a YAML mapping of 'a="b"' to nothing: that is matcher syntax.
    if isinstance(data, dict) and not any(v is None and "=" in str(k) for k, v in data.items()):
        return {str(k): "" if v is None else str(v) for k, v in data.items()}
    lines = [line for line in text.replace("\r", "").split("\n") if line.strip()]
    try:
        found = m.parse_list(lines)
    except m.MatcherError as exc:
        raise ValidationError(str(exc)) from None
    if any(x.op != "=" for x in found):
        raise ValidationError(_("Labels take = only, e.g. severity=\"critical\"."))
    return {x.name: x.value for x in found}


@role_required(*VIEWERS)
def routes_test(request):
    """Paste labels: which route matches and who would be notified (htmx partial)."""
    form = LabelsForm(request.POST or request.GET or None)
    result, error = None, ""
    if form.is_bound and form.is_valid():
        try:
            labels = parse_labels(form.cleaned_data["labels"])
            result = services.explain(labels)
            result["labels"] = labels
            if result["silenced_by"]:
                result["silence"] = Silence.objects.filter(pk=result["silenced_by"]).first()
        except ValidationError as exc:
            error = " ".join(exc.messages)
    template = "alerts/routes_test.html"
    if request.htmx and not request.htmx.boosted:
        template += "#result"
    response = render(request, template, {"form": form, "result": result, "error": error})
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- silences ----------------------------------------------------------------------------------


@role_required(*VIEWERS)
def silence_list(request):
    now = timezone.now()
    state = request.GET.get("state", "active")
    silences = Silence.objects.select_related("created_by").annotate(
        held=Count("alerts")).order_by("-ends_at", "-pk")
    if state == "active":
        silences = silences.filter(starts_at__lte=now, ends_at__gt=now)
    elif state == "pending":
        silences = silences.filter(starts_at__gt=now)
    elif state == "expired":
        silences = silences.filter(ends_at__lte=now)
    page, query = _page(request, silences)
    form = SilenceForm(initial={"matchers": request.GET.get("matchers", "")})
    return render(request, "alerts/silence_list.html", {
        "page": page, "query": query, "state": state, "now": now, "form": form,
        "can_respond": services.can_respond(request.user)})


@role_required(Role.ONCALL)
def silence_new(request):
    form = SilenceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            matchers = services.parse_silence_matchers(form.cleaned_data["matchers"])
            starts_at = form.cleaned_data["starts_at"] or timezone.now()
            silence = services.create_silence(
                matchers, starts_at=starts_at,
                ends_at=starts_at + timedelta(hours=form.cleaned_data["hours"]),
                comment=form.cleaned_data["comment"], by=request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Silence #%(id)s created.") % {"id": silence.pk})
            return redirect("alerts:silences")
    return render(request, "alerts/silence_form.html", {"form": form})


@require_POST
@role_required(Role.ONCALL)
def silence_expire(request, pk):
    silence = get_object_or_404(Silence, pk=pk)
    try:
        services.expire_silence(silence, by=request.user, request=request)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Silence #%(id)s expired.") % {"id": silence.pk})
    return redirect("alerts:silences")


# --- integrations ------------------------------------------------------------------------------


@role_required(*VIEWERS)
def integration_list(request):
    integrations = Integration.objects.annotate(
        firing=Count("alerts", filter=Q(alerts__status=Alert.Status.FIRING))).order_by("name")
    return render(request, "alerts/integration_list.html", {
        "integrations": integrations, "can_admin": services.can_admin(request.user),
        "now": timezone.now()})


def _intake_urls(request, token):
    return {"url": request.build_absolute_uri(reverse("api-alerts-intake-token",
                                                      args=[token])),
            "bare": request.build_absolute_uri(reverse("api-alerts-intake")),
            "token": token}


@role_required(*VIEWERS)
def integration_detail(request, pk=None):
    """An integration's page; admins edit it here (and create new ones). A new or rotated
    token is shown once, on the answer to that POST."""
    integration = get_object_or_404(Integration, pk=pk) if pk else Integration(
        kind=Integration.Kind.ALERTMANAGER)
    can_admin = services.can_admin(request.user)
    if pk is None and not can_admin:
        raise PermissionDenied
    form = IntegrationForm(request.POST or None, instance=integration) if can_admin else None
    created = None
    if request.method == "POST":
        if not can_admin:
            raise PermissionDenied
        if form.is_valid():
            data = {name: form.cleaned_data[name] for name in form.Meta.fields}
            try:
                integration, token = services.save_integration(
                    integration, data, hmac_secret=form.cleaned_data["hmac_secret"],
                    clear_secret=form.cleaned_data["clear_secret"], by=request.user,
                    request=request)
            except ValidationError as exc:
                _form_errors(form, exc)
            else:
                if token is None:
                    messages.success(request, _("Integration %(name)s saved.")
                                     % {"name": integration.name})
                    return redirect("alerts:integration", pk=integration.pk)
                created = _intake_urls(request, token)
                form = IntegrationForm(instance=integration)
    return render(request, "alerts/integration_detail.html", {
        "integration": integration, "form": form, "created": created,
        "can_admin": can_admin,
        "bare_url": request.build_absolute_uri(reverse("api-alerts-intake")),
        "recent": integration.alerts.order_by("-last_received_at")[:10] if integration.pk
        else []})


@require_POST
@role_required(Role.ADMIN)
def integration_rotate(request, pk):
    integration = get_object_or_404(Integration, pk=pk)
    token = services.rotate_token(integration, by=request.user, request=request)
    return render(request, "alerts/integration_detail.html", {
        "integration": integration, "form": IntegrationForm(instance=integration),
        "created": _intake_urls(request, token), "can_admin": True, "rotated": True,
        "bare_url": request.build_absolute_uri(reverse("api-alerts-intake")),
        "recent": integration.alerts.order_by("-last_received_at")[:10]})
