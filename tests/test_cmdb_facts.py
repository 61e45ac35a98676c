"""Fact gathering over real SSH (OpenSSH sshd and the asyncssh lab), host-key pinning on
the way, the Celery task through a real worker, and the inventory's metrics."""

import os
import re
import socket
import time
from pathlib import Path

import asyncssh
import pytest
from django.core.exceptions import PermissionDenied

from cmdb import facts, services, tasks
from cmdb.models import Credential, Environment, Host, HostKey
from opsplane import ssh
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def env():
    return Environment.objects.create(name="prod")


@pytest.fixture
def sshd_credential(sshd, admin_user):
    return services.save_credential(
        Credential(), {"name": "sshd-client", "kind": "ssh_key"},
        private_key=Path(sshd.client_key).read_text(), by=admin_user,
    )


@pytest.fixture
def sshd_host(sshd, sshd_credential, env):
    """A host pointing at the real sshd, with no key pinned yet."""
    return Host.objects.create(name="sshd", address=sshd.host, port=sshd.port,
                               ssh_user=sshd.username, environment=env,
                               credential=sshd_credential)


def pin(host, key):
    HostKey.objects.create(host=host, key=key, fingerprint=ssh.fingerprint(key),
                           source="manual")
    Host.objects.filter(pk=host.pk).update(host_key_state="trusted")


def other_public_key():
    return ssh.public_key_line(asyncssh.generate_private_key("ssh-ed25519"))


def only(host):
    return Host.objects.filter(pk=host.pk)


@pytest.fixture
def silent_port():
    """A loopback port that accepts TCP connections (the kernel's backlog) and never
    says a word: an SSH client waits for a banner that does not come."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def metric(client, name, **labels):
    """The value of one sample on /metrics (0 when absent); fails on duplicate samples."""
    body = client.get("/metrics").content.decode()
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    values = []
    for line in body.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and set(match[1].split(",")) == wanted:
            values.append(float(match[2]))
    assert len(values) <= 1, f"duplicate samples for {name}{labels}: {values}"
    return values[0] if values else 0.0


# --- the facts script --------------------------------------------------------------------


def test_parse_facts_types_and_lists():
    parsed = facts.parse_facts(
        "hostname=web-1\nos_name=Debian GNU/Linux\nkernel=6.1.0\narch=x86_64\n"
        "cpu_count=4\nmemory_kb=8000000\nuptime_seconds=12\nos_version=\n"
        "disk=/|/dev/sda1|100|40|60\ndisk=/boot|/dev/sda2|junk|1|1\n"
        "ip=eth0|10.0.0.5\nnoise without equals\nfacts_done=1\n"
    )
    assert parsed == {
        "hostname": "web-1", "os_name": "Debian GNU/Linux", "kernel": "6.1.0",
        "arch": "x86_64", "cpu_count": 4, "memory_kb": 8000000, "uptime_seconds": 12,
        "disks": [{"mount": "/", "device": "/dev/sda1", "size_kb": 100, "used_kb": 40,
                   "available_kb": 60}],
        "ip_addresses": [{"interface": "eth0", "address": "10.0.0.5"}],
    }


def test_output_cut_short_is_a_protocol_error():
    with pytest.raises(facts.FactsError) as caught:
        facts.parse_facts("hostname=x\nkernel=6.1\n")
    assert caught.value.reason == "protocol"


# --- OpenSSH sshd --------------------------------------------------------------------------


def test_first_contact_pins_the_key_and_stores_the_facts(sshd, sshd_host, operator):
    outcomes = services.gather_facts(only(sshd_host), by=operator)
    assert outcomes["sshd"].reason == "", outcomes["sshd"].detail

    pinned = sshd_host.host_keys.get()
    assert (pinned.key, pinned.source, pinned.trusted_by) == (
        sshd.host_key, "first_contact", operator)
    assert AuditEvent.objects.get(action="host.trust_key").actor == operator

    host = Host.objects.get(pk=sshd_host.pk)
    assert host.host_key_state == "trusted"
    assert host.facts_updated_at is not None and host.facts_error == ""
    found = host.facts
    # sshd runs on this machine, so the facts are this machine's.
    assert found["hostname"] == socket.gethostname()
    assert found["kernel"] == os.uname().release
    assert found["arch"] == os.uname().machine
    assert found["cpu_count"] == os.sysconf("SC_NPROCESSORS_ONLN")
    meminfo = Path("/proc/meminfo").read_text()
    assert found["memory_kb"] == int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])
    assert found["os_name"] and found["uptime_seconds"] >= 0
    assert found["disks"] and all(d["size_kb"] > 0 for d in found["disks"])
    assert isinstance(found["ip_addresses"], list)


def test_a_scheduled_run_does_not_pin(sshd_host):
    outcomes = services.gather_facts(only(sshd_host), by=None)
    assert outcomes["sshd"].reason == "host_key"
    host = Host.objects.get(pk=sshd_host.pk)
    assert (host.facts_error, host.host_key_state, host.facts) == ("host_key", "unknown", {})
    assert "no host key is pinned" in host.facts_error_detail
    assert not HostKey.objects.exists()


def test_a_changed_key_is_refused_until_an_admin_retrusts(sshd, sshd_host, operator,
                                                           admin_user):
    wrong = other_public_key()
    pin(sshd_host, wrong)

    outcomes = services.gather_facts(only(sshd_host), by=operator)
    assert outcomes["sshd"].reason == "host_key"
    host = Host.objects.get(pk=sshd_host.pk)
    assert host.host_key_state == "changed"
    assert host.presented_host_key == sshd.host_key
    assert host.facts_error == "host_key" and host.facts == {}
    assert ssh.fingerprint(sshd.host_key) in host.facts_error_detail
    changed = AuditEvent.objects.get(action="host.key_changed")
    assert changed.detail["presented_fingerprint"] == ssh.fingerprint(sshd.host_key)
    # Still refused on the next run (an operator's run pins nothing here).
    assert services.gather_facts(only(host), by=operator)["sshd"].reason == "host_key"
    assert [k.key for k in host.host_keys.all()] == [wrong]

    with pytest.raises(PermissionDenied):
        services.retrust_host_key(host, by=operator)
    services.retrust_host_key(host, by=admin_user)
    assert AuditEvent.objects.get(action="host.retrust_key").actor == admin_user

    assert services.gather_facts(only(host), by=None)["sshd"].facts
    host.refresh_from_db()
    assert (host.host_key_state, host.facts_error) == ("trusted", "")
    assert host.facts["kernel"] == os.uname().release


def test_a_wrong_key_is_refused_by_every_connection(sshd, sshd_host):
    """Not only fact gathering: any connection built from the host's spec."""
    import asyncio

    pin(sshd_host, other_public_key())
    spec = services.connection_spec(Host.objects.get(pk=sshd_host.pk))
    with pytest.raises(ssh.HostKeyError) as caught:
        asyncio.run(ssh.connect(spec))
    assert caught.value.presented_key == sshd.host_key


