"""Pages of the notification layer: channels (admins edit, operators and on-call read),
the outbox and each notification's attempts. Thin: parse, call ``services``, render."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from opsplane.notify import render as templates
from opsplane.notify import services
from opsplane.notify.forms import ChannelForm, KindForm
from opsplane.notify.models import Channel, Notification

S = Notification.State
PAGE_SIZE = 50


def _viewer(request):
    if not services.can_view(request.user):
        raise PermissionDenied


def _manager(request):
    if not services.can_manage(request.user):
        raise PermissionDenied


def channel_list(request):
    _viewer(request)
    channels = Channel.objects.annotate(
        waiting=Count("notifications", filter=Q(notifications__state__in=[
            S.PENDING, S.SENDING, S.FAILED, S.HELD])),
        dead=Count("notifications", filter=Q(notifications__state=S.DEAD)),
    )
    return render(request, "notify/channel_list.html", {
        "channels": channels, "kind_form": KindForm(),
        "can_manage": services.can_manage(request.user),
    })


def channel_detail(request, name):
    _viewer(request)
    channel = get_object_or_404(Channel, name=name)
    recent = channel.notifications.all()[:PAGE_SIZE]
    return render(request, "notify/channel_detail.html", {
        "channel": channel, "notifications": recent,
        "can_manage": services.can_manage(request.user),
    })


def _form_errors(form, exc):
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _preview(kind, form):
    """The preview of what the form's template and settings would send (no save)."""
    template_text = form.data.get("template", "")
    try:
        config = form.config() if form.is_valid() else {}
        return services.preview(kind, template_text, config=config)
    except templates.TemplateError as exc:
        return {"error": str(exc)}


def channel_edit(request, name=None):
    """Create (``?kind=`` chooses the kind first) or edit a channel. The "Preview"
    button renders the template without saving (htmx swaps in only the preview)."""
    _manager(request)
    channel = get_object_or_404(Channel, name=name) if name else Channel()
    kind = channel.kind if name else request.GET.get("kind") or request.POST.get("kind")
    if kind not in Channel.Kind.values:
        return render(request, "notify/channel_kind.html", {"kind_form": KindForm()})
    form = ChannelForm(request.POST or None, kind=kind,
                       instance=Channel.objects.get(pk=channel.pk) if channel.pk else None)
    preview = None
    if request.method == "POST" and "preview" in request.POST:
        preview = _preview(kind, form)
        if request.htmx:
            return render(request, "notify/partials/preview.html", {"preview": preview})
    elif request.method == "POST" and form.is_valid():
        try:
            saved = services.save_channel(
                channel, {"kind": kind, **form.model_data(), "config": form.config()},
                secret_fields=form.secrets(), clear=form.cleared(), by=request.user,
                request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Channel %(name)s saved.") % {"name": saved.name})
            return redirect("notify:channel", saved.name)
    return render(request, "notify/channel_form.html", {
        "form": form, "channel": channel, "kind": kind,
        "kind_label": Channel.Kind(kind).label, "preview": preview,
    })


@require_POST
def channel_test(request, name):
    channel = get_object_or_404(Channel, name=name)
    try:
        row = services.send_test(channel, by=request.user, request=request)
    except services.NotifyError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Test message queued (notification #%(id)s).")
                         % {"id": row.pk})
    return redirect("notify:channel", channel.name)


@require_POST
def channel_delete(request, name):
    channel = get_object_or_404(Channel, name=name)
    try:
        services.delete_channel(channel, by=request.user, request=request)
    except services.NotifyError as exc:
        messages.error(request, str(exc))
        return redirect("notify:channel", channel.name)
    messages.success(request, _("Channel %(name)s deleted.") % {"name": name})
    return redirect("notify:channels")


def notification_list(request):
    _viewer(request)
    rows = Notification.objects.select_related("channel")
    state = request.GET.get("state", "")
    if state in S.values:
        rows = rows.filter(state=state)
    channel = request.GET.get("channel", "")
    if channel:
        rows = rows.filter(channel__name=channel)
    if ref := request.GET.get("ref", "").strip():
        rows = rows.filter(ref=ref)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "notify/notification_list.html", {
        "page": page, "state": state, "channel": channel, "ref": ref,
        "states": S.choices, "query": query.urlencode(),
    })


def notification_detail(request, pk):
    _viewer(request)
    row = get_object_or_404(Notification.objects.select_related("channel", "digest"), pk=pk)
    return render(request, "notify/notification_detail.html", {
        "notification": row, "attempts": row.attempt_set.all(),
        "folded": row.folded.all()[:200] if row.is_digest else [],
        "can_manage": services.can_manage(request.user),
    })


@require_POST
def notification_retry(request, pk):
    row = get_object_or_404(Notification, pk=pk)
    try:
        services.retry(row, by=request.user, request=request)
    except services.NotifyError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Notification #%(id)s queued again.") % {"id": row.pk})
    return redirect("notify:notification", row.pk)
