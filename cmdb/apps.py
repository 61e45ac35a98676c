from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CMDBConfig(AppConfig):
    name = "cmdb"
    verbose_name = _("CMDB")
