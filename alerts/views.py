"""Alert pages. Thin: parse the request, call ``alerts.services``, render.

On-call staff and operators read everything; on-call staff (and admins) edit routes,
silences and acknowledge; admins manage integrations.
"""

from datetime import timedelta

import yaml
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, Count, Exists, OuterRef, Q, When
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_POST

from alerts import filters, services
from alerts import incidents as actions
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
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    Incident,
    IncidentAlert,
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
        _with_counts(Incident.objects.all()).order_by("-opened_at", "-pk"), params)
    page, query = _page(request, incidents)
    return render(request, "alerts/incident_list.html", {
        "page": page, "query": query, "params": params, "severities": Severity.choices,
        "statuses": [("open", _("open")), *Incident.Status.choices, ("all", _("all"))],
        "can_respond": actions.can_act(request.user),
    })


def _incident_hosts(alerts, now, shown=3):
    """Host panels (``_host_panel``) for the distinct hosts of ``alerts``: the inventory
    host, else one named or addressed like the alert's host label (it may have joined
    the inventory after the alert came)."""
    from cmdb.models import Host

    hosts, hints = {}, []
    for alert in alerts:
        if alert.host is not None:
            hosts.setdefault(alert.host.pk, alert.host)
        elif alert.host_hint and alert.host_hint not in hints:
            hints.append(alert.host_hint)
    if hints and len(hosts) < shown:
        for host in Host.objects.filter(Q(name__in=hints) | Q(address__in=hints)) \
                .select_related("environment")[:shown]:
            hosts.setdefault(host.pk, host)
    panels = [_host_panel(host, now) for host in list(hosts.values())[:shown]]
    unknown = [] if hosts else hints[:shown]
    return panels, unknown


def _plain(detail):
    """An event's detail for people: lists and mappings as text, empty values left out."""
    shown = {}
    for name, value in detail.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        if value not in ("", None):
            shown[name] = value
    return shown


def _timeline(incident, alerts, limit=300):
    """The incident's events, its alerts' events and the notifications sent about it
    (with the outbox's delivery state), in time order; the newest ``limit`` of each."""
    from opsplane.notify.models import Notification as Outbox

    entries = []
    # Newest first to cut at ``limit``; the final sort is stable, so equal times keep
    # the order they were written in.
    events = IncidentEvent.objects.filter(incident=incident).select_related("actor") \
        .order_by("-at", "-pk")[:limit]
    for e in reversed(list(events)):
        detail = dict(e.detail)
        detail.pop("from", None)
        via = detail.pop("via", "")
        entries.append({"at": e.at, "source": "incident", "kind": e.kind,
                        "what": e.get_kind_display(), "actor": e.actor, "via": via,
                        "detail": _plain(detail)})
    names = {a.pk: a.alertname or a.fingerprint[:12] for a in alerts}
    events = AlertEvent.objects.filter(alert_id__in=list(names)).order_by("-at", "-pk")[:limit]
    for e in reversed(list(events)):
        detail = {k: v for k, v in e.detail.items()
                  if k not in ("receipt", "incidents", "first_seen")}
        entries.append({"at": e.at, "source": "alert", "kind": e.kind,
                        "what": e.get_kind_display(), "alert": names[e.alert_id],
                        "alert_id": e.alert_id, "detail": _plain(detail)})
    sent = list(Outbox.objects.filter(ref=f"incident:{incident.pk}")
                .select_related("channel").order_by("-created_at", "-pk")[:limit])[::-1]
    queued = {row.pk for row in sent}
    for row in sent:
        entries.append({"at": row.created_at, "source": "notification", "kind": row.state,
                        "what": row.payload.get("title", "") if isinstance(row.payload, dict)
                        else "", "channel": row.channel.name, "state": row.get_state_display(),
                        "attempts": row.attempts, "sent_at": row.sent_at})
    # Rounds that reached no channel are recorded here only.
    for n in reversed(list(Notification.objects.filter(incident=incident)
                           .order_by("-created_at", "-pk")[:limit])):
        if n.outbox_id in queued:
            continue
        entries.append({"at": n.created_at, "source": "notification", "kind": n.status,
                        "what": n.title, "channel": n.channel_name or "—",
                        "state": n.get_status_display()})
    order = {"alert": 0, "incident": 1, "notification": 2}
    entries.sort(key=lambda entry: (entry["at"], order[entry["source"]]))
    return entries


