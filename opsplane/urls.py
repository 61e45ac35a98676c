from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from opsplane import api, views

opsplane_patterns = (
    [
        path("system/", views.system_status, name="status"),
        path("account/tokens/", views.token_list, name="tokens"),
        path("account/tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    ],
    "opsplane",
)

api_patterns = [
    path("me/", api.me, name="api-me"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("account/password/done/", auth_views.PasswordChangeDoneView.as_view(),
         name="password_change_done"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("", include(opsplane_patterns)),
    path("inventory/", include("cmdb.urls")),
    path("changes/", include("changes.urls")),
    path("approvals/", include("approvals.urls")),
    path("alerts/", include("alerts.urls")),
    path("oncall/", include("oncall.urls")),
    path("notifications/", include("opsplane.notify.urls")),
    path("api/v1/", include(api_patterns)),
    path("api/v1/", include("cmdb.api_urls")),
    path("api/v1/", include("changes.api_urls")),
    # Includes the alert intake (api/v1/alerts/intake/...), authenticated by integration
    # tokens: under /api/, so LoginRequiredMiddleware lets monitoring systems through.
    path("api/v1/", include("alerts.api_urls")),
    path("api/v1/", include("approvals.api_urls")),
    path("api/v1/", include("oncall.api_urls")),
    path("api/v1/notify/", include("opsplane.notify.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file, as our Content-Security-Policy wants.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"),
         name="api-docs"),
    path("admin/", admin.site.urls),
]
