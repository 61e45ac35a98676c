"""Approval pages. Thin: parse the request, call ``approvals.services``, render.

The request panel (``approvals/partials/request_panel.html``) is one fragment used by
the inbox, the request page and the change page (``{% approval_panel %}``); deciding
through htmx swaps just that panel.
"""

import logging
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from approvals import policy_io, services, windows
from approvals.forms import DecisionForm, ImportForm, PolicyForm, ReasonForm, ReviewForm, WindowForm
from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    Decision,
    FreezeWindow,
    MaintenanceWindow,
)
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, role_required

logger = logging.getLogger(__name__)

PEOPLE = (Role.APPROVER, Role.OPERATOR)
READERS = (Role.APPROVER, Role.OPERATOR, Role.ONCALL)


def subject_panels(req):
    """URLs of the panels the project shows beside this kind of subject
    (``APPROVALS_SUBJECT_PANELS``: URL names, reversed with the subject's id). The pages
    load them lazily with htmx; approvals knows nothing of what they show."""
    urls = []
    for name in settings.APPROVALS_SUBJECT_PANELS.get(req.subject_type, []):
        try:
            urls.append(reverse(name, args=[req.subject_id]))
        except NoReverseMatch:
            logger.warning("APPROVALS_SUBJECT_PANELS: %r does not take a %s id", name,
                           req.subject_type)
    return urls


def panel_context(req, user, *, full=True, error="", next_url=""):
    """What the request panel shows ``user``: progress, who may do what, the timeline."""
    decisions = list(req.decisions.all())
    current = [d for d in decisions if d.round == req.round]
    refusal = services.decision_refusal(user, req, current)
    can_reject = not services.decision_refusal(user, req, current,
                                               kind=Decision.Kind.REJECT)
    # An approver asked again after an edit sees why the request is back.
    approved_earlier = req.status == ApprovalRequest.Status.PENDING and not any(
        d.by_id == user.pk for d in current) and any(
        d.by_id == user.pk and d.kind == Decision.Kind.APPROVE and d.digest != req.digest
        for d in decisions)
    emergency = services.has_emergency(req, current)
    return {
        "req": req,
        "approved_earlier": approved_earlier,
        "progress": services.progress(req, current),
        "timeline": services.timeline(req) if full else None,
        "can_decide": not refusal,
        "can_reject": can_reject,
        "refusal": refusal if req.status == ApprovalRequest.Status.PENDING and not can_reject
        else "",
        "can_withdraw": services.can_withdraw(user, req),
        "can_resubmit": services.can_resubmit(user, req),
        "can_emergency": services.can_emergency(user, req, current),
        "emergency": emergency,
        "full": full,
        "error": error,
        "next": next_url,
    }


def _render_panel(request, req, *, error=""):
    context = panel_context(req, request.user, error=error,
                            full=request.POST.get("full", "1") == "1",
                            next_url=request.POST.get("next", ""))
    response = render(request, "approvals/partials/request_panel.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _back(request, req):
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return redirect(target)
    return redirect("approvals:request", pk=req.pk)


def _error_text(exc):
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc) or _("Your role does not allow this.")


def _act(request, req, act, done):
    """Run ``act``; answer htmx with the refreshed panel, others with a redirect."""
    error = ""
    try:
        act()
    except (DomainError, ValidationError, PermissionDenied) as exc:
        error = _error_text(exc)
    req.refresh_from_db()
    if request.htmx and not request.htmx.boosted:
        return _render_panel(request, req, error=error)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return _back(request, req)


# --- inbox and requests ---------------------------------------------------------------------


@role_required(*PEOPLE)
def index(request):
    """The approver's inbox (oldest first, with the blast radius) and the user's own
    open requests."""
    inbox = services.inbox(request.user)
    mine = ApprovalRequest.objects.filter(author=request.user, status__in=[
        ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED],
        started_at__isnull=True).order_by("opened_at")
    cards = [{**panel_context(req, request.user, full=False), "panels": subject_panels(req)}
             for req in inbox]
    return render(request, "approvals/index.html", {
        "cards": cards, "mine": mine, "reviews": services.review_list().count()
        if has_role(request.user, Role.APPROVER) else 0})


