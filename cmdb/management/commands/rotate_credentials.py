from django.core.management.base import BaseCommand

from cmdb import services


class Command(BaseCommand):
    help = ("Re-encrypt every credential with the first key of OPSPLANE_FERNET_KEYS. Run "
            "after putting a new key first; then the old key can be removed.")

    def handle(self, *args, **options):
        count = services.rotate_credentials()
        self.stdout.write(f"re-encrypted {count} credentials with the newest key")
