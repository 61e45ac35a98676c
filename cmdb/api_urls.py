from django.urls import path

from cmdb import api

urlpatterns = [
    path("hosts/", api.HostList.as_view(), name="api-hosts"),
    path("hosts/bulk-labels/", api.BulkLabels.as_view(), name="api-hosts-bulk-labels"),
    path("hosts/<str:name>/", api.HostDetail.as_view(), name="api-host"),
    path("hosts/<str:name>/trust-key/", api.TrustHostKey.as_view(), name="api-host-trust"),
    path("hosts/<str:name>/retrust-key/", api.RetrustHostKey.as_view(),
         name="api-host-retrust"),
    path("hosts/<str:name>/facts/", api.GatherFacts.as_view(), name="api-host-facts"),
    path("selector/", api.SelectorPreview.as_view(), name="api-selector"),
    path("facts/", api.GatherFactsForSelector.as_view(), name="api-facts"),
    path("inventory/import/", api.InventoryImport.as_view(), name="api-inventory-import"),
    path("inventory/export/", api.InventoryExport.as_view(), name="api-inventory-export"),
    path("groups/", api.GroupList.as_view(), name="api-groups"),
    path("groups/<str:name>/", api.GroupDetail.as_view(), name="api-group"),
    path("services/", api.ServiceList.as_view(), name="api-services"),
    path("services/<str:name>/", api.ServiceDetail.as_view(), name="api-service"),
    path("environments/", api.EnvironmentList.as_view(), name="api-environments"),
    path("credentials/", api.CredentialList.as_view(), name="api-credentials"),
    path("credentials/<str:name>/", api.CredentialDetail.as_view(), name="api-credential"),
]