@role_required(*PEOPLE)
def request_list(request):
    """Every request (approvers), or the user's own (operators)."""
    requests = ApprovalRequest.objects.select_related("author").order_by("-opened_at")
    if not services.can_see_all(request.user) or request.GET.get("mine"):
        requests = requests.filter(author=request.user)
    status = request.GET.get("status", "")
    if status in ApprovalRequest.Status.values:
        requests = requests.filter(status=status)
    page = Paginator(requests, 50).get_page(request.GET.get("page"))
    return render(request, "approvals/request_list.html", {
        "page": page, "status": status, "statuses": ApprovalRequest.Status.choices,
        "mine": request.GET.get("mine", ""), "can_see_all": services.can_see_all(request.user)})


@role_required(*PEOPLE)
def request_detail(request, pk):
    req = services.access_request(request.user, pk)
    return render(request, "approvals/request_detail.html", {
        **panel_context(req, request.user, next_url=request.get_full_path()),
        "panels": subject_panels(req),
        "emergency_form": ReasonForm(auto_id="emergency_%s"),
        "withdraw_form": ReasonForm(auto_id="withdraw_%s")})


@role_required(*PEOPLE)
@require_POST
def decide(request, pk):
    req = services.access_request(request.user, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        error = _("Choose approve, reject, ask for changes or comment.")
        if request.htmx:
            return _render_panel(request, req, error=error)
        messages.error(request, error)
        return _back(request, req)
    kind = form.cleaned_data["kind"]
    done = {"approve": _("Approved."), "reject": _("Rejected."),
            "request_changes": _("Changes asked for."), "comment": _("Comment added.")}[kind]
    return _act(request, req, lambda: services.decide(
        req, by=request.user, request=request, kind=kind,
        comment=form.cleaned_data["comment"]), done)


@role_required(*PEOPLE)
@require_POST
def withdraw(request, pk):
    req = services.access_request(request.user, pk)
    form = ReasonForm(request.POST)
    form.is_valid()
    return _act(request, req, lambda: services.withdraw(
        req, by=request.user, request=request, reason=form.cleaned_data.get("reason", "")),
        _("Request withdrawn."))


@role_required(*PEOPLE)
@require_POST
def resubmit(request, pk):
    req = services.access_request(request.user, pk)
    return _act(request, req, lambda: services.resubmit(req, by=request.user, request=request),
                _("Asked again."))


@role_required(*PEOPLE)
@require_POST
def emergency(request, pk):
    req = services.access_request(request.user, pk)
    form = ReasonForm(request.POST)
    form.is_valid()
    return _act(request, req, lambda: services.emergency_bypass(
        req, by=request.user, request=request, reason=form.cleaned_data.get("reason", "")),
        _("Emergency bypass recorded; it will be reviewed."))


# --- post-incident review -----------------------------------------------------------------------


@role_required(Role.APPROVER)
def review_list(request):
    return render(request, "approvals/review_list.html", {
        "bypasses": services.review_list(), "form": ReviewForm(),
        "reviewed": Decision.objects.filter(kind=Decision.Kind.EMERGENCY,
                                            reviewed_at__isnull=False)
        .select_related("request", "reviewed_by").order_by("-reviewed_at")[:20]})


@role_required(Role.APPROVER)
@require_POST
def review(request, pk):
    decision = get_object_or_404(Decision, pk=pk, kind=Decision.Kind.EMERGENCY)
    form = ReviewForm(request.POST)
    form.is_valid()
    try:
        services.review_bypass(decision, by=request.user, request=request,
                               note=form.cleaned_data.get("note", ""))
        messages.success(request, _("Review recorded."))
    except (DomainError, PermissionDenied) as exc:
        messages.error(request, _error_text(exc))
    return redirect("approvals:reviews")


# --- policies -------------------------------------------------------------------------------------


@role_required(*READERS)
def policy_list(request):
    return render(request, "approvals/policy_list.html", {
        "policies": ApprovalPolicy.objects.all(),
        "can_edit": services.can_edit_policies(request.user)})


def _form_errors(form, exc):
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@role_required(Role.ADMIN)
def policy_edit(request, name=None):
    policy = get_object_or_404(ApprovalPolicy, name=name) if name else ApprovalPolicy()
    form = PolicyForm.for_policy(policy, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.save_policy(policy, form.policy_data(), by=request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Policy %(name)s saved.") % {"name": policy.name})
            return redirect("approvals:policies")
    return render(request, "approvals/policy_form.html", {"form": form, "policy": policy})


@role_required(Role.ADMIN)
@require_POST
def policy_delete(request, name):
    policy = get_object_or_404(ApprovalPolicy, name=name)
    services.delete_policy(policy, by=request.user, request=request)
    messages.success(request, _("Policy %(name)s deleted.") % {"name": name})
    return redirect("approvals:policies")


@role_required(*READERS)
def policy_export(request):
    response = HttpResponse(services.export_policies(),
                            content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="approval-policies.yaml"'
    return response


@role_required(Role.ADMIN)
def policy_import(request):
    form = ImportForm(request.POST or None)
    errors = {}
    if request.method == "POST" and form.is_valid():
        try:
            created, updated, deleted = services.import_policies(
                form.cleaned_data["document"], by=request.user, request=request,
                prune=form.cleaned_data["prune"])
        except policy_io.PolicyFileError as exc:
            errors = exc.errors
        else:
            messages.success(request, _("Imported: %(c)d new, %(u)d updated, %(d)d deleted.")
                             % {"c": len(created), "u": len(updated), "d": len(deleted)})
            return redirect("approvals:policies")
    return render(request, "approvals/policy_import.html", {"form": form, "errors": errors})


# --- freeze and maintenance windows ---------------------------------------------------------------

WINDOW_MODELS = {"freezes": FreezeWindow, "maintenance": MaintenanceWindow}


@role_required(*READERS)
def window_list(request, kind):
    model = WINDOW_MODELS[kind]
    now = timezone.now()
    rows = [{"window": w, "open": windows.open_at(w, now) if w.enabled else None}
            for w in model.objects.all()]
    return render(request, "approvals/window_list.html", {
        "kind": kind, "rows": rows, "model": model._meta,
        "can_edit": services.can_edit_windows(request.user)})


@role_required(Role.ADMIN)
def window_edit(request, kind, pk=None):
    model = WINDOW_MODELS[kind]
    window = get_object_or_404(model, pk=pk) if pk else model()
    form = WindowForm.for_window(window, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.save_window(window, form.window_data(), by=request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("%(name)s saved.") % {"name": window.name})
            return redirect(f"approvals:{kind}")
    return render(request, "approvals/window_form.html", {
        "form": form, "window": window, "kind": kind, "model": model._meta})


@role_required(Role.ADMIN)
@require_POST
def window_delete(request, kind, pk):
    window = get_object_or_404(WINDOW_MODELS[kind], pk=pk)
    services.delete_window(window, by=request.user, request=request)
    messages.success(request, _("%(name)s deleted.") % {"name": window.name})
    return redirect(f"approvals:{kind}")


# --- calendar ---------------------------------------------------------------------------------


@role_required(*READERS)
def calendar(request):
    """Freezes, maintenance windows and scheduled changes over four weeks, day by day,
    in the site's time zone; scheduled changes that share hosts close together are
    flagged."""
    today = timezone.localdate()
    try:
        first = datetime.strptime(request.GET.get("start", ""), "%Y-%m-%d").date()
    except ValueError:
        first = today - timedelta(days=today.weekday())
    days = 28
    start = timezone.make_aware(datetime.combine(first, time.min))
    end = start + timedelta(days=days)
    data = services.calendar(start, end)
    by_day = {first + timedelta(days=i): [] for i in range(days)}
    for event in data["events"]:
        day = max(timezone.localdate(event["start"]), first)
        last = timezone.localdate(event["end"] - timedelta(microseconds=1)) \
            if event["end"] else day
        while day <= last and day in by_day:
            by_day[day].append(event)
            day += timedelta(days=1)
    return render(request, "approvals/calendar.html", {
        "days": list(by_day.items()), "conflicts": data["conflicts"], "first": first,
        "previous": first - timedelta(days=days), "next": first + timedelta(days=days),
        "today": today, "tz": timezone.get_current_timezone_name()})
