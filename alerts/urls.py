from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.index, name="index"),
    path("<int:pk>/", views.alert_detail, name="alert"),
    path("<int:pk>/silence/", views.alert_silence, name="alert_silence"),
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/<int:pk>/", views.incident_detail, name="incident"),
    path("incidents/<int:pk>/acknowledge/", views.incident_action,
         {"action": "acknowledge"}, name="incident_ack"),
    path("incidents/<int:pk>/unacknowledge/", views.incident_action,
         {"action": "unacknowledge"}, name="incident_unack"),
    path("routes/", views.routes, name="routes"),
    path("routes/import/", views.routes_import, name="routes_import"),
    path("routes/test/", views.routes_test, name="routes_test"),
    path("silences/", views.silence_list, name="silences"),
    path("silences/new/", views.silence_new, name="silence_new"),
    path("silences/<int:pk>/expire/", views.silence_expire, name="silence_expire"),
    path("integrations/", views.integration_list, name="integrations"),
    path("integrations/new/", views.integration_detail, name="integration_new"),
    path("integrations/<int:pk>/", views.integration_detail, name="integration"),
    path("integrations/<int:pk>/rotate/", views.integration_rotate, name="integration_rotate"),
]
