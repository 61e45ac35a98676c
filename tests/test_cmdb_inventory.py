"""Inventory import and export (cmdb/inventory.py), judged against ``ansible-inventory``.

Every Ansible file is imported, then the hosts, their groups (direct and inherited) and
their effective variables are compared with what ``ansible-inventory --list`` makes of
the same file. ansible-core is a test dependency only; each file is listed once per run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from cmdb import inventory
from cmdb.models import Environment, Group, Host
from cmdb.services import CMDBError
from opsplane.models import AuditEvent
from opsplane.testing.require import unavailable

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data" / "inventories"
ANSIBLE_INVENTORY = Path(sys.executable).with_name("ansible-inventory")


# --- ansible-inventory, the reference ------------------------------------------------


@pytest.fixture(scope="session")
def ansible_list(tmp_path_factory):
    """``ansible_list(path)`` -> the JSON of ``ansible-inventory -i path --list``."""
    if not ANSIBLE_INVENTORY.exists():
        unavailable(f"{ANSIBLE_INVENTORY} is missing (pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("ansible")
    (home / "ansible.cfg").write_text("")
    env = {
        **os.environ,
        # Nothing from the developer's ~/.ansible or an ansible.cfg nearby; only the two
        # file plugins, and a file they cannot parse is a failure, not an empty inventory.
        "ANSIBLE_HOME": str(home / "home"), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    cache = {}

    def run(path):
        path = Path(path)
        key = (path.name, path.read_bytes())
        if key not in cache:
            result = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
                                    capture_output=True, text=True, env=env, cwd=home,
                                    timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            cache[key] = json.loads(result.stdout)
        return cache[key]

    return run


def ansible_groups(listing):
    """{host: (direct groups, every group it is in)} from --list output (without all and
    ungrouped, which are implicit in the CMDB)."""
    children = {name: body.get("children", []) for name, body in listing.items()
                if name != "_meta"}
    parents = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)
    direct = {}
    for name, body in listing.items():
        if name != "_meta":
            for host in body.get("hosts", []):
                direct.setdefault(host, set()).add(name)

    def above(group):
        found, stack = set(), [group]
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(parents.get(current, ()))
        return found

    implicit = {"all", "ungrouped"}
    return {host: (groups - implicit, set().union(*map(above, groups)) - implicit)
            for host, groups in direct.items()}


def cmdb_groups():
    parents = {g.name: {p.name for p in g.parents.all()} for g in Group.objects.all()}

    def above(group):
        found, stack = set(), [group]
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(parents.get(current, ()))
        return found

    result = {}
    for host in Host.objects.prefetch_related("groups"):
        direct = {g.name for g in host.groups.all()}
        result[host.name] = (direct, set().union(set(), *map(above, direct)))
    return result


def assert_same_as_ansible(listing):
    hostvars = listing["_meta"]["hostvars"]
    expected_groups = ansible_groups(listing)
    assert set(Host.objects.values_list("name", flat=True)) == set(expected_groups)
    assert cmdb_groups() == expected_groups
    effective = inventory.effective_variables_many(Host.objects.all())
    assert effective == {name: hostvars.get(name, {}) for name in expected_groups}
    # Group parents as well, for the groups Ansible knows.
    for name, body in listing.items():
        if name not in ("_meta", "all", "ungrouped") and body.get("children"):
            group = Group.objects.get(name=name)
            assert {c.name for c in group.children.all()} >= set(body["children"])


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def prod():
    return Environment.objects.create(name="prod", protected=True)


@pytest.fixture
def staging():
    return Environment.objects.create(name="staging")


def read(name):
    return (DATA / name).read_text()


def import_text(text, fmt, *, environment, by):
    plan = inventory.plan_import(text, fmt, environment=environment)
    assert plan.errors == []
    inventory.apply_import(plan, by=by)
    return plan


# --- Ansible files, against ansible-inventory -------------------------------------------


@pytest.mark.parametrize("name, fmt", [("prod.ini", "ini"), ("prod.yml", "yaml"),
                                       ("quirks.ini", "ini"), ("quirks.yml", "yaml")])
def test_import_matches_ansible_inventory(name, fmt, ansible_list, prod, staging, operator):
    plan = import_text(read(name), fmt, environment=prod, by=operator)
    assert {item.action for item in plan.hosts} == {"create"}
    assert_same_as_ansible(ansible_list(DATA / name))


def test_ini_and_yaml_files_are_the_same_inventory(ansible_list):
    # A check of the test data: the YAML file really is the INI file rewritten.
    ini, yml = ansible_list(DATA / "prod.ini"), ansible_list(DATA / "prod.yml")
    assert ini["_meta"] == yml["_meta"]
    assert ansible_groups(ini) == ansible_groups(yml)


def test_fields_environments_labels_and_groups(prod, staging, operator):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    web21 = Host.objects.get(name="web21.example.com")
    assert (web21.address, web21.port, web21.ssh_user) == ("", 2222, "deploy")
    # ansible_port lives in the port field only; the file's variables are all there is.
    assert web21.variables == {"release": "2024.06", "weight": 1.5, "canary": True}
    web22 = Host.objects.get(name="web22.example.com")
    assert (web22.address, web22.port) == ("10.0.1.22", 2200)
    db = Host.objects.get(name="db-a-01.example.com")
    assert db.ssh_user == "postgres"  # a group variable, the db group's over all's
    assert db.variables == {"pg_role": "primary", "node_exporter_port": 9100}
    assert db.labels == {"role": "db"}  # db (deeper) beats monitoring
    assert Host.objects.get(name="cache7.example.com").ssh_user == "redis"
    assert Host.objects.get(name="web01.example.com").labels == {"role": "web",
                                                                 "team": "frontend"}
    assert Host.objects.get(name="bastion.example.com").labels == {}
    assert set(Host.objects.filter(environment=staging).values_list("name", flat=True)) == {
        "stage-web01.example.com", "stage-db01.example.com"}
    assert Host.objects.filter(environment=prod).count() == 38
    assert Group.objects.get(name="all").variables["ansible_user"] == "deploy"
    assert not Host.objects.filter(groups__name="all").exists()
    assert not Group.objects.filter(name="ungrouped").exists()
    assert Group.objects.get(name="beijing").variables["ansible_group_priority"] == 5
    assert {g.name for g in Group.objects.get(name="web").parents.all()} == {"shanghai",
                                                                              "beijing"}


def test_ansible_list_json_imports_too(ansible_list, prod, staging, operator):
    listing = ansible_list(DATA / "prod.ini")
    plan = import_text(json.dumps(listing, indent=2), "json", environment=prod, by=operator)
    assert len(plan.hosts) == 40
    assert_same_as_ansible(listing)
    assert Host.objects.filter(environment=staging).count() == 2


def test_export_round_trips_through_ansible(ansible_list, prod, staging, operator, tmp_path):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    exported = inventory.export_ansible_yaml(Host.objects.all(), environment=prod)
    path = tmp_path / "export.yml"
    path.write_text(exported)
    original, again = ansible_list(DATA / "prod.ini"), ansible_list(path)
    assert again["_meta"]["hostvars"] == original["_meta"]["hostvars"]
    assert ansible_groups(again) == ansible_groups(original)
    # And back into the CMDB: nothing to do.
    plan = inventory.plan_import(exported, "yaml", environment=prod)
    assert plan.errors == [] and not plan.has_changes


def test_export_shows_field_edits_and_environments(prod, staging, operator):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    Host.objects.filter(name="web01.example.com").update(port=2022, address="10.0.1.1",
                                                         labels={"role": "canary"})
    Host.objects.filter(name="web02.example.com").update(environment=staging)
    effective = inventory.effective_variables(Host.objects.get(name="web01.example.com"))
    assert (effective["ansible_port"], effective["ansible_host"]) == (2022, "10.0.1.1")
    assert effective["opsplane_labels"] == {"role": "canary"}
    exported = inventory.export_ansible_yaml(Host.objects.all(), environment=prod)
    # The staging group's variable, and web02's, which moved out of prod.
    assert exported.count("opsplane_env: staging") == 2
    # Without an environment, every host says where it belongs.
    assert inventory.export_ansible_yaml(Host.objects.all()).count("opsplane_env: prod") == 37
    plan = inventory.plan_import(exported, "yaml", environment=prod)
    # The fields already hold what the file says; the environment has no field default
    # to fall back on, so the moved host's variable is stored from now on.
    assert [(item.name, item.changes) for item in plan.hosts if item.action != "unchanged"] \
        == [("web02.example.com", {"variables": [{}, {"opsplane_env": "staging"}]})]


def test_variables_the_fields_cannot_give_back_stay_variables(prod, operator):
    text = ("[web]\nw1 ansible_port=2222 ansible_host=10.0.0.1\nw2 ansible_port=\"'2222'\"\n"
            "w3 ansible_port=22 ansible_user=root\n")
    import_text(text, "ini", environment=prod, by=operator)
    hosts = {host.name: host for host in Host.objects.all()}
    assert hosts["w1"].variables == {} and hosts["w1"].address == "10.0.0.1"
    assert hosts["w2"].variables == {"ansible_port": "2222"} and hosts["w2"].port == 2222
    assert hosts["w3"].variables == {"ansible_port": 22, "ansible_user": "root"}
    assert inventory.effective_variables(hosts["w2"]) == {"ansible_port": "2222"}


# --- plans: created, updated, unchanged, not in file -------------------------------


def test_reimport_is_unchanged_and_writes_nothing(prod, staging, operator,
                                                  django_assert_max_num_queries):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    events = AuditEvent.objects.count()
    stamp = Host.objects.get(name="web01.example.com").updated_at
    plan = inventory.plan_import(read("prod.ini"), "ini", environment=prod)
    assert {item.action for item in plan.hosts + plan.groups} == {"unchanged"}
    assert not plan.has_changes
    with django_assert_max_num_queries(12):  # reads and locks only
        summary = inventory.apply_import(plan, by=operator)
    assert summary["hosts"]["unchanged"] == 40
    assert AuditEvent.objects.count() == events
    assert Host.objects.get(name="web01.example.com").updated_at == stamp


def test_second_import_after_edits(prod, staging, operator):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    Host.objects.create(name="old.example.com", environment=prod)
    text = read("prod.ini").replace("weight=1.5", "weight=2.5") \
        .replace("pg_version=15", "pg_version=16") \
        .replace("ansible_user=postgres", "ansible_user=pgadmin") \
        .replace("[monitoring]\nweb01.example.com\n", "[monitoring]\nweb02.example.com\n") \
        .replace("[api]\n", "[api]\napi-new.example.com\n")
    plan = inventory.plan_import(text, "ini", environment=prod)
    assert plan.errors == []
    by_name = {item.name: item for item in plan.hosts}
    assert by_name["web21.example.com"].action == "update"
    assert by_name["web21.example.com"].changes == {"variables": [
        {"release": "2024.06", "weight": 1.5, "canary": True},
        {"release": "2024.06", "weight": 2.5, "canary": True}]}
    assert by_name["api-new.example.com"].action == "create"
    assert by_name["api-new.example.com"].changes["groups"] == [None, ["api"]]
    assert by_name["web01.example.com"].changes == {
        "groups": [["monitoring", "web"], ["web"]]}
    assert by_name["web02.example.com"].changes == {
        "groups": [["web"], ["monitoring", "web"]]}
    # A group variable that is a connection setting changes the hosts' fields.
    assert by_name["db-b-02.example.com"].changes == {"ssh_user": ["postgres", "pgadmin"]}
    assert by_name["db-a-01.example.com"].changes == {"ssh_user": ["postgres", "pgadmin"]}
    assert by_name["web03.example.com"].action == "unchanged"
    counts = plan.counts()
    assert counts["hosts"] == {"create": 1, "update": 9, "unchanged": 31, "not_in_file": 1}
    groups = {item.name: item for item in plan.groups}
    assert groups["db"].action == "update"
    assert groups["db"].changes["variables"][1]["pg_version"] == 16
    assert plan.not_in_file == ["old.example.com"]

    events = AuditEvent.objects.count()
    inventory.apply_import(plan, by=operator)
    assert AuditEvent.objects.count() == events + 10 + 1
    event = AuditEvent.objects.filter(action="host.import",
                                      object_repr="web21.example.com").first()
    assert event.actor == operator
    assert event.detail["changes"]["variables"][1]["weight"] == 2.5
    summary = AuditEvent.objects.get(action="inventory.import", detail__hosts__create=1)
    assert summary.detail["hosts"]["update"] == 9 and summary.detail["format"] == "ini"
    assert Host.objects.filter(name="old.example.com").exists()  # never deleted
    assert {g.name for g in Host.objects.get(name="web01.example.com").groups.all()} == {"web"}
    assert Host.objects.get(name="db-c-01.example.com").ssh_user == "pgadmin"
    assert inventory.effective_variables(
        Host.objects.get(name="db-c-01.example.com"))["pg_version"] == 16
    assert not inventory.plan_import(text, "ini", environment=prod).has_changes


def test_existing_hosts_keep_environment_and_labels_unless_the_file_sets_them(
        prod, staging, operator):
    host = Host.objects.create(name="bastion.example.com", environment=staging,
                               labels={"zone": "dmz"}, owner_team="secops")
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    host.refresh_from_db()
    assert (host.environment, host.labels, host.owner_team) == (staging, {"zone": "dmz"},
                                                                "secops")
    assert host.address == "203.0.113.10"


def test_apply_refuses_a_stale_plan(prod, staging, operator):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    plan = inventory.plan_import(read("prod.ini").replace("weight=1.5", "weight=3"), "ini",
                                 environment=prod)
    Host.objects.filter(name="web21.example.com").update(variables={})
    with pytest.raises(CMDBError, match="changed since"):
        inventory.apply_import(plan, by=operator)
    assert Host.objects.get(name="web21.example.com").variables == {}


def test_only_editors_apply(prod, outsider):
    plan = inventory.plan_import("web01.example.com\n", "ini", environment=prod)
    with pytest.raises(PermissionDenied):
        inventory.apply_import(plan, by=outsider)
    assert not Host.objects.exists()


# --- errors, with line numbers; nothing applied -------------------------------------------


def assert_refused(plan, by):
    before = (Host.objects.count(), Group.objects.count())
    with pytest.raises(CMDBError, match="errors"):
        inventory.apply_import(plan, by=by)
    assert (Host.objects.count(), Group.objects.count()) == before


def lines(plan):
    return [(error["line"], error["message"]) for error in plan.errors]


def test_ini_errors_have_line_numbers(prod, operator):
    plan = inventory.plan_import(read("bad.ini"), "ini", environment=prod)
    found = lines(plan)
    assert [line for line, _ in found] == [4, 5, 6, 7, 8, 10, 11, 13]
    messages = dict(found)
    assert "web[01:5]" in messages[4] and "same width" in messages[4]
    assert "web_01!.example.com" in messages[5]
    assert "nowhere" in messages[6] and "db01.example.com" in messages[6]
    assert "99999" in messages[7]
    assert "key=value" in messages[8]
    assert "missing" in messages[10]
    assert "ghost" in messages[11]
    assert "oops" in messages[13]
    assert_refused(plan, operator)


def test_yaml_errors_have_line_numbers(prod, operator):
    plan = inventory.plan_import(read("bad_syntax.yml"), "yaml", environment=prod)
    assert [line for line, _ in lines(plan)] == [8]
    assert "Malformed YAML" in plan.errors[0]["message"]
    assert_refused(plan, operator)

    plan = inventory.plan_import(read("bad_values.yml"), "yaml", environment=prod)
    found = lines(plan)
    assert [line for line, _ in found] == [5, 8, 10, 11, 14, 15]
    messages = dict(found)
    assert "not-a-port" in messages[5] and "group “web”" in messages[5]
    assert "web 02.example.com" in messages[8]
    assert "nowhere" in messages[10]
    assert "selector keyword" in messages[11]
    assert "mapping" in messages[14]
    assert "db[x:1]" in messages[15]
    assert_refused(plan, operator)


def test_csv_errors_have_line_numbers(prod, operator):
    plan = inventory.plan_import(read("bad.csv"), "csv", environment=prod)
    found = lines(plan)
    # Row 1 spans lines 2-3 (a quoted newline), so the bad port is on line 4.
    assert [line for line, _ in found] == [4, 5, 6, 7]
    messages = dict(found)
    assert "port" in messages[4] and "'http'" in messages[4]
    assert "web 03.example.com" in messages[5]
    assert "nowhere" in messages[6]
    assert "bad!group" in messages[7]
    assert_refused(plan, operator)


def test_json_errors_have_line_numbers(prod):
    plan = inventory.plan_import('[\n  {"name": "a.example.com"},\n  {"name": "b", "port": '
                                 '"22"},\n  {"name": "c", "colour": 1}\n]\n', "json",
                                 environment=prod)
    assert [line for line, _ in lines(plan)] == [3, 4]
    plan = inventory.plan_import('{"hosts": [\n  {"name": "a"},\n  {"name": }\n]}', "json",
                                 environment=prod)
    assert [line for line, _ in lines(plan)] == [3]
    assert "Malformed JSON" in plan.errors[0]["message"]


def test_loops_of_groups_are_refused(prod):
    plan = inventory.plan_import("[a:children]\nb\n[b:children]\na\n[b]\nh1\n", "ini",
                                 environment=prod)
    assert len(plan.errors) == 1 and "loop" in plan.errors[0]["message"]
    assert plan.errors[0]["line"] in (2, 4)


def test_limits(prod, monkeypatch):
    plan = inventory.plan_import("[web]\nweb[1:200000]\n", "ini", environment=prod)
    assert lines(plan) == [(2, "More than 100000 hosts: the import stops here.")]
    monkeypatch.setattr(inventory, "MAX_INPUT_BYTES", 100)
    plan = inventory.plan_import("x" * 101, "ini", environment=prod)
    assert plan.errors[0]["line"] is None and "limit is 100" in plan.errors[0]["message"]


def test_yaml_aliases_cannot_blow_up(prod, monkeypatch):
    monkeypatch.setattr(inventory, "MAX_YAML_VALUES", 10_000)
    laughs = ["x: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"x{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    text = "\n".join(laughs) + "\nall:\n  vars:\n    lol: *a8\n"
    plan = inventory.plan_import(text, "yaml", environment=prod)
    assert [e["message"] for e in plan.errors] == [
        "The variables hold more than 10000 values: the import stops here."]


def test_unsupported_ansible_features_are_errors(prod):
    plan = inventory.plan_import("[ungrouped:vars]\nx=1\n", "ini", environment=prod)
    assert lines(plan)[0][0] == 2 and "ungrouped" in lines(plan)[0][1]
    plan = inventory.plan_import(
        "all:\n  hosts:\n    h1:\n      secret: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n"
        "        6162\n", "yaml", environment=prod)
    assert lines(plan)[0][0] == 4 and "vault" in lines(plan)[0][1]
    plan = inventory.plan_import("[web]\nw1 ansible_user='{{ lookup(\"env\", \"USER\") }}'\n",
                                 "ini", environment=prod)
    assert lines(plan)[0][0] == 2 and "templates" in lines(plan)[0][1]


def test_bytes_input(prod):
    plan = inventory.plan_import("\ufeff[web]\nw1\n".encode(), "ini", environment=prod)
    assert plan.errors == [] and [item.name for item in plan.hosts] == ["w1"]
    plan = inventory.plan_import(b"[web]\nw1\nw\xff\n", "ini", environment=prod)
    assert lines(plan) == [(3, "The file is not UTF-8 text.")]


def test_ansible_json_hosts_only_in_hostvars_are_ignored(prod):
    text = json.dumps({"web": {"hosts": ["w1"]},
                       "_meta": {"hostvars": {"w1": {"a": 1}, "w2": {"b": 2}}}}, indent=1)
    plan = inventory.plan_import(text, "json", environment=prod)
    assert [item.name for item in plan.hosts] == ["w1"]
    assert [w["line"] for w in plan.warnings] == [12]  # where w2's variables start


def test_warnings_do_not_block(prod, operator):
    text = ("all:\n  hosts:\n    h1:\n      groups: [x]\n      a: 1\n      a: 2\n"
            "  colour: blue\n")
    plan = inventory.plan_import(text, "yaml", environment=prod)
    assert plan.errors == []
    assert [w["line"] for w in plan.warnings] == [4, 6, 7]
    inventory.apply_import(plan, by=operator)
    assert Host.objects.get(name="h1").variables == {"a": 2}


# --- host patterns -----------------------------------------------------------------------


@pytest.mark.parametrize("pattern, names, port", [
    ("web[01:03]", ["web01", "web02", "web03"], None),
    ("web[1:12:4].example.com", ["web1.example.com", "web5.example.com", "web9.example.com"],
     None),
    ("api-[a:c]", ["api-a", "api-b", "api-c"], None),
    ("db-[a:b]-[01:02].example.com", ["db-a-01.example.com", "db-a-02.example.com",
                                      "db-b-01.example.com", "db-b-02.example.com"], None),
    ("web01:2222", ["web01"], 2222),
    ("10.0.0.[1:2]:22", ["10.0.0.1", "10.0.0.2"], 22),
    ("[web01]:2200", ["web01"], 2200),
    ("web[:2]", ["web0", "web1", "web2"], None),
])
def test_host_patterns(pattern, names, port, prod):
    inv = inventory._Ansible(inventory._Context(prod, inventory._Report(), "ini"))
    assert inv.host_pattern(pattern, 1) == (names, port)


# --- CSV and our JSON ------------------------------------------------------------------------


def test_csv_import(prod, staging, operator):
    Group.objects.create(name="edge", variables={"uplink": "10G"})
    import_text(read("hosts.csv"), "csv", environment=prod, by=operator)
    lb1 = Host.objects.get(name="lb01.example.com")
    assert (lb1.address, lb1.port, lb1.ssh_user, lb1.owner_team) == (
        "192.0.2.10", 22, "admin", "netops")
    assert lb1.variables == {"vip": "192.0.2.100", "weight": 10}
    assert lb1.labels == {"role": "lb"}
    assert {g.name for g in lb1.groups.all()} == {"lb", "edge"}
    assert Group.objects.get(name="edge").variables == {"uplink": "10G"}  # untouched
    lb2 = Host.objects.get(name="lb02.example.com")
    assert lb2.labels == {"role": "lb", "zone": "b"} and lb2.port == 2222
    assert lb2.description == "Standby, takes over on failure"
    stage = Host.objects.get(name="stage-lb01.example.com")
    assert (stage.environment, stage.enabled, stage.port, stage.ssh_user) == (
        staging, False, 22, "root")


def test_csv_columns_that_are_absent_are_left_alone(prod, staging, operator):
    import_text(read("hosts.csv"), "csv", environment=prod, by=operator)
    plan = inventory.plan_import("name,address\nlb01.example.com,192.0.2.99\n", "csv",
                                 environment=staging)
    assert [(item.name, item.action, item.changes) for item in plan.hosts] == [
        ("lb01.example.com", "update", {"address": ["192.0.2.10", "192.0.2.99"]})]
    inventory.apply_import(plan, by=operator)
    host = Host.objects.get(name="lb01.example.com")
    assert (host.address, host.environment, host.owner_team) == ("192.0.2.99", prod, "netops")
    assert {g.name for g in host.groups.all()} == {"lb", "edge"}


def test_json_import(prod, operator):
    import_text(read("hosts.json"), "json", environment=prod, by=operator)
    lb = Group.objects.get(name="lb")
    assert lb.variables == {"haproxy_maxconn": 4096}
    assert [p.name for p in lb.parents.all()] == ["edge"]
    lb2 = Host.objects.get(name="lb02.example.com")
    assert (lb2.port, lb2.environment, lb2.ssh_user) == (2222, prod, "root")
    effective = inventory.effective_variables(Host.objects.get(name="lb01.example.com"))
    assert effective == {"uplink": "10G", "haproxy_maxconn": 4096, "vip": "192.0.2.100",
                         "weight": 10, "ansible_host": "192.0.2.10", "ansible_user": "admin",
                         "opsplane_labels": {"role": "lb"}}


def test_csv_export_imports_back_unchanged(prod, staging, operator):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    import_text(read("hosts.csv"), "csv", environment=prod, by=operator)
    exported = inventory.export_csv(Host.objects.all())
    assert exported.splitlines()[0] == ",".join(inventory.CSV_COLUMNS)
    plan = inventory.plan_import(exported, "csv", environment=staging)
    assert plan.errors == []
    assert len(plan.hosts) == 43 and not plan.has_changes


# --- effective variables, file_sd ------------------------------------------------------------


def test_effective_variables_take_a_constant_number_of_queries(prod, staging, operator,
                                                               django_assert_num_queries):
    import_text(read("prod.ini"), "ini", environment=prod, by=operator)
    with django_assert_num_queries(4):
        many = inventory.effective_variables_many(Host.objects.all())
    assert len(many) == 40
    with django_assert_num_queries(4):
        few = inventory.effective_variables_many(Host.objects.filter(name__startswith="db"))
    assert few == {name: many[name] for name in few} and len(few) == 6


def test_file_sd_export(prod, staging):
    Host.objects.create(name="web01.example.com", address="10.0.0.1", environment=prod,
                        labels={"app.kubernetes.io/name": "shop", "team": "web", "1st": "y"})
    Host.objects.create(name="db01.example.com", environment=staging)
    Host.objects.create(name="v6.example.com", address="2001:db8::1", environment=prod)
    targets = json.loads(inventory.export_file_sd(Host.objects.all(), port=9100))
    assert targets == [
        {"targets": ["db01.example.com:9100"], "labels": {"env": "staging",
                                                          "host": "db01.example.com"}},
        {"targets": ["[2001:db8::1]:9100"], "labels": {"env": "prod",
                                                       "host": "v6.example.com"}},
        {"targets": ["10.0.0.1:9100"], "labels": {
            "_1st": "y", "app_kubernetes_io_name": "shop", "team": "web", "env": "prod",
            "host": "web01.example.com"}},
    ]