@role_required(*VIEWERS)
def incident_detail(request, pk):
    incident = get_object_or_404(
        Incident.objects.select_related("acknowledged_by", "escalation_policy"), pk=pk)
    now = timezone.now()
    tree = current_tree()
    route = tree.route(incident.route_key)
    receiver, channels, _sr = tree.targets(route, incident.severity) if route else ("", (), True)
    alerts = list(services.incident_alerts(incident).select_related("silenced_by"))
    host_panels, unknown_hosts = _incident_hosts(alerts, now)
    return render(request, "alerts/incident_detail.html", {
        "incident": incident, "route": route, "receiver": receiver, "channels": channels,
        "muted_by_time": tree.muted_by_time(route, now) if route else "",
        "alerts": alerts, "timeline": _timeline(incident, alerts),
        "host_panels": host_panels, "unknown_hosts": unknown_hosts,
        "can_respond": actions.can_act(request.user), "now": now,
        "snooze_minutes": SNOOZE_MINUTES, "ack_timeouts": ACK_TIMEOUT_MINUTES,
    })


def _firing():
    return Count("members", filter=Q(members__active=True,
                                     members__alert__status=Alert.Status.FIRING))


def _with_counts(incidents):
    return incidents.annotate(firing=_firing(), total=Count("members"))


@require_POST
@role_required(Role.ONCALL)
def incident_action(request, pk, action):
    """Acknowledge, unacknowledge, resolve or snooze (``minutes``) an incident from the
    incident list (htmx: answers the incident's row) or a plain form (back to the
    incident). ``alerts.incidents`` holds the rules."""
    incident = get_object_or_404(Incident, pk=pk)
    options = {"minutes": request.POST.get("minutes")} if action == "snooze" else {}
    error = ""
    try:
        actions.ACTIONS[action](incident, request.user, via="page", request=request,
                                **options)
    except actions.AlreadyDone as exc:
        error = str(exc)
    except (DomainError, ValidationError) as exc:
        error = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    if request.htmx:
        row = _with_counts(Incident.objects.filter(pk=pk)).get()
        response = render(request, "alerts/_incident_row.html",
                          {"i": row, "error": error, "can_respond": True})
        patch_vary_headers(response, ["HX-Request"])
        return response
    if error:
        messages.error(request, error)
    return redirect("alerts:incident", pk=incident.pk)


# --- the live board ----------------------------------------------------------------------------

BOARD_PAGE = 100
BOARD_STATUSES = (Incident.Status.TRIGGERED, Incident.Status.ACKNOWLEDGED)
SNOOZE_MINUTES = (15, 30, 60, 120, 240)
ACK_TIMEOUT_MINUTES = (30, 60, 120, 240)


def _board_filters(params):
    """The board's filters as given (``status``, ``severity``, ``q``), without the rest."""
    return {name: params.get(name, "").strip() for name in ("status", "severity", "q")
            if params.get(name, "").strip()}


def _board_incidents(filters_):
    """Open incidents, triggered before acknowledged, then by severity, newest first."""
    incidents = Incident.objects.filter(status__in=Incident.OPEN)
    if filters_.get("status") in BOARD_STATUSES:
        incidents = incidents.filter(status=filters_["status"])
    if filters_.get("severity") in Severity.values:
        incidents = incidents.filter(severity=filters_["severity"])
    if q := filters_.get("q"):
        on_host = IncidentAlert.objects.filter(
            Q(alert__host__name__icontains=q) | Q(alert__host_hint__icontains=q),
            incident=OuterRef("pk"), active=True)
        incidents = incidents.filter(Q(title__icontains=q) | Exists(on_host))
    return incidents.select_related("acknowledged_by").annotate(
        firing=_firing(),
        status_rank=Case(When(status=Incident.Status.TRIGGERED, then=0), default=1),
        severity_rank=Case(*(When(severity=s, then=-rank) for s, rank in SEVERITY_RANK.items()),
                           default=0),
    ).order_by("status_rank", "severity_rank", "-opened_at", "-pk")


def _attach_hosts(incidents, shown=3):
    """``incident.hosts``: the names (inventory name, else the alert's host label) of the
    hosts its active alerts are about, firing first; one query for the whole page."""
    by_incident = {i.pk: [] for i in incidents}
    rows = (IncidentAlert.objects.filter(incident__in=list(by_incident), active=True)
            .order_by("incident_id", "alert__status", "alert__host__name", "alert__host_hint")
            .values_list("incident_id", "alert__host__name", "alert__host_hint"))
    for incident_id, name, hint in rows:
        host = name or hint
        if host and host not in by_incident[incident_id]:
            by_incident[incident_id].append(host)
    for incident in incidents:
        hosts = by_incident[incident.pk]
        incident.hosts, incident.more_hosts = hosts[:shown], max(0, len(hosts) - shown)


