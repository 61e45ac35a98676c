"""The one rule for fixtures that start real parts (sshd, the lab, Redis, a browser):
skip with the reason, except under ``OPSPLANE_REQUIRE_ALL=1`` (CI), where a part that
cannot start fails the test instead of hiding behind a skip."""

import os

import pytest


def required():
    return os.environ.get("OPSPLANE_REQUIRE_ALL", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason):
    if required():
        pytest.fail(f"{reason} (OPSPLANE_REQUIRE_ALL=1: required parts must start)",
                    pytrace=False)
    pytest.skip(reason)
