from django.core.management.base import BaseCommand

from opsplane import startup


class Command(BaseCommand):
    help = "Check that the database and Redis answer (exit 2 with the variable to fix)."

    def handle(self, *args, **options):
        startup.check_services()
        self.stdout.write("database and Redis answer")