def _board_context(request, params):
    filters_ = _board_filters(params)
    page = Paginator(_board_incidents(filters_), BOARD_PAGE).get_page(params.get("page"))
    _attach_hosts(page.object_list)
    query = urlencode(filters_)
    return {
        "page": page, "params": filters_, "query": query, "filtered": bool(filters_),
        "severities": Severity.choices,
        "statuses": [("", _("open")), *((s.value, s.label) for s in BOARD_STATUSES)],
        "triggered": Incident.objects.filter(status=Incident.Status.TRIGGERED).count(),
        "can_respond": actions.can_act(request.user),
    }


@role_required(*VIEWERS)
def board(request):
    """What on-call staff keep open: open incidents, live (``ws/alerts/board/`` tells
    ``static/alerts/board.js`` when to refetch the ``body`` partial), keyboard-driven."""
    template = "alerts/board.html"
    if request.htmx and not request.htmx.boosted:
        template += "#body"
    response = render(request, template, _board_context(request, request.GET))
    patch_vary_headers(response, ["HX-Request"])
    return response


DONE = {"acknowledge": _lazy("#%(id)s acknowledged."),
        "unacknowledge": _lazy("#%(id)s is triggered again."),
        "resolve": _lazy("#%(id)s resolved."), "snooze": _lazy("#%(id)s snoozed.")}


def _minutes(value, allowed):
    try:
        minutes = int(value)
    except (TypeError, ValueError):
        return None
    return minutes if minutes in allowed else None


@require_POST
@role_required(*VIEWERS)
def board_action(request, pk, action):
    """Acknowledge, unacknowledge, resolve or snooze from the board (htmx: answers the
    board's ``body`` partial, filtered as the query string says) or from the incident
    page (a plain form, ``next=incident``: back there). ``alerts.incidents`` holds the
    rules and checks the role."""
    if action not in actions.ACTIONS:
        raise Http404
    incident = get_object_or_404(Incident, pk=pk)
    from_page = request.POST.get("next") == "incident"
    options = {"via": "page" if from_page else "board", "request": request}
    if action == "acknowledge":
        options["timeout"] = _minutes(request.POST.get("timeout"), ACK_TIMEOUT_MINUTES)
    elif action == "snooze":
        options["minutes"] = _minutes(request.POST.get("minutes"), SNOOZE_MINUTES)
    error = done = ""
    try:
        actions.ACTIONS[action](incident, request.user, **options)
    except actions.AlreadyDone as exc:  # a second click: nothing changed, say so
        done = str(exc)
    except (DomainError, ValidationError) as exc:
        error = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    else:
        done = DONE[action] % {"id": incident.pk}
    if request.htmx:
        context = _board_context(request, request.GET)
        context.update(error=error, flash=done)
        response = render(request, "alerts/board.html#body", context)
        patch_vary_headers(response, ["HX-Request"])
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    if from_page:
        return redirect("alerts:incident", pk=incident.pk)
    return redirect(f"{reverse('alerts:board')}?{urlencode(_board_filters(request.GET))}")


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


IMPORT_SESSION_KEY = "alerts_import"


@role_required(Role.ONCALL)
def routes_import(request):
    """Convert an alertmanager.yml and show what importing it does (the tree, the
    channels it creates); "Import" then does it all in one transaction. Between the two
    the pasted text (robot URLs, tokens) waits encrypted in the session: it is never sent
    back to the browser."""
    from opsplane import secrets as opsecrets
    from opsplane.notify.services import can_manage

    if request.method == "POST" and "apply" in request.POST:
        text = opsecrets.decrypt(request.session.get(IMPORT_SESSION_KEY, "")).get("text", "")
        if not text or request.POST.get("digest") != _digest(text):
            messages.error(request, _("This import preview has expired: paste the "
                                      "configuration again."))
            return redirect("alerts:routes_import")
        try:
            config, created, warnings = services.apply_import(text, by=request.user,
                                                              request=request)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("alerts:routes_import")
        request.session.pop(IMPORT_SESSION_KEY, None)
        messages.success(request, _("Imported as routing tree version %(v)d; %(n)d "
                                    "notification channels created.")
                         % {"v": config.version, "n": len(created)})
        for warning in warnings:
            messages.warning(request, warning)
        return redirect("alerts:routes")
    form = ImportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        text = form.cleaned_data["alertmanager_yml"]
        try:
            imported, create, existing = services.import_alertmanager(text)
        except ValidationError as exc:
            form.add_error("alertmanager_yml", exc.messages)
        else:
            request.session[IMPORT_SESSION_KEY] = opsecrets.encrypt({"text": text})
            return render(request, "alerts/routes_import.html", {
                "imported": imported, "create": create, "existing": existing,
                "digest": _digest(text), "may_create": not create or can_manage(request.user),
                "placeholders": [plan for plan in create if plan.placeholder]})
    return render(request, "alerts/routes_import.html", {"form": form})


def _digest(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


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
