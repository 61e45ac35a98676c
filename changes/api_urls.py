from django.urls import path

from changes import api

urlpatterns = [
    path("runbooks/", api.RunbookList.as_view(), name="api-runbooks"),
    path("runbooks/<str:name>/", api.RunbookDetail.as_view(), name="api-runbook"),
    path("changes/", api.ChangeList.as_view(), name="api-changes"),
    path("changes/<int:pk>/", api.ChangeDetail.as_view(), name="api-change"),
    path("changes/<int:pk>/start/", api.ChangeAction.as_view(action="start"),
         name="api-change-start"),
    path("changes/<int:pk>/cancel/", api.ChangeAction.as_view(action="cancel"),
         name="api-change-cancel"),
    path("changes/<int:pk>/retry/", api.ChangeAction.as_view(action="retry"),
         name="api-change-retry"),
    path("changes/<int:pk>/runs/<int:number>/", api.RunDetail.as_view(), name="api-run"),
    path("changes/<int:pk>/runs/<int:number>/cancel/", api.RunCancel.as_view(),
         name="api-run-cancel"),
    path("changes/<int:pk>/runs/<int:number>/events/", api.RunEvents.as_view(),
         name="api-run-events"),
    path("changes/<int:pk>/runs/<int:number>/log/", api.RunLog.as_view(), name="api-run-log"),
    path("changes/<int:pk>/runs/<int:number>/hosts/<str:host>/log/", api.HostLog.as_view(),
         name="api-host-log"),
]
