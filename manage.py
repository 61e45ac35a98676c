#!/usr/bin/env python
"""Django's command-line utility for opsplane."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsplane.settings")
    from opsplane.startup import run_cli

    run_cli(sys.argv)


if __name__ == "__main__":
    main()
