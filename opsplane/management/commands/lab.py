"""``manage.py lab``: serve the SSH lab (see opsplane/lab.py) until Ctrl-C or SIGTERM."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from opsplane import lab


class Command(BaseCommand):
    help = "Serve N SSH hosts on consecutive loopback addresses, for demos and tests."
    # The lab needs neither the database nor Redis; system checks might touch them.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--hosts", type=int, default=10, help="number of hosts (default 10)")
        parser.add_argument(
            "--base", default=lab.DEFAULT_BASE, help="first address, in 127.0.0.0/8"
        )
        parser.add_argument("--port", type=int, default=lab.DEFAULT_PORT)
        parser.add_argument(
            "--delay", type=float, default=0.0, help="seconds to wait before each command"
        )
        parser.add_argument(
            "--dir", help="keys, host directories and inventory.json (default OPSPLANE_LAB_DIR)"
        )

    def handle(self, *args, **options):
        directory = options["dir"] or settings.OPSPLANE_LAB_DIR

        def ready(running):
            addresses = running.addresses
            self.stdout.write(
                f"lab: {len(addresses)} hosts on {addresses[0]}-{addresses[-1]}:{running.port}, "
                f"inventory {running.inventory_path}"
            )
            self.stdout.flush()

        try:
            asyncio.run(
                lab.serve(
                    options["hosts"],
                    options["base"],
                    options["port"],
                    directory,
                    delay=options["delay"],
                    ready=ready,
                )
            )
        except lab.LabError as exc:
            raise CommandError(str(exc)) from None