def test_an_unreadable_credential_is_reported_not_raised(sshd, sshd_host, settings):
    from cryptography.fernet import Fernet

    pin(sshd_host, sshd.host_key)
    settings.OPSPLANE_FERNET_KEYS = [Fernet.generate_key().decode()]
    outcome = services.gather_facts(only(sshd_host), by=None)["sshd"]
    assert outcome.reason == "credential" and "rotate_credentials" in outcome.detail
    assert Host.objects.get(pk=sshd_host.pk).facts_error == "credential"


# --- the lab: many hosts, concurrency, failures that block nobody --------------------------


@pytest.fixture
def lab_hosts(ssh_lab, admin_user, env):
    credential = services.save_credential(
        Credential(), {"name": "lab", "kind": "ssh_key"},
        private_key=Path(ssh_lab["client_key"]).read_text(), by=admin_user,
    )
    hosts = []
    for entry in ssh_lab["hosts"]:
        host = Host.objects.create(name=entry["name"], address=entry["address"],
                                   port=entry["port"], ssh_user=entry["user"],
                                   environment=env, credential=credential)
        pin(host, entry["host_key"])
        hosts.append(host)
    return hosts


def test_lab_hosts_report_facts_and_failures_block_nobody(lab_hosts, env, unused_tcp_port,
                                                          silent_port, client, monkeypatch):
    refused = Host.objects.create(name="refused", address="127.0.0.1", port=unused_tcp_port,
                                  environment=env)
    silent = Host.objects.create(name="silent", address="127.0.0.1", port=silent_port,
                                 environment=env)
    for host in (refused, silent):
        pin(host, other_public_key())
    before = {result: metric(client, "opsplane_cmdb_fact_gathering_total", result=result)
              for result in ("ok", "refused", "timeout")}

    in_flight, most = 0, 0
    real_connect = ssh.connect

    async def counting_connect(spec):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            conn = await real_connect(spec)
        except BaseException:
            in_flight -= 1
            raise
        real_close = conn.close

        def close():
            nonlocal in_flight
            in_flight -= 1
            real_close()

        conn.close = close
        return conn

    monkeypatch.setattr(ssh, "connect", counting_connect)
    started = time.monotonic()
    outcomes = services.gather_facts(Host.objects.all(), by=None, concurrency=4, timeout=2)
    elapsed = time.monotonic() - started

    assert most == 4  # never more than asked, and really in parallel
    assert elapsed < 6, "the silent host held the others up"
    assert (outcomes["refused"].reason, outcomes["silent"].reason) == ("refused", "timeout")
    assert "connection refused" in outcomes["refused"].detail
    for host in lab_hosts:
        assert outcomes[host.name].reason == "", outcomes[host.name].detail
        host.refresh_from_db()
        assert host.facts["hostname"] and host.facts["kernel"] == os.uname().release
        assert host.facts["cpu_count"] > 0 and host.facts["memory_kb"] > 0
    failed = {h.name: h.facts_error for h in Host.objects.exclude(facts_error="")}
    assert failed == {"refused": "refused", "silent": "timeout"}

    after = {result: metric(client, "opsplane_cmdb_fact_gathering_total", result=result)
             for result in before}
    assert {r: after[r] - before[r] for r in before} == {
        "ok": len(lab_hosts), "refused": 1, "timeout": 1}


