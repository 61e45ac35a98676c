"""opsplane.ssh against real servers: OpenSSH sshd and the lab, on loopback only."""

import socket
from dataclasses import replace

import asyncssh
import pytest

from opsplane import ssh
from opsplane.lab import connection_specs
from opsplane.testing.ssh import free_port


@pytest.fixture(params=["sshd", "lab"])
def spec(request):
    """A ConnectionSpec with the right pinned key: the same tests run against both servers."""
    if request.param == "sshd":
        return request.getfixturevalue("sshd").spec()
    return connection_specs(request.getfixturevalue("ssh_lab"))[0]


def other_public_key():
    return ssh.public_key_line(asyncssh.generate_private_key("ssh-ed25519"))


async def run_one(spec, command, **kwargs):
    async with await ssh.connect(spec) as conn:
        return await ssh.run(conn, command, **kwargs)


async def test_run_sees_stdout_stderr_and_exit_status(spec):
    assert await run_one(spec, "echo hi") == ssh.Result(0, "hi\n", "")
    assert await run_one(spec, "echo oops >&2") == ssh.Result(0, "", "oops\n")
    assert (await run_one(spec, "exit 3")).exit_status == 3


async def test_run_feeds_stdin(spec):
    assert (await run_one(spec, "tr a-z A-Z", stdin="quiet\n")).stdout == "QUIET\n"


async def test_signal_death_is_reported_as_the_shell_would(spec):
    assert (await run_one(spec, "kill -TERM $$")).exit_status == 128 + 15


async def test_run_timeout(spec):
    async with await ssh.connect(spec) as conn:
        # Short enough to end by itself: OpenSSH refuses signal requests for root logins
        # ("session signalling requires privilege separation"), so as root it outlives us.
        with pytest.raises(ssh.SSHTimeout) as info:
            await ssh.run(conn, "sleep 3", timeout=0.5)
        # The connection is still usable after a command timed out.
        assert (await ssh.run(conn, "echo after")).stdout == "after\n"
    assert info.value.reason == "timeout"


async def test_quote_command_passes_arguments_unchanged(spec):
    argv = ["printf", "%s\\n", "a b", "it's", "$HOME", "; rm -rf /", ""]
    result = await run_one(spec, ssh.quote_command(argv))
    assert result.stdout.split("\n")[:-1] == argv[2:]


async def test_stream_delivers_all_output_in_order_in_chunks(spec):
    chunks = []
    async with await ssh.connect(spec) as conn:
        status = await ssh.stream(
            conn,
            "seq 1 5000; echo done >&2; exit 4",
            on_output=lambda name, text: chunks.append((name, text)),
        )
    stdout = "".join(text for name, text in chunks if name == "stdout")
    assert stdout.splitlines() == [str(n) for n in range(1, 5001)]
    assert "".join(text for name, text in chunks if name == "stderr") == "done\n"
    assert status == 4
    assert len(chunks) < 500, "output should arrive in chunks, not line by line"


async def test_fetch_host_key_returns_the_pinned_key(spec):
    assert await ssh.fetch_host_key(spec.host, spec.port, timeout=5) == spec.host_keys[0]


async def test_wrong_pinned_host_key_is_refused_with_the_presented_fingerprint(spec):
    wrong = replace(spec, host_keys=[other_public_key()])
    with pytest.raises(ssh.HostKeyError) as info:
        await ssh.connect(wrong)
    assert info.value.reason == "host_key"
    assert "does not match the pinned key" in str(info.value)
    assert ssh.fingerprint(spec.host_keys[0]) in str(info.value)
    # The key itself comes along, so the inventory can show it and an admin re-trust it.
    assert info.value.presented_key == spec.host_keys[0]


async def test_no_pinned_host_key_is_refused(spec):
    with pytest.raises(ssh.HostKeyError) as info:
        await ssh.connect(replace(spec, host_keys=[]))
    assert info.value.reason == "host_key"
    assert "no host key is pinned" in str(info.value)


async def test_wrong_client_key_is_an_auth_error(spec):
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(ssh.SSHAuthError) as info:
        await ssh.connect(replace(spec, client_keys=[stranger]))
    assert info.value.reason == "auth"


def test_secrets_stay_out_of_the_repr():
    spec = ssh.ConnectionSpec(
        host="127.0.0.1", username="ops", client_keys=["/keys/id"], passphrase="hunter2",
        password="sesame",
    )
    assert "hunter2" not in repr(spec) and "sesame" not in repr(spec)


async def test_closed_port_is_refused():
    port = free_port()
    spec = ssh.ConnectionSpec(
        host="127.0.0.1", port=port, username="ops", host_keys=[other_public_key()]
    )
    with pytest.raises(ssh.SSHRefused) as info:
        await ssh.connect(spec)
    assert info.value.reason == "refused"
    with pytest.raises(ssh.SSHRefused):
        await ssh.fetch_host_key("127.0.0.1", port, timeout=5)


async def test_server_that_never_speaks_ssh_times_out():
    # The kernel completes the TCP handshake for a listening socket nobody accepts on.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        spec = ssh.ConnectionSpec(
            host="127.0.0.1", port=silent.getsockname()[1], username="ops",
            host_keys=[other_public_key()], connect_timeout=0.5,
        )
        with pytest.raises(ssh.SSHTimeout) as info:
            await ssh.connect(spec)
    assert info.value.reason == "timeout"


def test_a_name_that_does_not_resolve_is_reported_as_dns():
    spec = ssh.ConnectionSpec(host="db.example.invalid", username="ops")
    error = ssh._map_error(socket.gaierror(-2, "Name or service not known"), spec, timeout=5)
    assert error.reason == "dns"
    assert "db.example.invalid" in str(error) and "does not resolve" in str(error)
