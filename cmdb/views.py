"""Inventory pages. Thin: parse the request, call ``cmdb.services``, render."""

from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.crypto import get_random_string
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from cmdb import selectors, services
from cmdb.forms import (
    BulkLabelsForm,
    CredentialForm,
    EnvironmentForm,
    GroupForm,
    HostForm,
    InventoryImportForm,
    KnownHostsForm,
    ServiceForm,
    TrustKeyForm,
)
from cmdb.models import Credential, Environment, Group, Host, HostKey, Service
from opsplane.models import AuditEvent
from opsplane.roles import Role, role_required

READERS = (Role.OPERATOR, Role.APPROVER, Role.ONCALL)
PAGE_SIZE = 50
SORTS = {
    "name": "name", "-name": "-name",
    "env": "environment__name", "-env": "-environment__name",
    "updated": "updated_at", "-updated": "-updated_at",
    "facts": "facts_updated_at", "-facts": "-facts_updated_at",
}
STATES = {
    "enabled": Q(enabled=True),
    "disabled": Q(enabled=False),
    "key_changed": Q(host_key_state=Host.HostKeyState.CHANGED),
    "no_key": Q(host_key_state=Host.HostKeyState.UNKNOWN),
    "facts_failed": ~Q(facts_error=""),
}


def _form_errors(form, exc):
    """Put a service's ``ValidationError`` next to the fields it names."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _save(form, save):
    """Validate ``form``, then ``save(cleaned_data)``; errors land on the form."""
    if not form.is_valid():
        return None
    try:
        return save(dict(form.cleaned_data))
    except ValidationError as exc:
        _form_errors(form, exc)
    except services.CMDBError as exc:
        form.add_error(None, str(exc))
    return None


def _history(obj, limit=50):
    return AuditEvent.objects.filter(
        object_type=obj._meta.label_lower, object_id=str(obj.pk)
    ).select_related("actor")[:limit]


# --- hosts ----------------------------------------------------------------------------


@role_required(*READERS)
def index(request):
    """The host list: search, selector, environment and state filters, sort, pages.
    htmx requests (typing in the filters) get only the results region."""
    params = request.GET
    selector_text = params.get("selector", "").strip()
    selector_error = None
    hosts = Host.objects.select_related("environment").prefetch_related(
        Prefetch("groups", queryset=Group.objects.only("id", "name")))
    try:
        hosts = selectors.resolve(selector_text, include_disabled=True, queryset=hosts)
    except selectors.SelectorError as exc:
        selector_error = exc
        hosts = hosts.none()
    if q := params.get("q", "").strip():
        hosts = hosts.filter(Q(name__icontains=q) | Q(address__icontains=q)
                             | Q(description__icontains=q) | Q(owner_team__icontains=q))
    if env := params.get("env"):
        hosts = hosts.filter(environment__name=env)
    if state := STATES.get(params.get("state", "")):
        hosts = hosts.filter(state)
    sort = params.get("sort") if params.get("sort") in SORTS else "name"
    hosts = hosts.order_by(SORTS[sort], "name")
    page = Paginator(hosts, PAGE_SIZE).get_page(params.get("page"))
    query = params.copy()
    query.pop("page", None)
    context = {
        "page": page, "selector": selector_text, "selector_error": selector_error,
        "q": q, "env": env, "state": params.get("state", ""), "sort": sort,
        "query": query.urlencode(), "environments": Environment.objects.all(),
        "can_edit": services.can_edit(request.user),
        "bulk_form": BulkLabelsForm(),
    }
    template = "cmdb/host_list.html"
    if request.htmx and not request.htmx.boosted:
        template += "#results"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@role_required(*READERS)
def selector_preview(request):
    """A live count and the first names a selector matches (htmx, as you type)."""
    text = request.GET.get("selector", "").strip()
    try:
        hosts = selectors.resolve(text)
        context = {"count": hosts.count(), "names": list(hosts.values_list("name", flat=True)[:10])}
    except selectors.SelectorError as exc:
        context = {"error": exc, "text": text}
    return render(request, "cmdb/partials/selector_preview.html", context)


def _host_or_404(name):
    return get_object_or_404(
        Host.objects.select_related("environment", "credential").prefetch_related(
            "groups", "services", "host_keys__trusted_by"), name=name)


def _host_page(request, host, trust_form=None):
    return render(request, "cmdb/host_detail.html", {
        "host": host, "history": _history(host),
        "can_edit": services.can_edit(request.user),
        "can_admin": services.can_admin(request.user),
        "trust_form": trust_form or TrustKeyForm(),
    })


@role_required(*READERS)
def host_detail(request, name):
    return _host_page(request, _host_or_404(name))


@role_required(Role.OPERATOR)
def host_edit(request, name=None):
    host = _host_or_404(name) if name else Host(environment=Environment.objects.first())
    form = HostForm(request.POST or None, instance=Host.objects.get(pk=host.pk)
                    if host.pk else None, initial={} if host.pk else {
                        "environment": host.environment_id})
    if request.method == "POST":
        saved = _save(form, lambda data: services.save_host(host, data, by=request.user,
                                                             request=request))
        if saved:
            messages.success(request, _("Host %(name)s saved.") % {"name": saved.name})
            return redirect("cmdb:host", name=saved.name)
    return render(request, "cmdb/host_form.html", {"form": form, "host": host})


@role_required(Role.OPERATOR)
@require_POST
def host_delete(request, name):
    host = _host_or_404(name)
    services.delete_host(host, by=request.user, request=request)
    messages.success(request, _("Host %(name)s deleted.") % {"name": name})
    return redirect("cmdb:index")


@role_required(Role.OPERATOR)
@require_POST
def host_trust_key(request, name):
    host = _host_or_404(name)
    form = TrustKeyForm(request.POST)
    if form.is_valid():
        try:
            typed = form.cleaned_data["key"]
            # An empty field pins what the host presents now: say so in its history.
            source = HostKey.Source.MANUAL if typed else HostKey.Source.FIRST_CONTACT
            key = typed or services.fetch_presented_key(host)
            pinned = services.trust_host_key(host, key, by=request.user, request=request,
                                             source=source)
        except ValidationError as exc:
            form.add_error("key", exc.messages)
        except services.CMDBError as exc:
            form.add_error("key", str(exc))
        else:
            messages.success(request, _("Pinned host key %(fp)s for %(host)s.")
                             % {"fp": pinned.fingerprint, "host": host.name})
            return redirect("cmdb:host", name=host.name)
    # The error next to the field, and the pasted key still in it.
    return _host_page(request, host, trust_form=form)


@role_required(Role.ADMIN)
@require_POST
def host_retrust_key(request, name):
    host = _host_or_404(name)
    try:
        services.retrust_host_key(host, by=request.user, request=request)
        messages.success(request, _("The new host key of %(host)s is trusted.")
                         % {"host": host.name})
    except services.CMDBError as exc:
        messages.error(request, str(exc))
    return redirect("cmdb:host", name=host.name)


@role_required(Role.OPERATOR)
@require_POST
def host_gather_facts(request, name):
    host = _host_or_404(name)
    services.queue_fact_gathering(Host.objects.filter(pk=host.pk), by=request.user)
    messages.info(request, _("Gathering facts from %(host)s; reload in a few seconds.")
                  % {"host": host.name})
    return redirect("cmdb:host", name=host.name)


@role_required(Role.OPERATOR)
@require_POST
def gather_facts_for_selector(request):
    """Gather facts from every enabled host the list's selector matches."""
    text = request.POST.get("selector", "")
    try:
        queued = services.queue_fact_gathering(selectors.resolve(text), by=request.user)
    except selectors.SelectorError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, _("Gathering facts from %(n)d hosts.") % {"n": queued})
    return redirect(f"{reverse('cmdb:index')}?{urlencode({'selector': text})}")


