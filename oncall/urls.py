from django.urls import path

from oncall import views

app_name = "oncall"
urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.schedule_edit, name="schedule_new"),
    path("<int:pk>/", views.schedule_detail, name="schedule"),
    path("<int:pk>/edit/", views.schedule_edit, name="schedule_edit"),
    path("<int:pk>/delete/", views.schedule_delete, name="schedule_delete"),
    path("<int:pk>/layers/new/", views.layer_edit, name="layer_new"),
    path("<int:pk>/layers/<int:layer_pk>/", views.layer_edit, name="layer_edit"),
    path("<int:pk>/layers/<int:layer_pk>/delete/", views.layer_delete, name="layer_delete"),
    path("<int:pk>/overrides/", views.override_new, name="override_new"),
    path("<int:pk>/overrides/<int:override_pk>/delete/", views.override_delete,
         name="override_delete"),
]
