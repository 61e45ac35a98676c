import contextlib

import pytest

from opsplane.testing.require import unavailable
from opsplane.testing.ssh import Unavailable, run_lab, start_sshd

# --- SSH: a real OpenSSH sshd and the asyncssh lab (opsplane/testing/ssh.py) ------------

SSH_LAB_HOSTS = 10


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """OpenSSH sshd on 127.0.0.1 (an ``opsplane.testing.ssh.SSHD``; ``.spec()`` to connect)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_sshd(tmp_path_factory.mktemp("sshd")))
        except Unavailable as exc:
            unavailable(f"sshd: {exc}")
        yield server


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory):
    """The parsed inventory of a running ``manage.py lab`` with SSH_LAB_HOSTS hosts."""
    with contextlib.ExitStack() as stack:
        try:
            inventory = stack.enter_context(run_lab(SSH_LAB_HOSTS, tmp_path_factory.mktemp("lab")))
        except Unavailable as exc:
            unavailable(f"SSH lab: {exc}")
        yield inventory


# --- end of SSH fixtures ---------------------------------------------------------------
