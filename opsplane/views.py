import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from opsplane import metrics, services, startup, tokens
from opsplane.forms import ApiTokenForm
from opsplane.models import ApiToken
from opsplane.roles import Role, role_required, roles_of

logger = logging.getLogger(__name__)


def home(request):
    return render(request, "opsplane/home.html", {"roles": sorted(roles_of(request.user))})


# --- probes --------------------------------------------------------------------------


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers. It checks nothing else, so a database outage
    does not get every web process restarted."""
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def readyz(request):
    """Readiness: the database and Redis answer. 503 names what is down; the details
    (which may name hosts) go to the log, not to an unauthenticated caller."""
    checks = {}
    for name, check in (("database", startup.check_database), ("redis", startup.check_redis)):
        try:
            check()
        except startup.StartupError as exc:
            logger.warning("readyz: %s", exc)
            checks[name] = {"ok": False, "error": str(exc).split(":", 1)[0] + " unreachable"}
        else:
            checks[name] = {"ok": True}
    down = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "ok" if not down else "unavailable", "down": down, "checks": checks}
    return JsonResponse(body, status=503 if down else 200)


@login_not_required
@never_cache
@require_GET
def metrics_view(request):
    """Prometheus exposition. With ``OPSPLANE_METRICS_TOKEN`` set, scrapers must send it
    as a bearer token (``authorization`` in Prometheus' scrape config)."""
    expected = settings.OPSPLANE_METRICS_TOKEN
    if expected:
        import hmac

        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return HttpResponse("metrics token required\n", status=401,
                                content_type="text/plain")
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)


# --- system status (admins) ----------------------------------------------------------


@role_required(Role.ADMIN)
def system_status(request):
    return render(request, "opsplane/system_status.html", services.system_status())


# --- API tokens -------------------------------------------------------------------------


def token_list(request):
    form = ApiTokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            token, created = tokens.create_token(
                request.user, form.cleaned_data["name"], by=request.user,
                expires_at=form.cleaned_data["expires_at"], request=request,
            )
        except tokens.TokenError as exc:
            form.add_error(exc.field, str(exc))
        else:
            form = ApiTokenForm()
    user_tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "opsplane/token_list.html", {
        "form": form, "created": created, "tokens": user_tokens, "now": timezone.now(),
    })


@require_POST
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    try:
        if tokens.revoke_token(token, by=request.user, request=request):
            messages.success(request, _("Token “%(name)s” revoked.") % {"name": token.name})
    except tokens.TokenError as exc:
        messages.error(request, str(exc))
    return redirect("opsplane:tokens")
