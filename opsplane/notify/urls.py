from django.urls import path

from opsplane.notify import views

app_name = "notify"
urlpatterns = [
    path("channels/", views.channel_list, name="channels"),
    path("channels/new/", views.channel_edit, name="channel_new"),
    path("channels/<str:name>/", views.channel_detail, name="channel"),
    path("channels/<str:name>/edit/", views.channel_edit, name="channel_edit"),
    path("channels/<str:name>/test/", views.channel_test, name="channel_test"),
    path("channels/<str:name>/delete/", views.channel_delete, name="channel_delete"),
    path("outbox/", views.notification_list, name="notifications"),
    path("outbox/<int:pk>/", views.notification_detail, name="notification"),
    path("outbox/<int:pk>/retry/", views.notification_retry, name="notification_retry"),
]
