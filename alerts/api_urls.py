from django.urls import path

from alerts import api, escalation_api

urlpatterns = [
    # Open to monitoring systems: the integration's token authenticates (api.Intake).
    path("alerts/intake/", api.Intake.as_view(), name="api-alerts-intake"),
    path("alerts/intake/<str:token>/", api.IntakeWithToken.as_view(),
         name="api-alerts-intake-token"),
    path("alerts/", api.AlertList.as_view(), name="api-alerts"),
    path("alerts/<int:pk>/", api.AlertDetail.as_view(), name="api-alert"),
    path("alerts/incidents/", api.IncidentList.as_view(), name="api-incidents"),
    path("alerts/incidents/<int:pk>/", api.IncidentDetail.as_view(), name="api-incident"),
    path("alerts/incidents/<int:pk>/acknowledge/",
         escalation_api.IncidentAction.as_view(action="acknowledge"), name="api-incident-ack"),
    path("alerts/incidents/<int:pk>/unacknowledge/",
         escalation_api.IncidentAction.as_view(action="unacknowledge"),
         name="api-incident-unack"),
    path("alerts/incidents/<int:pk>/resolve/",
         escalation_api.IncidentAction.as_view(action="resolve"), name="api-incident-resolve"),
    path("alerts/incidents/<int:pk>/snooze/",
         escalation_api.IncidentAction.as_view(action="snooze"), name="api-incident-snooze"),
    path("alerts/escalation-policies/", escalation_api.EscalationPolicyList.as_view(),
         name="api-escalation-policies"),
    path("alerts/escalation-policies/<int:pk>/", escalation_api.EscalationPolicyDetail.as_view(),
         name="api-escalation-policy"),
    path("alerts/silences/", api.SilenceList.as_view(), name="api-silences"),
    path("alerts/silences/<int:pk>/", api.SilenceDetail.as_view(), name="api-silence"),
    path("alerts/routing/", api.Routing.as_view(), name="api-routing"),
    path("alerts/routing/test/", api.RoutingTest.as_view(), name="api-routing-test"),
    path("alerts/routing/import/", api.RoutingImport.as_view(), name="api-routing-import"),
]