@role_required(Role.OPERATOR)
@require_POST
def bulk_labels(request):
    form = BulkLabelsForm(request.POST)
    if form.is_valid():
        hosts = Host.objects.filter(pk__in=[h.pk for h in form.cleaned_data["hosts"]])
        try:
            changed = services.bulk_edit_labels(
                hosts, set_labels=form.cleaned_data["set_labels"],
                remove_keys=form.cleaned_data["remove_keys"], by=request.user,
                request=request)
            messages.success(request, _("Labels changed on %(n)d hosts.") % {"n": changed})
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    else:
        messages.error(request, _("Select hosts and say which labels to set or remove."))
    return redirect(request.POST.get("next") or reverse("cmdb:index"))


# --- groups, services, environments, credentials ---------------------------------------


@role_required(*READERS)
def group_list(request):
    groups = Group.objects.annotate(host_count=Count("hosts")).prefetch_related("parents")
    return render(request, "cmdb/group_list.html", {
        "groups": groups, "can_edit": services.can_edit(request.user)})


@role_required(*READERS)
def group_detail(request, name):
    group = get_object_or_404(Group.objects.prefetch_related("parents", "children"), name=name)
    hosts = selectors.resolve(f"group={selectors.quote(name)}", include_disabled=True)
    return render(request, "cmdb/group_detail.html", {
        "group": group, "hosts": hosts.select_related("environment")[:200],
        "host_count": hosts.count(), "history": _history(group),
        "can_edit": services.can_edit(request.user)})


