from django.urls import path

from changes import views

app_name = "changes"
urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.change_edit, name="change_new"),
    path("<int:pk>/", views.change_detail, name="change"),
    path("<int:pk>/edit/", views.change_edit, name="change_edit"),
    path("<int:pk>/start/", views.change_start, name="change_start"),
    path("<int:pk>/cancel/", views.change_cancel, name="change_cancel"),
    path("<int:pk>/runs/<int:number>/", views.run_detail, name="run"),
    path("<int:pk>/runs/<int:number>/cancel/", views.run_cancel, name="run_cancel"),
    path("<int:pk>/runs/<int:number>/retry/", views.run_retry, name="run_retry"),
    path("<int:pk>/runs/<int:number>/output/", views.run_output, name="run_output"),
    path("<int:pk>/runs/<int:number>/log/", views.run_log, name="run_log"),
    path("<int:pk>/runs/<int:number>/hosts/<str:host>/log/", views.host_log, name="host_log"),
    path("runbooks/", views.runbook_list, name="runbooks"),
    path("runbooks/new/", views.runbook_edit, name="runbook_new"),
    path("runbooks/<str:name>/", views.runbook_detail, name="runbook"),
    path("runbooks/<str:name>/edit/", views.runbook_edit, name="runbook_edit"),
]
