from django.urls import path

from opsplane.notify import api

urlpatterns = [
    path("channels/", api.ChannelList.as_view(), name="api-notify-channels"),
    path("channels/<str:name>/", api.ChannelDetail.as_view(), name="api-notify-channel"),
    path("channels/<str:name>/test/", api.ChannelTest.as_view(), name="api-notify-channel-test"),
    path("notifications/", api.NotificationList.as_view(), name="api-notify-notifications"),
    path("notifications/<int:pk>/", api.NotificationDetail.as_view(),
         name="api-notify-notification"),
    path("notifications/<int:pk>/retry/", api.NotificationRetry.as_view(),
         name="api-notify-notification-retry"),
    path("preview/", api.Preview.as_view(), name="api-notify-preview"),
]
