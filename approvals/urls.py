from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns = [
    path("", views.index, name="index"),
    path("requests/", views.request_list, name="requests"),
    path("requests/<int:pk>/", views.request_detail, name="request"),
    path("requests/<int:pk>/decide/", views.decide, name="decide"),
    path("requests/<int:pk>/withdraw/", views.withdraw, name="withdraw"),
    path("requests/<int:pk>/resubmit/", views.resubmit, name="resubmit"),
    path("requests/<int:pk>/emergency/", views.emergency, name="emergency"),
    path("reviews/", views.review_list, name="reviews"),
    path("reviews/<int:pk>/", views.review, name="review"),
    path("policies/", views.policy_list, name="policies"),
    path("policies/new/", views.policy_edit, name="policy_new"),
    path("policies/export/", views.policy_export, name="policy_export"),
    path("policies/import/", views.policy_import, name="policy_import"),
    path("policies/<str:name>/", views.policy_edit, name="policy_edit"),
    path("policies/<str:name>/delete/", views.policy_delete, name="policy_delete"),
    path("freezes/", views.window_list, {"kind": "freezes"}, name="freezes"),
    path("freezes/new/", views.window_edit, {"kind": "freezes"}, name="freeze_new"),
    path("freezes/<int:pk>/", views.window_edit, {"kind": "freezes"}, name="freeze_edit"),
    path("freezes/<int:pk>/delete/", views.window_delete, {"kind": "freezes"},
         name="freeze_delete"),
    path("maintenance/", views.window_list, {"kind": "maintenance"}, name="maintenance"),
    path("maintenance/new/", views.window_edit, {"kind": "maintenance"},
         name="maintenance_new"),
    path("maintenance/<int:pk>/", views.window_edit, {"kind": "maintenance"},
         name="maintenance_edit"),
    path("maintenance/<int:pk>/delete/", views.window_delete, {"kind": "maintenance"},
         name="maintenance_delete"),
    path("calendar/", views.calendar, name="calendar"),
]
