from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OnCallConfig(AppConfig):
    name = "oncall"
    verbose_name = _("On-call")
