"""``manage.py demo``: demo data for a laptop, loaded idempotently (what ``make run`` calls)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from opsplane import demo


class Command(BaseCommand):
    help = ("Create the role groups, one demo user per role, the demo environments and, "
            "when the SSH lab runs, its hosts.")

    def handle(self, *args, **options):
        logins = demo.load(settings.VAR_DIR / "demo_logins.json",
                           lab_inventory=settings.OPSPLANE_LAB_DIR / "inventory.json")
        if options["verbosity"]:
            for entry in logins:
                self.stdout.write(f"{entry['role']:<9} {entry['username']:<10} {entry['password']}")
