"""cmdb.services: credentials and their encryption, host keys, groups, audit, roles."""

import importlib.util
import logging
import subprocess

import asyncssh
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command

from cmdb import selectors, services
from cmdb.models import Credential, Environment, Group, Host, HostKey, Service
from opsplane import secrets as vault
from opsplane import ssh
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "hunter2-Very-Secret-password"  # noqa: S105 - test data
PASSPHRASE = "open-sesame-passphrase"


def new_public_key():
    return ssh.public_key_line(asyncssh.generate_private_key("ssh-ed25519"))


@pytest.fixture(scope="module")
def rsa_key():
    return asyncssh.generate_private_key("ssh-rsa", key_size=2048)


@pytest.fixture
def env():
    return Environment.objects.create(name="dev")


def a_host(env, name="h1", **fields):
    return Host.objects.create(name=name, environment=env, **fields)


def key_lines(text):
    """The lines of a private key that carry key material (not the BEGIN/END lines)."""
    return [line for line in text.splitlines() if line and "-----" not in line]


# --- encryption at rest ------------------------------------------------------------------


def test_encrypt_round_trip_never_stores_the_plaintext():
    token = vault.encrypt({"password": PASSWORD})
    assert PASSWORD not in token
    assert vault.decrypt(token) == {"password": PASSWORD}


def test_rotation_with_two_keys_then_the_old_one_removed(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OPSPLANE_FERNET_KEYS = [old]
    token = vault.encrypt({"password": PASSWORD})

    settings.OPSPLANE_FERNET_KEYS = [new, old]
    assert vault.decrypt(token) == {"password": PASSWORD}  # old tokens still open
    rotated = vault.rotate(token)

    settings.OPSPLANE_FERNET_KEYS = [new]
    assert vault.decrypt(rotated) == {"password": PASSWORD}
    with pytest.raises(vault.SecretUnreadable, match="no key in OPSPLANE_FERNET_KEYS"):
        vault.decrypt(token)


def test_rotate_credentials_re_encrypts_every_credential(settings, admin_user, rsa_key,
                                                         capsys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OPSPLANE_FERNET_KEYS = [old]
    key_text = rsa_key.export_private_key().decode()
    services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                             password=PASSWORD, by=admin_user)
    services.save_credential(Credential(), {"name": "key", "kind": "ssh_key"},
                             private_key=key_text, by=admin_user)

    settings.OPSPLANE_FERNET_KEYS = [new, old]
    call_command("rotate_credentials")
    assert "re-encrypted 2 credentials" in capsys.readouterr().out

    settings.OPSPLANE_FERNET_KEYS = [new]
    assert vault.decrypt(Credential.objects.get(name="pw").secret) == {"password": PASSWORD}
    material = vault.decrypt(Credential.objects.get(name="key").secret)
    assert material["private_key"] == key_text
    assert AuditEvent.objects.filter(action="credential.rotate").count() == 2


def test_a_removed_key_makes_the_credential_unreadable_not_a_crash(settings, admin_user,
                                                                   env):
    old = Fernet.generate_key().decode()
    settings.OPSPLANE_FERNET_KEYS = [old]
    credential = services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                                          password=PASSWORD, by=admin_user)
    host = a_host(env, credential=credential)
    settings.OPSPLANE_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(vault.SecretUnreadable) as caught:
        services.connection_spec(host)
    assert "OPSPLANE_FERNET_KEYS" in str(caught.value)
    assert "rotate_credentials" in str(caught.value)


# --- credentials -------------------------------------------------------------------------


def test_ssh_key_credential_is_encrypted_and_described(admin_user, rsa_key):
    text = rsa_key.export_private_key("pkcs8-pem", PASSPHRASE).decode()
    credential = services.save_credential(
        Credential(), {"name": "deploy", "kind": "ssh_key"}, private_key=text,
        passphrase=PASSPHRASE, by=admin_user,
    )
    credential.refresh_from_db()
    assert PASSPHRASE not in credential.secret
    assert not any(line in credential.secret for line in key_lines(text))
    assert vault.decrypt(credential.secret) == {"private_key": text, "passphrase": PASSPHRASE}
    assert credential.public_key == ssh.public_key_line(rsa_key)
    assert credential.fingerprint == rsa_key.get_fingerprint("sha256")
    assert PASSPHRASE not in repr(credential) and PASSPHRASE not in str(credential)


