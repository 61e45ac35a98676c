from django.urls import path

from oncall import api

urlpatterns = [
    path("oncall/schedules/", api.ScheduleList.as_view(), name="api-oncall-schedules"),
    path("oncall/schedules/<int:pk>/", api.ScheduleDetail.as_view(), name="api-oncall-schedule"),
    path("oncall/schedules/<int:pk>/now/", api.Now.as_view(), name="api-oncall-now"),
    path("oncall/schedules/<int:pk>/shifts/", api.Shifts.as_view(), name="api-oncall-shifts"),
    path("oncall/schedules/<int:pk>/layers/", api.LayerList.as_view(), name="api-oncall-layers"),
    path("oncall/schedules/<int:pk>/layers/<int:layer_pk>/", api.LayerDetail.as_view(),
         name="api-oncall-layer"),
    path("oncall/schedules/<int:pk>/overrides/", api.OverrideList.as_view(),
         name="api-oncall-overrides"),
    path("oncall/schedules/<int:pk>/overrides/<int:override_pk>/", api.OverrideDetail.as_view(),
         name="api-oncall-override"),
]
