from django.urls import path

from cmdb import views

app_name = "cmdb"
urlpatterns = [
    path("", views.index, name="index"),
    path("preview/", views.selector_preview, name="preview"),
    path("hosts/new/", views.host_edit, name="host_new"),
    path("hosts/bulk-labels/", views.bulk_labels, name="bulk_labels"),
    path("hosts/facts/", views.gather_facts_for_selector, name="facts_for_selector"),
    path("hosts/<str:name>/", views.host_detail, name="host"),
    path("hosts/<str:name>/edit/", views.host_edit, name="host_edit"),
    path("hosts/<str:name>/delete/", views.host_delete, name="host_delete"),
    path("hosts/<str:name>/trust-key/", views.host_trust_key, name="host_trust_key"),
    path("hosts/<str:name>/retrust-key/", views.host_retrust_key, name="host_retrust_key"),
    path("hosts/<str:name>/facts/", views.host_gather_facts, name="host_facts"),
    path("known-hosts/", views.known_hosts_import, name="known_hosts"),
    path("import/", views.inventory_import, name="import"),
    path("export/", views.inventory_export, name="export"),
    path("groups/", views.group_list, name="groups"),
    path("groups/new/", views.group_edit, name="group_new"),
    path("groups/<str:name>/", views.group_detail, name="group"),
    path("groups/<str:name>/edit/", views.group_edit, name="group_edit"),
    path("services/", views.service_list, name="services"),
    path("services/new/", views.service_edit, name="service_new"),
    path("services/<str:name>/", views.service_detail, name="service"),
    path("services/<str:name>/edit/", views.service_edit, name="service_edit"),
    path("environments/", views.environment_list, name="environments"),
    path("environments/new/", views.environment_edit, name="environment_new"),
    path("environments/<str:name>/edit/", views.environment_edit, name="environment_edit"),
    path("credentials/", views.credential_list, name="credentials"),
    path("credentials/new/", views.credential_edit, name="credential_new"),
    path("credentials/<str:name>/edit/", views.credential_edit, name="credential_edit"),
    path("credentials/<str:name>/delete/", views.credential_delete, name="credential_delete"),
]
