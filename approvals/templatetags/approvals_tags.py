"""Template tags other apps' pages use to show a subject's approval, without the
approvals app knowing those apps: the subject is any model instance, identified by its
``app_label.model`` and primary key (as its owner opened the request)."""

from django import template

from approvals.models import ApprovalRequest

register = template.Library()


def _request_of(subject):
    return ApprovalRequest.objects.filter(subject_type=subject._meta.label_lower,
                                          subject_id=str(subject.pk)).first()


@register.simple_tag
def approval_request_for(subject):
    """``{% approval_request_for change as approval %}``: the request, or None."""
    return _request_of(subject)


@register.inclusion_tag("approvals/partials/request_panel.html", takes_context=True)
def approval_panel(context, subject):
    """``{% approval_panel change %}``: progress, decision buttons (htmx) and the
    timeline of the subject's request; nothing when it has none."""
    from approvals.views import panel_context

    request = context["request"]
    req = _request_of(subject)
    if req is None:
        return {"req": None}
    return {**panel_context(req, request.user, next_url=request.get_full_path()),
            "csrf_token": context.get("csrf_token"), "request": request, "show_link": True}


@register.simple_tag
def approval_subject_panels(approval):
    """``{% approval_subject_panels approval as urls %}``: the URLs of the panels the
    project shows beside the request's subject (``APPROVALS_SUBJECT_PANELS``), to load
    lazily; none without a request."""
    from approvals.views import subject_panels

    return subject_panels(approval) if approval is not None else []
