"""Escalation pages: policies (admins edit, on-call staff and operators read), a
person's on-call contact, and the signed one-click links of escalation messages.
Thin: the rules are in ``alerts.escalation`` and ``alerts.incidents``."""

import logging

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from alerts import escalation
from alerts import incidents as actions
from alerts.escalation_forms import ContactForm, PolicyForm, StepFormSet, initial_steps
from alerts.models import EscalationPolicy, Incident, OnCallContact
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, role_required

logger = logging.getLogger(__name__)
VIEWERS = (Role.ONCALL, Role.OPERATOR)


# --- policies ----------------------------------------------------------------------------------


@role_required(*VIEWERS)
def policy_list(request):
    policies = EscalationPolicy.objects.annotate(n_steps=Count("steps", distinct=True)) \
        .prefetch_related("steps__schedule", "steps__user", "steps__group", "steps__channel",
                          "integrations")
    return render(request, "alerts/escalation_list.html", {
        "policies": policies, "can_admin": escalation.can_admin(request.user)})


@role_required(*VIEWERS)
def policy_edit(request, pk=None):
    """A policy and its steps; admins edit (htmx: the form comes back with its errors
    in place), others read."""
    policy = get_object_or_404(EscalationPolicy, pk=pk) if pk else EscalationPolicy()
    can_admin = escalation.can_admin(request.user)
    if (pk is None or request.method == "POST") and not can_admin:
        raise PermissionDenied
    form = PolicyForm(request.POST or None, instance=policy)
    steps = StepFormSet(request.POST or None, prefix="steps", initial=initial_steps(policy))
    step_errors = []
    if request.method == "POST" and form.is_valid() and steps.is_valid():
        chosen = [s for s in (f.step() for f in steps.forms) if s is not None]
        try:
            escalation.save_policy(policy, form.cleaned_data, chosen, by=request.user,
                                   request=request)
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                if name == "steps":
                    step_errors.extend(errors)
                else:
                    form.add_error(name if name in form.fields else None, errors)
        else:
            messages.success(request, _("Escalation policy %(name)s saved.")
                             % {"name": policy.name})
            if request.htmx:
                return HttpResponseClientRedirect(policy_url(policy))
            return redirect("alerts:escalation_policy", pk=policy.pk)
    template = "alerts/escalation_form.html"
    if request.htmx and not request.htmx.boosted:
        template += "#policy-form"
    response = render(request, template, {
        "policy": policy, "form": form, "steps": steps, "step_errors": step_errors,
        "can_admin": can_admin,
        "routes": [path for path, name in _tree_refs() if policy.pk and name == policy.name]})
    patch_vary_headers(response, ["HX-Request"])
    return response


def policy_url(policy):
    from django.urls import reverse

    return reverse("alerts:escalation_policy", args=[policy.pk])


def _tree_refs():
    from alerts.routing_state import current_tree

    return getattr(current_tree(), "escalation_refs", [])


@require_POST
@role_required(Role.ADMIN)
def policy_delete(request, pk):
    policy = get_object_or_404(EscalationPolicy, pk=pk)
    escalation.delete_policy(policy, by=request.user, request=request)
    messages.success(request, _("Escalation policy %(name)s deleted.") % {"name": policy.name})
    return redirect("alerts:escalation_policies")


# --- contacts ----------------------------------------------------------------------------------


@role_required(*VIEWERS)
def contact_edit(request):
    """How escalation reaches you (admins: anyone, with ``?user=<username>``)."""
    user = request.user
    if request.GET.get("user") and request.GET["user"] != user.get_username():
        if not has_role(request.user, Role.ADMIN):
            raise PermissionDenied
        user = get_object_or_404(get_user_model(), username=request.GET["user"])
    contact = OnCallContact.objects.filter(user=user).first() or OnCallContact(user=user)
    form = ContactForm(request.POST or None, instance=contact,
                       initial={"channels": list(contact.channels.all()) if contact.pk else []})
    if request.method == "POST" and form.is_valid():
        try:
            escalation.save_contact(user, form.cleaned_data, form.cleaned_data["channels"],
                                    by=request.user, request=request)
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            messages.success(request, _("Contact saved."))
            return redirect(request.get_full_path())
    return render(request, "alerts/escalation_contact.html", {"form": form, "person": user})


# --- signed one-click links ----------------------------------------------------------------------


def _refuse(request, status, reason):
    response = render(request, "alerts/ack_link_refused.html", {"reason": reason},
                      status=status)
    # Django would log the path, and the path is the link's signature.
    response._has_been_logged = True
    return response


def _csrf_refusal(request):
    """The CSRF check for a link without a person in it (it acts as whoever is logged
    in, so it needs the usual protection)."""
    return CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})


@login_not_required
@csrf_exempt
@never_cache
def incident_link(request, token):
    """A one-click link from an escalation message. GET only shows what it would do (so a
    chat's link preview changes nothing); the button POSTs. The signature names the
    incident, the escalation cycle, the person and the action, and expires
    (``OPSPLANE_ACK_LINK_MAX_AGE``). A link of an earlier cycle is refused; following a
    link again changes nothing and says so."""
    try:
        data = escalation.load_link(token)
    except signing.SignatureExpired:
        return _refuse(request, 403, _("This link has expired. Open the incident to act on "
                                       "it."))
    except signing.BadSignature:
        return _refuse(request, 400, _("This link is not valid (it was changed or cut "
                                       "short)."))
    incident = Incident.objects.filter(pk=data["i"]).select_related("acknowledged_by").first()
    if incident is None:
        return _refuse(request, 404, _("This incident no longer exists."))
    if data["u"] is None:  # a link posted to a channel: whoever is logged in
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        user = request.user
        if request.method == "POST":
            refusal = _csrf_refusal(request)
            if refusal is not None:
                return refusal
    else:
        user = get_user_model().objects.filter(pk=data["u"], is_active=True).first()
        if user is None:
            return _refuse(request, 403, _("This link's person cannot act any more."))
    action = data["a"]
    context = {"incident": incident, "action": action, "person": user, "done": "",
               "error": "", "personal": data["u"] is not None}
    if incident.status == Incident.Status.RESOLVED:
        context["done"] = _("Incident #%(id)s is already resolved; nothing changed.") % {
            "id": incident.pk}
        return render(request, "alerts/ack_link.html", context)
    if action == "acknowledge" and incident.status == Incident.Status.ACKNOWLEDGED:
        context["done"] = _("Incident #%(id)s is already acknowledged by %(who)s; nothing "
                            "changed.") % {"id": incident.pk,
                                           "who": incident.acknowledged_by or _("someone")}
        return render(request, "alerts/ack_link.html", context)
    if data["c"] != incident.escalation_cycle:
        return _refuse(request, 403, _("This link belongs to an earlier escalation of "
                                       "incident #%(id)s. Use the newest message, or open "
                                       "the incident.") % {"id": incident.pk})
    if request.method == "POST":
        try:
            actions.ACTIONS[action](incident, user, via="link", request=request)
        except actions.AlreadyDone as exc:
            context["done"] = str(exc)
        except PermissionDenied:
            return _refuse(request, 403, _("Your role does not allow this."))
        except DomainError as exc:
            context["error"] = str(exc)
        else:
            context["done"] = (_("Incident #%(id)s acknowledged. Escalation has stopped.")
                               if action == "acknowledge" else
                               _("Incident #%(id)s resolved.")) % {"id": incident.pk}
            context["changed"] = True
    return render(request, "alerts/ack_link.html", context)