def test_concurrency_bounds_how_long_slow_hosts_take(env, silent_port):
    """4 hosts that each take the whole timeout, 2 at a time: two rounds."""
    for i in range(4):
        host = Host.objects.create(name=f"slow-{i}", address="127.0.0.1", port=silent_port,
                                   environment=env)
        pin(host, other_public_key())
    started = time.monotonic()
    outcomes = services.gather_facts(Host.objects.all(), by=None, concurrency=2, timeout=1)
    elapsed = time.monotonic() - started
    assert {o.reason for o in outcomes.values()} == {"timeout"}
    assert 2 <= elapsed < 3.5


def test_first_contact_with_many_hosts_is_concurrency_limited(lab_hosts, operator,
                                                              monkeypatch):
    HostKey.objects.all().delete()
    Host.objects.update(host_key_state="unknown")
    in_flight, most = 0, 0
    real_fetch = ssh.fetch_host_key

    async def counting_fetch(*args, **kwargs):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            import asyncio

            await asyncio.sleep(0.05)  # overlap, were they all started at once
            return await real_fetch(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(ssh, "fetch_host_key", counting_fetch)
    outcomes = services.gather_facts(Host.objects.all(), by=operator, concurrency=3)
    assert most == 3
    assert all(o.facts for o in outcomes.values())
    assert HostKey.objects.filter(source="first_contact", trusted_by=operator).count() == len(
        lab_hosts)


# --- metrics ---------------------------------------------------------------------------------


def test_host_counts_by_environment_and_state(client, env):
    dev = Environment.objects.create(name="dev")
    key = other_public_key()
    for i in range(3):
        Host.objects.create(name=f"p{i}", environment=env)  # no key: unknown
    for i in range(2):
        pin(Host.objects.create(name=f"t{i}", environment=env), key)  # trusted
    Host.objects.create(name="off", environment=env, enabled=False)
    changed = Host.objects.create(name="c", environment=dev)
    pin(changed, key)
    services.record_host_key_mismatch(changed, other_public_key())
    assert metric(client, "opsplane_cmdb_hosts", environment="prod", state="enabled") == 5
    assert metric(client, "opsplane_cmdb_hosts", environment="prod", state="disabled") == 1
    assert metric(client, "opsplane_cmdb_hosts", environment="dev",
                  state="host_key_changed") == 1
    assert metric(client, "opsplane_cmdb_hosts", environment="dev", state="enabled") == 0


# --- through the real Celery worker ----------------------------------------------------------


def test_the_task_gathers_facts_on_a_worker(celery_worker, sshd, sshd_host, operator):
    pin(sshd_host, sshd.host_key)
    tasks.gather_facts.delay([sshd_host.pk], operator.pk).get(timeout=30)
    host = Host.objects.get(pk=sshd_host.pk)
    assert host.facts["kernel"] == os.uname().release and host.facts_error == ""


def test_the_api_queues_a_task_the_worker_runs(celery_worker, sshd, sshd_host, operator,
                                               client):
    """First contact through the API: the worker pins the key for the operator."""
    client.force_login(operator)
    response = client.post(f"/api/v1/hosts/{sshd_host.name}/facts/")
    assert response.status_code == 202 and response.json() == {"queued": ["sshd"]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        host = Host.objects.get(pk=sshd_host.pk)
        if host.facts_updated_at or host.facts_error:
            break
        time.sleep(0.1)
    assert host.facts_error == "" and host.facts["hostname"] == socket.gethostname()
    assert host.host_keys.get().trusted_by == operator