@role_required(Role.OPERATOR)
def group_edit(request, name=None):
    group = get_object_or_404(Group, name=name) if name else Group()
    form = GroupForm(request.POST or None,
                     instance=Group.objects.get(pk=group.pk) if group.pk else None)
    if request.method == "POST":
        saved = _save(form, lambda data: services.save_group(group, data, by=request.user,
                                                              request=request))
        if saved:
            messages.success(request, _("Group %(name)s saved.") % {"name": saved.name})
            return redirect("cmdb:group", name=saved.name)
    return render(request, "cmdb/object_form.html", {
        "form": form, "object": group, "kind": _("group"),
        "cancel": reverse("cmdb:group", args=[group.name]) if group.pk
        else reverse("cmdb:groups")})


@role_required(*READERS)
def service_list(request):
    items = Service.objects.annotate(host_count=Count("hosts"))
    return render(request, "cmdb/service_list.html", {
        "services": items, "can_edit": services.can_edit(request.user)})


@role_required(*READERS)
def service_detail(request, name):
    service = get_object_or_404(Service, name=name)
    return render(request, "cmdb/service_detail.html", {
        "service": service, "hosts": service.hosts.select_related("environment"),
        "history": _history(service), "can_edit": services.can_edit(request.user)})


@role_required(Role.OPERATOR)
def service_edit(request, name=None):
    service = get_object_or_404(Service, name=name) if name else Service()
    form = ServiceForm(request.POST or None,
                       instance=Service.objects.get(pk=service.pk) if service.pk else None)
    if request.method == "POST":
        saved = _save(form, lambda data: services.save_service(service, data, by=request.user,
                                                                request=request))
        if saved:
            messages.success(request, _("Service %(name)s saved.") % {"name": saved.name})
            return redirect("cmdb:service", name=saved.name)
    return render(request, "cmdb/object_form.html", {
        "form": form, "object": service, "kind": _("service"),
        "cancel": reverse("cmdb:services")})


@role_required(*READERS)
def environment_list(request):
    environments = Environment.objects.annotate(host_count=Count("hosts"))
    return render(request, "cmdb/environment_list.html", {
        "environments": environments, "can_admin": services.can_admin(request.user)})


@role_required(Role.ADMIN)
def environment_edit(request, name=None):
    environment = get_object_or_404(Environment, name=name) if name else Environment()
    form = EnvironmentForm(request.POST or None, instance=Environment.objects.get(
        pk=environment.pk) if environment.pk else None)
    if request.method == "POST":
        saved = _save(form, lambda data: services.save_environment(
            environment, data, by=request.user, request=request))
        if saved:
            messages.success(request, _("Environment %(name)s saved.") % {"name": saved.name})
            return redirect("cmdb:environments")
    return render(request, "cmdb/object_form.html", {
        "form": form, "object": environment, "kind": _("environment"),
        "cancel": reverse("cmdb:environments")})


