from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OpsplaneConfig(AppConfig):
    name = "opsplane"
    verbose_name = _("opsplane")

    def ready(self):
        # Bind @shared_task to our Celery app in every process (web, shell, tests),
        # so .delay() goes to the configured broker.
        from opsplane.celery import app  # noqa: F401
