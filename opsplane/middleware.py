from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Every page needs a login (Django's middleware), except the API, where DRF
    authenticates each request itself (tokens or session) and answers 401/403 in JSON
    instead of redirecting a script to a login form. Open pages are marked with
    ``@login_not_required``."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