@role_required(Role.ADMIN)
def credential_list(request):
    credentials = Credential.objects.annotate(host_count=Count("hosts"))
    return render(request, "cmdb/credential_list.html", {"credentials": credentials})


@role_required(Role.ADMIN)
def credential_edit(request, name=None):
    credential = get_object_or_404(Credential, name=name) if name else Credential()
    form = CredentialForm(request.POST or None, instance=Credential.objects.get(
        pk=credential.pk) if credential.pk else None)
    if request.method == "POST":
        def save(data):
            secrets = {k: data.pop(k) or None for k in ("private_key", "passphrase", "password")}
            return services.save_credential(credential, data, **secrets, by=request.user,
                                            request=request)

        saved = _save(form, save)
        if saved:
            messages.success(request, _("Credential %(name)s saved.") % {"name": saved.name})
            return redirect("cmdb:credentials")
    return render(request, "cmdb/credential_form.html", {"form": form,
                                                         "credential": credential})


@role_required(Role.ADMIN)
@require_POST
def credential_delete(request, name):
    credential = get_object_or_404(Credential, name=name)
    try:
        services.delete_credential(credential, by=request.user, request=request)
        messages.success(request, _("Credential %(name)s deleted.") % {"name": name})
    except services.CMDBError as exc:
        messages.error(request, str(exc))
    return redirect("cmdb:credentials")



@role_required(Role.OPERATOR)
def known_hosts_import(request):
    """Pin host keys from a known_hosts file (pasted or uploaded)."""
    form = KnownHostsForm(request.POST or None, request.FILES or None)
    report = None
    if request.method == "POST" and form.is_valid():
        report = services.import_known_hosts(form.text(), by=request.user, request=request)
    return render(request, "cmdb/known_hosts.html", {"form": form, "report": report})


IMPORT_TTL = 30 * 60


@role_required(Role.OPERATOR)
def inventory_import(request):
    """Two steps: upload and see the plan (what would be created, updated, unchanged,
    and every error with its line), then apply exactly that file. The file waits in the
    cache between the steps, tied to this user."""
    from cmdb import inventory

    form = InventoryImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and "apply" in request.POST:
        stash = cache.get(_import_key(request, request.POST.get("token", "")))
        if stash is None:
            messages.error(request, _("That preview expired; upload the file again."))
            return redirect("cmdb:import")
        environment = get_object_or_404(Environment, name=stash["environment"])
        plan = inventory.plan_import(stash["text"], stash["format"], environment=environment)
        try:
            summary = inventory.apply_import(plan, by=request.user, request=request)
        except services.CMDBError as exc:
            messages.error(request, str(exc))
            return redirect("cmdb:import")
        cache.delete(_import_key(request, request.POST["token"]))
        messages.success(request, _("Imported: %(create)d hosts created, %(update)d updated, "
                                    "%(unchanged)d unchanged.") % summary["hosts"])
        return redirect("cmdb:index")
    plan = token = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        plan = inventory.plan_import(data["content"], data["format"],
                                     environment=data["environment"])
        if not plan.errors and plan.has_changes:
            token = get_random_string(24)
            cache.set(_import_key(request, token), {
                "text": data["content"], "format": data["format"],
                "environment": data["environment"].name}, IMPORT_TTL)
    return render(request, "cmdb/import.html", {
        "form": form, "plan": plan, "token": token,
        "changed": [item for item in (plan.hosts + plan.groups if plan else [])
                    if item.action != "unchanged"][:500]})


def _import_key(request, token):
    return f"cmdb:import:{request.user.pk}:{token}"


@role_required(*READERS)
def inventory_export(request):
    """The hosts a selector matches as an Ansible YAML inventory, Prometheus file_sd
    JSON or CSV."""
    from cmdb import inventory

    try:
        hosts = selectors.resolve(request.GET.get("selector", ""), include_disabled=True)
        text, content_type, filename = inventory.export(request.GET.get("format", "ansible"),
                                                       hosts)
    except (selectors.SelectorError, ValueError) as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = HttpResponse(text, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
