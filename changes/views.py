"""Change pages. Thin: parse the request, call ``changes.services``, render."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from changes import display, output, services
from changes.forms import ChangeForm, RunbookForm
from changes.models import Change, HostResult, Run, Runbook, RunOutput
from opsplane.errors import DomainError
from opsplane.roles import Role, role_required

VIEWERS = (Role.OPERATOR, Role.APPROVER, Role.ONCALL)


def _form_errors(form, exc):
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


# --- runbooks ---------------------------------------------------------------------------


@role_required(*VIEWERS)
def runbook_list(request):
    items = Runbook.objects.filter(archived=False).annotate(version_count=Count("versions"))
    return render(request, "changes/runbook_list.html", {
        "runbooks": items, "can_operate": services.can_operate(request.user)})


@role_required(*VIEWERS)
def runbook_detail(request, name):
    runbook = get_object_or_404(Runbook, name=name)
    versions = runbook.versions.select_related("created_by")
    return render(request, "changes/runbook_detail.html", {
        "runbook": runbook, "version": versions.first(), "versions": versions,
        "can_operate": services.can_operate(request.user)})


@role_required(Role.OPERATOR)
def runbook_edit(request, name=None):
    runbook = get_object_or_404(Runbook, name=name) if name else Runbook()
    form = RunbookForm.for_runbook(runbook, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.save_runbook(runbook, by=request.user, request=request,
                                  **form.cleaned_data)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Runbook %(name)s saved.") % {"name": runbook.name})
            return redirect("changes:runbook", name=runbook.name)
    return render(request, "changes/runbook_form.html", {"form": form, "runbook": runbook})


# --- changes -------------------------------------------------------------------------------


@role_required(*VIEWERS)
def index(request):
    changes = Change.objects.select_related("author", "runbook_version__runbook")
    status = request.GET.get("status", "")
    if status in Change.Status.values:
        changes = changes.filter(status=status)
    if q := request.GET.get("q", "").strip():
        changes = changes.filter(Q(title__icontains=q) | Q(selector__icontains=q))
    if request.GET.get("mine"):
        changes = changes.filter(author=request.user)
    page = Paginator(changes, 50).get_page(request.GET.get("page"))
    statuses = display.display_statuses(page.object_list)
    for change in page.object_list:
        change.display = statuses[change.pk]
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "changes/change_list.html", {
        "page": page, "status": status, "q": q, "mine": request.GET.get("mine", ""),
        "statuses": Change.Status.choices, "query": query.urlencode(),
        "can_operate": services.can_operate(request.user)})


@role_required(Role.OPERATOR)
def change_edit(request, pk=None):
    """Compose a change (or edit one not yet running). Picking a runbook reloads the
    parameter fields (htmx swaps just that region)."""
    change = get_object_or_404(Change, pk=pk) if pk else None
    runbook_name = request.POST.get("runbook") or request.GET.get("runbook") or (
        change.runbook_version.runbook.name if change else "")
    runbook = Runbook.objects.filter(name=runbook_name).first()
    parameters = runbook.latest.parameters if runbook and runbook.latest else []
    initial = {}
    if change is not None:
        initial = {"title": change.title, "description": change.description,
                   "runbook": runbook_name, "selector": change.selector,
                   "scheduled_at": change.scheduled_at, **change.strategy,
                   "batches": ", ".join(change.strategy.get("batches", [])),
                   **{f"param_{k}": v for k, v in change.params.items()}}
    else:
        initial = {"runbook": runbook_name, "selector": request.GET.get("selector", "")}
    form = ChangeForm(request.POST or None, initial=initial, parameters=parameters)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.compose_change(by=request.user, request=request, change=change,
                                            **form.service_kwargs())
            if saved.status == Change.Status.DRAFT:
                services.submit_change(saved, by=request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, _("Change %(change)s saved.") % {"change": saved})
            return redirect("changes:change", pk=saved.pk)
    template = "changes/change_form.html"
    if request.htmx and request.htmx.target == "params":
        template += "#params"
    response = render(request, template, {"form": form, "change": change})
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _change_or_404(request, pk):
    change = get_object_or_404(
        Change.objects.select_related("author", "runbook_version__runbook"), pk=pk)
    if not services.can_view(request.user, change):
        raise PermissionDenied
    return change


@role_required(*VIEWERS)
def change_detail(request, pk):
    change = _change_or_404(request, pk)
    runs = change.runs.annotate(
        ok=Count("results", filter=Q(results__state=HostResult.State.OK)),
        bad=Count("results", filter=Q(results__state__in=[
            HostResult.State.FAILED, HostResult.State.UNREACHABLE, HostResult.State.UNKNOWN])),
        total=Count("results"))
    version = change.runbook_version
    secret_names = [p["name"] for p in version.parameters if p["secret"]]
    return render(request, "changes/change_detail.html", {
        "change": change, "display": display.display_status(change), "runs": runs,
        "version": version, "secret_names": secret_names,
        "targets": change.targets.select_related("environment"),
        "can_operate": services.can_operate(request.user),
        "environments": sorted(set(change.targets.values_list("environment__name",
                                                              flat=True))),
    })


def _action(request, pk, act, done_message):
    change = _change_or_404(request, pk)
    try:
        result = act(change)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("changes:change", pk=change.pk)
    messages.success(request, done_message)
    if isinstance(result, Run):
        return redirect("changes:run", pk=change.pk, number=result.number)
    return redirect("changes:change", pk=change.pk)


@role_required(Role.OPERATOR)
@require_POST
def change_start(request, pk):
    return _action(request, pk, lambda c: services.start_run(c, by=request.user,
                                                             request=request),
                   _("Run started."))


@role_required(Role.OPERATOR)
@require_POST
def change_cancel(request, pk):
    return _action(request, pk, lambda c: services.cancel_change(c, by=request.user,
                                                                 request=request),
                   _("Change cancelled."))


def _run_or_404(request, pk, number):
    change = _change_or_404(request, pk)
    return get_object_or_404(Run.objects.select_related("change", "started_by"),
                             change=change, number=number)


@role_required(*VIEWERS)
def run_detail(request, pk, number):
    """The run page: status and counts (the ``hosts`` partial htmx refreshes), a grid of
    every host, and the output viewer (``static/changes/run.js``), which reads the tail
    and the live events over ``ws/runs/<id>/`` and everything else page by page from
    ``run_output``: the page itself never carries output."""
    run = _run_or_404(request, pk, number)
    state = request.GET.get("state", "")
    counts = dict(run.results.values_list("state").annotate(n=Count("id")).order_by())
    done = sum(n for s, n in counts.items() if s in HostResult.DONE)
    total = sum(counts.values())
    context = {
        "run": run, "change": run.change, "state": state,
        "counts": [(s, label, counts.get(s, 0)) for s, label in HostResult.State.choices],
        "done": done, "total": total,
        "percent": int(done * 100 / total) if total else 100,
        "can_operate": services.can_operate(request.user),
    }
    if run.is_terminal:
        # The retry button names the hosts it would run on again (and is not offered
        # when every host finished ok).
        retry = list(run.results.filter(state__in=HostResult.RETRYABLE)
                     .order_by("host_name").values_list("host_name", flat=True))
        context.update(retry_count=len(retry), retry_names=", ".join(retry[:20])
                       + (", …" if len(retry) > 20 else ""))
    template = "changes/run_detail.html"
    if request.htmx and not request.htmx.boosted:
        template += "#hosts"
    else:
        context.update(
            hosts=run.results.order_by("host_name").values_list("host_name", "state"),
            last_seq=output.last_seq(run.pk),
            run_output=RunOutput.objects.filter(run=run).first(),
        )
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _int_param(request, name, default=None, minimum=0, maximum=None):
    value = request.GET.get(name, "")
    if value == "":
        return default
    number = int(value)  # ValueError: the caller answers 400
    if number < minimum:
        raise ValueError(name)
    return number if maximum is None else min(number, maximum)


@role_required(*VIEWERS)
def run_output(request, pk, number):
    """A page of a run's output as JSON, for the run page (scripts use the API's events).

    ``?after=<seq>``: events after it; ``?before=<seq>`` or neither: the tail before it;
    ``host`` keeps one host's events and adds its result; ``q`` searches lines instead
    (case-insensitive), from ``after``, answering ``matches`` and where to go on."""
    run = _run_or_404(request, pk, number)
    host = request.GET.get("host") or None
    try:
        after = _int_param(request, "after")
        before = _int_param(request, "before", minimum=1)
        limit = _int_param(request, "limit", 500, minimum=1, maximum=5000)
    except ValueError:
        return HttpResponseBadRequest("after, before and limit are whole numbers")
    body = {"last_seq": output.last_seq(run.pk)}
    if host is not None:
        result = get_object_or_404(run.results, host_name=host)
        body["host"] = {
            "name": result.host_name, "state": result.state,
            "state_label": result.get_state_display(), "exit_status": result.exit_status,
            "error_reason": result.error_reason, "error": result.error,
            "started_at": result.started_at, "finished_at": result.finished_at,
        }
    if q := request.GET.get("q", "").strip():
        matches, scanned_to, done = output.search(run.pk, q, after=after or 0, host=host,
                                                  limit=min(limit, 500))
        body.update(matches=matches, scanned_to=scanned_to, done=done)
    elif after is not None:
        body["events"] = output.read_after(run.pk, after, limit=limit, host=host)
    else:
        body["events"] = output.read_before(run.pk, before, limit=limit, host=host)
    return JsonResponse(body)


def _log_response(run, host, filename):
    """The whole stored log, streamed from the database (``output.alog_text``)."""
    response = StreamingHttpResponse(output.alog_text(run.pk, host),
                                     content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'{"attachment" if filename else "inline"}; ' \
        f'filename="{filename or "log.txt"}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@role_required(*VIEWERS)
def run_log(request, pk, number):
    """The whole run's output, every line prefixed with its host, as a download."""
    run = _run_or_404(request, pk, number)
    return _log_response(run, None, f"change-{run.change_id}-run-{run.number}.log")


@role_required(*VIEWERS)
def host_log(request, pk, number, host):
    """One host's output as plain text (``?download=1``: as a file)."""
    run = _run_or_404(request, pk, number)
    get_object_or_404(HostResult, run=run, host_name=host)
    filename = ""
    if request.GET.get("download"):
        filename = f"change-{run.change_id}-run-{run.number}-{host}.log"
    return _log_response(run, host, filename)


@role_required(Role.OPERATOR)
@require_POST
def run_cancel(request, pk, number):
    run = _run_or_404(request, pk, number)
    try:
        services.request_cancel(run, by=request.user, request=request)
        messages.info(request, _("Cancelling: no new host starts; running ones are stopped."))
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("changes:run", pk=pk, number=number)


@role_required(Role.OPERATOR)
@require_POST
def run_retry(request, pk, number):
    run = _run_or_404(request, pk, number)
    try:
        new = services.retry_run(run, by=request.user, request=request)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("changes:run", pk=pk, number=number)
    messages.success(request, _("Retrying %(n)d hosts.") % {"n": new.results.count()})
    return redirect("changes:run", pk=pk, number=new.number)
