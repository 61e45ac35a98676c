from django.core.management.base import BaseCommand

from alerts import services as alerts_services
from cmdb import services as cmdb_services
from opsplane.notify import services as notify_services


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret (SSH credentials, notification channel and alert "
            "integration secrets) "
            "with the first key of OPSPLANE_FERNET_KEYS. Run after putting a new key first; "
            "then the old key can be removed.")

    def handle(self, *args, **options):
        credentials = cmdb_services.rotate_credentials()
        channels = notify_services.rotate_secrets()
        integrations = alerts_services.rotate_secrets()
        self.stdout.write(f"re-encrypted {credentials} credentials, {channels} channel "
                          f"secrets and {integrations} alert integration secrets with the "
                          "newest key")
