"""The SSH lab: real commands, its own host keys, inventory, delay, clean shutdown, scale.

What every SSH server must do is in test_ssh.py, which runs against the lab too.
"""

import asyncio
import getpass
import ipaddress
import secrets
import time
from pathlib import Path

import pytest

from opsplane import ssh
from opsplane.lab import Lab, LabError, connection_specs, lab_addresses, read_inventory
from opsplane.testing.ssh import free_port, run_lab

# Each in-process lab gets its own addresses, away from the session lab (127.0.77.1).
DELAY_BASE = "127.0.78.1"
SIGTERM_BASE = "127.0.79.1"
RESTART_BASE = "127.0.80.1"
LARGE_BASE = "127.0.100.1"


async def run_on(spec, command):
    async with await ssh.connect(spec) as conn:
        return await ssh.run(conn, command)


def test_inventory_lists_consecutive_hosts_with_distinct_keys(ssh_lab):
    hosts = ssh_lab["hosts"]
    first = ipaddress.IPv4Address(hosts[0]["address"])
    assert ssh_lab["version"] == 1
    assert ssh_lab["user"] == getpass.getuser()
    assert Path(ssh_lab["client_key"]).is_absolute()
    assert [host["name"] for host in hosts] == [f"lab-{n:03d}" for n in range(1, 11)]
    assert [host["address"] for host in hosts] == [str(first + n) for n in range(10)]
    assert {host["port"] for host in hosts} == {ssh_lab["port"]}
    assert len({host["host_key"] for host in hosts}) == 10
    assert all(host["host_key"].startswith("ssh-ed25519 AAAA") for host in hosts)
    assert isinstance(ssh_lab["pid"], int)


async def test_each_host_presents_its_own_key(ssh_lab):
    for host in ssh_lab["hosts"][:3]:
        assert await ssh.fetch_host_key(host["address"], host["port"]) == host["host_key"]


async def test_commands_run_in_the_host_directory(ssh_lab):
    spec = connection_specs(ssh_lab)[2]
    result = await run_on(spec, 'pwd; echo "$HOME"; echo "$OPSPLANE_LAB_HOST"')
    home = str(Path(ssh_lab["client_key"]).parent / "hosts" / "lab-003")
    assert result.stdout.splitlines() == [home, home, "lab-003"]


async def test_shell_request_reads_commands_from_stdin(ssh_lab):
    async with await ssh.connect(connection_specs(ssh_lab)[0]) as conn:
        process = await conn.create_process()
        result = await process.communicate('echo "shell on $OPSPLANE_LAB_HOST"\nexit 5\n')
    assert result == ("shell on lab-001\n", "")
    assert process.exit_status == 5


async def test_sftp_put_and_get(ssh_lab, tmp_path):
    spec = connection_specs(ssh_lab)[1]
    payload = secrets.token_bytes(200_000)
    (tmp_path / "up.bin").write_bytes(payload)
    async with await ssh.connect(spec) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(tmp_path / "up.bin"), "up.bin")
        await sftp.get("up.bin", str(tmp_path / "down.bin"))
        listed = await sftp.listdir(".")
    assert (tmp_path / "down.bin").read_bytes() == payload
    assert "up.bin" in listed
    home = Path(ssh_lab["client_key"]).parent / "hosts" / "lab-002"
    assert (home / "up.bin").read_bytes() == payload


def test_addresses_stay_in_loopback():
    assert lab_addresses("127.0.10.255", 2) == ["127.0.10.255", "127.0.11.0"]
    with pytest.raises(LabError, match="loopback"):
        lab_addresses("10.0.0.1", 1)
    with pytest.raises(LabError, match="outside 127.0.0.0/8"):
        lab_addresses("127.255.255.250", 10)
    with pytest.raises(LabError, match="not an IPv4 address"):
        lab_addresses("localhost", 1)


async def test_delay_is_added_before_each_command(tmp_path):
    lab = Lab(1, base=DELAY_BASE, port=free_port(DELAY_BASE), directory=tmp_path, delay=1.0)
    async with lab:
        spec = connection_specs(read_inventory(tmp_path))[0]
        async with await ssh.connect(spec) as conn:
            started = time.monotonic()
            assert (await ssh.run(conn, "echo late")).stdout == "late\n"
            assert time.monotonic() - started >= 0.9


async def test_restart_reuses_keys_and_a_running_lab_locks_its_directory(tmp_path):
    port = free_port(RESTART_BASE)
    async with Lab(3, base=RESTART_BASE, port=port, directory=tmp_path):
        first = read_inventory(tmp_path)
        with pytest.raises(LabError, match="another lab"):
            await Lab(3, base=RESTART_BASE, port=port, directory=tmp_path).start()
    assert "pid" not in read_inventory(tmp_path)
    async with Lab(3, base=RESTART_BASE, port=port, directory=tmp_path):
        second = read_inventory(tmp_path)
        assert (await run_on(connection_specs(second)[2], "echo again")).stdout == "again\n"
    assert [host["host_key"] for host in second["hosts"]] == [
        host["host_key"] for host in first["hosts"]
    ]


def sleepers(duration):
    """Pids of processes running exactly ``sleep <duration>``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == f"sleep\0{duration}\0".encode():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass  # the process ended while we looked
    return found


def unique_duration():
    # A sleep duration doubles as a marker no other process on the machine has.
    return f"600.{secrets.randbelow(10**6):06d}"


async def eventually(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_command_ends_when_its_channel_closes(ssh_lab):
    duration = unique_duration()
    async with await ssh.connect(connection_specs(ssh_lab)[0]) as conn:
        process = await conn.create_process(f"sleep {duration}")
        assert await eventually(lambda: sleepers(duration)), "the command never started"
        process.close()
        assert await eventually(lambda: not sleepers(duration))


async def test_signal_requests_reach_the_command(ssh_lab):
    duration = unique_duration()
    async with await ssh.connect(connection_specs(ssh_lab)[0]) as conn:
        process = await conn.create_process(f"sleep {duration}")
        assert await eventually(lambda: sleepers(duration)), "the command never started"
        process.terminate()
        await process.wait_closed()
    assert process.exit_signal[0] == "TERM"


async def test_sigterm_kills_running_commands(tmp_path):
    duration = unique_duration()
    with run_lab(2, tmp_path, base=SIGTERM_BASE) as inventory:
        conn = await ssh.connect(connection_specs(inventory)[1])
        await conn.create_process(f"sleep {duration}")
        assert await eventually(lambda: sleepers(duration)), "the command never started"
    # Leaving run_lab sent SIGTERM and checked that the lab exited with status 0, while
    # the client was still connected: only the lab can have ended the command.
    assert sleepers(duration) == []
    conn.close()


async def test_a_thousand_hosts_in_one_process(tmp_path):
    started = time.monotonic()
    async with Lab(1000, base=LARGE_BASE, port=free_port(LARGE_BASE), directory=tmp_path):
        startup = time.monotonic() - started
        specs = connection_specs(read_inventory(tmp_path))
        assert [spec.host for spec in (specs[0], specs[-1])] == ["127.0.100.1", "127.0.103.232"]
        for spec in (specs[0], specs[499], specs[-1]):
            assert (await run_on(spec, "echo $OPSPLANE_LAB_HOST")).stdout == f"{spec.name}\n"
    # Generous: a cold start (1,000 keys generated) takes about a second on two cores.
    assert startup < 30, f"1,000-host lab took {startup:.1f}s to start"
