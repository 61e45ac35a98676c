from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CMDBConfig(AppConfig):
    name = "cmdb"
    verbose_name = _("CMDB")

    def ready(self):
        from cmdb import metrics  # noqa: F401 - registers the scrape-time collectors
