from django.urls import path

from alerts import escalation_views, panels, views

app_name = "alerts"
urlpatterns = [
    path("", views.index, name="index"),
    path("<int:pk>/", views.alert_detail, name="alert"),
    path("<int:pk>/silence/", views.alert_silence, name="alert_silence"),
    path("changes/<int:pk>/open/", panels.subject_open_alerts, name="subject_open_alerts"),
    path("board/", views.board, name="board"),
    path("board/<int:pk>/<slug:action>/", views.board_action, name="board_action"),
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/<int:pk>/", views.incident_detail, name="incident"),
    path("incidents/<int:pk>/acknowledge/", views.incident_action,
         {"action": "acknowledge"}, name="incident_ack"),
    path("incidents/<int:pk>/unacknowledge/", views.incident_action,
         {"action": "unacknowledge"}, name="incident_unack"),
    path("incidents/<int:pk>/resolve/", views.incident_action,
         {"action": "resolve"}, name="incident_resolve"),
    path("incidents/<int:pk>/snooze/", views.incident_action,
         {"action": "snooze"}, name="incident_snooze"),
    # Escalation: policies, people's contacts, the signed one-click links of messages.
    path("escalation/", escalation_views.policy_list, name="escalation_policies"),
    path("escalation/new/", escalation_views.policy_edit, name="escalation_policy_new"),
    path("escalation/<int:pk>/", escalation_views.policy_edit, name="escalation_policy"),
    path("escalation/<int:pk>/delete/", escalation_views.policy_delete,
         name="escalation_policy_delete"),
    path("escalation/contact/", escalation_views.contact_edit, name="oncall_contact"),
    path("link/<str:token>/", escalation_views.incident_link, name="incident_link"),
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