def test_password_credential_round_trip(admin_user):
    credential = services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                                          password=PASSWORD, by=admin_user)
    credential.refresh_from_db()
    assert PASSWORD not in credential.secret
    assert vault.decrypt(credential.secret) == {"password": PASSWORD}
    assert credential.public_key == credential.fingerprint == ""


@pytest.mark.parametrize(("fmt", "passphrase", "field"), [
    ("pkcs8-pem", "wrong passphrase", "passphrase"),
    ("pkcs1-pem", "wrong passphrase", "passphrase"),
    ("pkcs8-pem", None, "passphrase"),  # encrypted, but no passphrase given
    ("garbage", None, "private_key"),
    ("garbage", PASSPHRASE, "private_key"),
])
def test_unreadable_keys_are_field_errors(admin_user, rsa_key, fmt, passphrase, field):
    text = ("not a key at all\n" if fmt == "garbage"
            else rsa_key.export_private_key(fmt, PASSPHRASE).decode())
    with pytest.raises(ValidationError) as caught:
        services.save_credential(Credential(), {"name": "bad", "kind": "ssh_key"},
                                 private_key=text, passphrase=passphrase, by=admin_user)
    assert list(caught.value.message_dict) == [field]
    assert not Credential.objects.exists()


def test_openssh_format_key_with_passphrase(admin_user, tmp_path):
    """ssh-keygen's default format; its KDF needs bcrypt (asyncssh's optional extra)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "",
                    "-f", str(tmp_path / "key")], check=True)
    text = (tmp_path / "key").read_text()
    fingerprint = ssh.fingerprint((tmp_path / "key.pub").read_text())

    def save(passphrase):
        return services.save_credential(Credential(), {"name": "k", "kind": "ssh_key"},
                                        private_key=text, passphrase=passphrase,
                                        by=admin_user)

    if importlib.util.find_spec("bcrypt") is None:
        with pytest.raises(ValidationError) as caught:  # the real reason, not "wrong"
            save(PASSPHRASE)
        assert "bcrypt" in caught.value.message_dict["passphrase"][0]
        pytest.skip("bcrypt is not installed, so passphrase-protected OpenSSH-format keys "
                    "cannot be read: the dependency should be asyncssh[bcrypt]")
    with pytest.raises(ValidationError) as caught:
        save("wrong")
    assert list(caught.value.message_dict) == ["passphrase"]
    assert save(PASSPHRASE).fingerprint == fingerprint


def test_a_new_credential_needs_its_secret(admin_user):
    with pytest.raises(ValidationError) as caught:
        services.save_credential(Credential(), {"name": "c", "kind": "ssh_key"},
                                 by=admin_user)
    assert "secret" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        services.save_credential(Credential(), {"name": "c", "kind": "password"},
                                 private_key="whatever", by=admin_user)
    assert "password" in caught.value.message_dict


def test_changing_the_kind_needs_the_new_secret(admin_user, rsa_key, env):
    credential = services.save_credential(
        Credential(), {"name": "c", "kind": "ssh_key"},
        private_key=rsa_key.export_private_key().decode(), by=admin_user)
    with pytest.raises(ValidationError) as caught:
        services.save_credential(credential, {"kind": "password"}, by=admin_user)
    assert "password" in caught.value.message_dict
    credential = Credential.objects.get(pk=credential.pk)
    assert credential.kind == "ssh_key"
    # Still usable: the kind and the stored secret agree.
    spec = services.connection_spec(a_host(env, credential=credential))
    assert spec.client_keys and spec.password is None
    services.save_credential(credential, {"kind": "password"}, password=PASSWORD,
                             by=admin_user)
    spec = services.connection_spec(Host.objects.get(name="h1"))
    assert spec.password == PASSWORD and not spec.client_keys


def test_updating_without_a_secret_keeps_the_old_one(admin_user):
    credential = services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                                          password=PASSWORD, by=admin_user)
    token = Credential.objects.get(pk=credential.pk).secret
    services.save_credential(credential, {"description": "for the db hosts"}, by=admin_user)
    credential = Credential.objects.get(pk=credential.pk)
    assert credential.secret == token and credential.description == "for the db hosts"
    event = AuditEvent.objects.filter(action="credential.update").get()
    assert event.detail["secret_replaced"] is False


@pytest.mark.parametrize("role", ["operator", "approver", "oncall", None])
def test_only_admins_manage_credentials(make_user, role):
    with pytest.raises(PermissionDenied):
        services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                                 password=PASSWORD, by=make_user(role))
    credential = Credential.objects.create(name="x", kind="password",
                                           secret=vault.encrypt({"password": PASSWORD}))
    with pytest.raises(PermissionDenied):
        services.delete_credential(credential, by=make_user(role))
    assert Credential.objects.filter(pk=credential.pk).exists()


def test_a_credential_in_use_cannot_be_deleted(admin_user, env):
    credential = services.save_credential(Credential(), {"name": "pw", "kind": "password"},
                                          password=PASSWORD, by=admin_user)
    a_host(env, "a", credential=credential)
    a_host(env, "b", credential=credential)
    with pytest.raises(services.CMDBError, match="2 hosts use this credential"):
        services.delete_credential(credential, by=admin_user)
    assert Credential.objects.filter(pk=credential.pk).exists()
    assert not AuditEvent.objects.filter(action="credential.delete").exists()
    Host.objects.update(credential=None)
    services.delete_credential(credential, by=admin_user)
    assert not Credential.objects.exists()
    assert AuditEvent.objects.filter(action="credential.delete").count() == 1


def test_secrets_never_reach_logs_or_the_audit_trail(admin_user, operator, env, sshd,
                                                     caplog, client):
    """Create, update, connect (a real sshd) and the pages, with every logger at DEBUG."""
    with open(sshd.client_key) as f:
        key_text = f.read()
    caplog.set_level(logging.DEBUG)
    for name in ("asyncssh", "django", "django.db.backends", "cmdb", "opsplane"):
        caplog.set_level(logging.DEBUG, logger=name)

    password_credential = services.save_credential(
        Credential(), {"name": "pw", "kind": "password"}, password=PASSWORD, by=admin_user)
    services.save_credential(password_credential, {"description": "changed"},
                             password=PASSWORD + "2", by=admin_user)
    credential = services.save_credential(Credential(), {"name": "key", "kind": "ssh_key"},
                                          private_key=key_text, by=admin_user)
    services.save_credential(credential, {"description": "again"}, private_key=key_text,
                             by=admin_user)
    host = a_host(env, "sshd", address=sshd.host, port=sshd.port, ssh_user=sshd.username,
                  credential=credential)
    outcomes = services.gather_facts(Host.objects.filter(pk=host.pk), by=operator)
    assert outcomes["sshd"].facts, outcomes  # the secret was really used
    # Failing paths log too: a wrong passphrase, an unreadable key.
    with pytest.raises(ValidationError):
        services.save_credential(Credential(), {"name": "bad", "kind": "ssh_key"},
                                 private_key=PASSWORD, passphrase=PASSPHRASE,
                                 by=admin_user)
    client.force_login(admin_user)
    pages = ""
    for url in ("/inventory/credentials/", "/inventory/credentials/key/edit/",
                "/inventory/credentials/pw/edit/", "/api/v1/credentials/",
                "/api/v1/credentials/key/"):
        response = client.get(url)
        assert response.status_code == 200, url
        pages += response.content.decode()

    assert caplog.records, "nothing was logged at all: is caplog capturing?"
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    audited = repr(list(AuditEvent.objects.values_list("detail", "object_repr")))
    secrets = [PASSWORD, PASSPHRASE, *key_lines(key_text)]
    for secret in secrets:
        assert secret not in logged
        assert secret not in audited
        assert secret not in pages


# --- host keys ---------------------------------------------------------------------------


def test_operators_pin_keys_and_who_trusted_is_recorded(operator, env):
    host = a_host(env)
    key = new_public_key()
    pinned = services.trust_host_key(host, key + " comment@dropped", by=operator)
    assert (pinned.key, pinned.source, pinned.trusted_by) == (key, "manual", operator)
    assert pinned.fingerprint == ssh.fingerprint(key)
    host.refresh_from_db()
    assert host.host_key_state == "trusted"
    event = AuditEvent.objects.get(action="host.trust_key")
    assert event.actor == operator and event.detail["fingerprint"] == pinned.fingerprint


@pytest.mark.parametrize("role", ["approver", "oncall", None])
def test_readers_cannot_pin_keys(make_user, env, role):
    with pytest.raises(PermissionDenied):
        services.trust_host_key(a_host(env), new_public_key(), by=make_user(role))
    assert not HostKey.objects.exists()


def test_the_system_pins_only_on_first_contact(env):
    host = a_host(env)
    with pytest.raises(PermissionDenied):
        services.trust_host_key(host, new_public_key(), by=None)
    pinned = services.trust_host_key(host, new_public_key(), by=None,
                                     source=HostKey.Source.FIRST_CONTACT)
    assert pinned.trusted_by is None
    assert AuditEvent.objects.get(action="host.trust_key").source == "worker"


def test_a_bad_public_key_is_a_field_error(operator, env):
    with pytest.raises(ValidationError) as caught:
        services.trust_host_key(a_host(env), "ssh-ed25519 not-base64", by=operator)
    assert "key" in caught.value.message_dict


def test_trusting_without_a_key_reads_the_one_presented(operator, env, sshd):
    host = a_host(env, address=sshd.host, port=sshd.port)
    pinned = services.trust_host_key(host, None, by=operator)
    assert pinned.key == sshd.host_key


def test_approver_cannot_make_the_server_connect_anywhere(approver, env, unused_tcp_port):
    """The role is checked before the presented key is fetched."""
    host = a_host(env, address="127.0.0.1", port=unused_tcp_port)
    with pytest.raises(PermissionDenied):
        services.trust_host_key(host, None, by=approver)


def test_changed_key_needs_an_admin(operator, admin_user, env):
    host = a_host(env)
    services.trust_host_key(host, new_public_key(), by=operator)
    presented = new_public_key()
    services.record_host_key_mismatch(host, presented)
    services.record_host_key_mismatch(host, presented)  # audited once
    host.refresh_from_db()
    assert (host.host_key_state, host.presented_host_key) == ("changed", presented)
    assert AuditEvent.objects.filter(action="host.key_changed").count() == 1

    with pytest.raises(services.CMDBError, match="an admin must re-trust"):
        services.trust_host_key(host, presented, by=operator)
    with pytest.raises(PermissionDenied):
        services.retrust_host_key(host, by=operator)
    services.retrust_host_key(host, by=admin_user)
    host.refresh_from_db()
    assert (host.host_key_state, host.presented_host_key) == ("trusted", "")
    pinned = host.host_keys.get()
    assert (pinned.key, pinned.source, pinned.trusted_by) == (presented, "retrust", admin_user)
    event = AuditEvent.objects.get(action="host.retrust_key")
    assert event.detail["new"] == ssh.fingerprint(presented)
    with pytest.raises(services.CMDBError, match="no changed host key"):
        services.retrust_host_key(host, by=admin_user)


# --- hosts, groups, services ---------------------------------------------------------------


def test_host_updates_audit_the_fields_that_changed(operator, env):
    web = Group.objects.create(name="web")
    host = services.save_host(Host(), {"name": "h1", "environment": env, "labels": {"a": "1"}},
                              by=operator)
    services.save_host(host, {"address": "10.0.0.2", "groups": [web],
                              "labels": {"a": "2"}}, by=operator)
    services.save_host(host, {"address": "10.0.0.2"}, by=operator)  # no change, no event
    events = AuditEvent.objects.filter(object_id=str(host.pk)).order_by("id")
    assert [e.action for e in events] == ["host.create", "host.update"]
    assert events[1].detail["changes"] == {
        "address": ["", "10.0.0.2"], "groups": [[], ["web"]], "labels": [{"a": "1"}, {"a": "2"}],
    }


def test_host_validation_errors_are_per_field(operator, env):
    with pytest.raises(ValidationError) as caught:
        services.save_host(Host(), {"name": "bad name", "environment": env, "port": 70000,
                                    "labels": {"env": "prod"}}, by=operator)
    assert {"name", "port", "labels"} <= set(caught.value.message_dict)
    with pytest.raises(services.CMDBError, match="Unknown fields: facts"):
        services.save_host(Host(), {"name": "h", "environment": env, "facts": {}},
                           by=operator)


@pytest.mark.parametrize("role", ["approver", "oncall", None])
def test_readers_cannot_write_the_inventory(make_user, env, role):
    user = make_user(role)
    host = a_host(env)
    group = Group.objects.create(name="g")
    service = Service.objects.create(name="s")
    for write in (
        lambda: services.save_host(Host(), {"name": "x", "environment": env}, by=user),
        lambda: services.save_host(host, {"address": "x"}, by=user),
        lambda: services.delete_host(host, by=user),
        lambda: services.bulk_edit_labels(Host.objects.all(), set_labels={"a": "b"}, by=user),
        lambda: services.save_group(Group(), {"name": "x"}, by=user),
        lambda: services.delete_group(group, by=user),
        lambda: services.save_service(Service(), {"name": "x"}, by=user),
        lambda: services.delete_service(service, by=user),
        lambda: services.save_environment(Environment(), {"name": "x"}, by=user),
        lambda: services.queue_fact_gathering(Host.objects.all(), by=user),
        lambda: services.gather_facts(Host.objects.all(), by=user),
    ):
        with pytest.raises(PermissionDenied):
            write()
    assert not AuditEvent.objects.exists()


def test_environments_are_for_admins(operator, admin_user):
    with pytest.raises(PermissionDenied):
        services.save_environment(Environment(), {"name": "qa"}, by=operator)
    env = services.save_environment(Environment(), {"name": "qa"}, by=admin_user)
    services.save_environment(env, {"protected": True}, by=admin_user)
    event = AuditEvent.objects.get(action="environment.update")
    assert event.detail["changes"] == {"protected": [False, True]}


def test_groups_nest_to_any_depth(operator, env):
    chain = [services.save_group(Group(), {"name": f"g{i}"}, by=operator) for i in range(6)]
    for parent, child in zip(chain, chain[1:], strict=False):
        services.save_group(child, {"parents": [parent]}, by=operator)
    host = a_host(env)
    host.groups.add(chain[-1])
    assert list(selectors.resolve("group=g0")) == [host]
    assert list(selectors.resolve("group=g5")) == [host]


@pytest.mark.parametrize("cycle", ["self", "direct", "deep"])
def test_group_cycles_are_refused(operator, cycle):
    a, b, c, d = (services.save_group(Group(), {"name": n}, by=operator) for n in "abcd")
    services.save_group(b, {"parents": [a]}, by=operator)
    services.save_group(c, {"parents": [b]}, by=operator)
    services.save_group(d, {"parents": [c]}, by=operator)
    parent = {"self": a, "direct": b, "deep": d}[cycle]
    with pytest.raises(ValidationError) as caught:
        services.save_group(a, {"parents": [parent], "description": "new"}, by=operator)
    assert list(caught.value.message_dict) == ["parents"]
    a = Group.objects.get(pk=a.pk)
    assert list(a.parents.all()) == [] and a.description == ""
    assert not AuditEvent.objects.filter(action="group.update", object_id=str(a.pk)).exists()


def test_services_audit_their_hosts(operator, env):
    h1, h2 = a_host(env, "h1"), a_host(env, "h2")
    service = services.save_service(Service(), {"name": "api", "hosts": [h1]}, by=operator)
    services.save_service(service, {"hosts": [h1, h2], "tier": "high"}, by=operator)
    event = AuditEvent.objects.get(action="service.update")
    assert event.detail["changes"] == {"tier": ["medium", "high"],
                                       "hosts": [["h1"], ["h1", "h2"]]}
    assert set(service.hosts.values_list("name", flat=True)) == {"h1", "h2"}


def test_bulk_label_edit_audits_each_host(operator, env):
    hosts = [a_host(env, f"h{i}", labels={"role": "web", "zone": "a"}) for i in range(3)]
    a_host(env, "db", labels={"role": "db"})
    changed = services.bulk_edit_labels(selectors.resolve("role=web"),
                                        set_labels={"canary": "yes"}, remove_keys=["zone"],
                                        by=operator)
    assert changed == 3
    for host in hosts:
        host.refresh_from_db()
        assert host.labels == {"role": "web", "canary": "yes"}
    assert Host.objects.get(name="db").labels == {"role": "db"}
    events = AuditEvent.objects.filter(action="host.update")
    assert events.count() == 3
    assert events[0].detail["changes"]["labels"][1] == {"role": "web", "canary": "yes"}
    with pytest.raises(ValidationError):
        services.bulk_edit_labels(Host.objects.all(), set_labels={"env": "x"}, by=operator)
