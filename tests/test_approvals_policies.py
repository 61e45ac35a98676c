"""Approval policies: matching subjects, combining requirements, N of group G, YAML."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError

from approvals import matching, policy_io, services
from approvals.models import ApprovalPolicy, ApprovalRequest
from approvals.testing import host, subject
from cmdb import selectors
from cmdb.models import Environment, Host, Service
from opsplane.models import AuditEvent
from opsplane.roles import ensure_role_groups

pytestmark = pytest.mark.django_db


def policy(name="p", **fields):
    fields.setdefault("requirements", [{"group": "approver", "count": 1}])
    return ApprovalPolicy(name=name, **fields)


# --- the host selector ------------------------------------------------------------------------

SELECTORS = [
    "", "role=web", "role!=web", "role in (db,cache)", "role notin (db)", "canary", "!canary",
    "env=prod", "env!=prod", "env in (dev,staging)", "service=orders", "service!=orders",
    "service in (orders,search)", "service notin (orders)", "name~web-*", "name!~*-[12]",
    "name=db-1", "name in (web-1,dev-1)", "role=web,zone=a", 'zone="a"', "role = web , !canary",
]


def test_the_policy_selector_picks_the_hosts_the_cmdb_selector_picks():
    """approvals evaluates selectors in Python on the facts its caller passes; for every
    term both languages share, it must agree with the CMDB's SQL."""
    prod = Environment.objects.create(name="prod")
    dev = Environment.objects.create(name="dev")
    made = [
        Host.objects.create(name="web-1", environment=prod, labels={"role": "web", "zone": "a",
                                                                    "canary": "true"}),
        Host.objects.create(name="web-2", environment=prod, labels={"role": "web", "zone": "b"}),
        Host.objects.create(name="db-1", environment=prod, labels={"role": "db", "zone": "a"}),
        Host.objects.create(name="cache-3", environment=dev, labels={"role": "cache"}),
        Host.objects.create(name="dev-1", environment=dev, labels={}),
    ]
    orders = Service.objects.create(name="orders")
    orders.hosts.set(made[2:4])
    Service.objects.create(name="search").hosts.set([made[0]])
    facts = [matching.HostFacts(name=h.name, environment=h.environment.name, labels=h.labels,
                                services=tuple(s.name for s in h.services.all()))
             for h in made]
    for text in SELECTORS:
        ours = {h.name for h in matching.hosts_matching(facts, selector=text)}
        theirs = set(selectors.resolve(text).values_list("name", flat=True))
        assert ours == theirs, text


@pytest.mark.parametrize(("text", "position", "words"), [
    ("role in (", 9, "a value"),
    ("group=web", 0, "'group' needs the inventory"),
    ("!env", 1, "keywords cannot be tested"),
    ("role~web*", 4, "globs on 'name' only"),
    ("env", 3, "an operator after 'env'"),
    ('role="web', 9, "to close the value"),
    ("role=web;", 8, "',' or end of input"),
])
def test_selector_errors_say_where_and_what(text, position, words):
    with pytest.raises(matching.SelectorError) as info:
        matching.parse_selector(text)
    assert info.value.position == position and words in info.value.message


# --- which policies match, and what they demand ---------------------------------------------------


def test_a_policy_matches_by_environment_selector_runbook_and_risk(operator):
    db = host("db-1", "prod", services=["orders"], role="db")
    web = host("web-1", "prod", role="web")
    dev_db = host("db-9", "dev", role="db")
    s = subject(operator, db, web, runbook="restart", risk="high")
    policies = [
        policy("prod", environments=["prod"]),
        policy("dev", environments=["dev"]),
        policy("db", selector="role=db"),
        policy("prod-db", environments=["prod"], selector="role=db"),
        policy("restart", runbooks=["restart"]),
        policy("deploy", runbooks=["deploy"]),
        policy("risky", min_risk="high"),
        policy("critical", min_risk="critical"),
        policy("everything"),
    ]
    names = [p.name for p, _ in services.matching_policies(s, policies)]
    assert names == ["prod", "db", "prod-db", "restart", "risky", "everything"]
    # Environment and selector must hold on the same host: prod web + dev db is no match.
    mixed = subject(operator, web, dev_db)
    assert [p.name for p, _ in services.matching_policies(
        mixed, [policy("prod-db", environments=["prod"], selector="role=db")])] == []


def test_every_matching_policy_is_required_and_protected_hosts_get_the_default(operator):
    web = host("web-1", "prod", role="web")
    dev = host("dev-1", "dev", role="web")
    # No policy, protected environment: one approver, never the author.
    default = services.requirements_for(subject(operator, web), [])
    assert default == [services.default_requirement({"prod"})]
    assert default[0]["requirements"] == [{"group": "approver", "count": 1}]
    assert default[0]["allow_author"] is False
    # No policy, nothing protected: no approval at all.
    assert services.requirements_for(subject(operator, dev), []) == []
    # Two policies match: both are required; a policy about dev hosts does not let the
    # prod hosts of the same change through without the default.
    both = [policy("a", runbooks=["r"]), policy("b", requirements=[{"group": "dba",
                                                                    "count": 1}])]
    assert [s["policy"] for s in services.requirements_for(
        subject(operator, web, runbook="r"), both)] == ["a", "b"]
    dev_only = [policy("dev", environments=["dev"])]
    assert [s["policy"] for s in services.requirements_for(
        subject(operator, web, dev), dev_only)] == ["dev", ""]


def test_n_of_group_g_counts_different_people():
    # "1 of dba AND 1 of approver": one person in both groups fills one slot only.
    assert len(matching.assign(["dba", "approver"], {"ann": {"dba", "approver"}})) == 1
    assert len(matching.assign(["dba", "approver"],
                               {"ann": {"dba", "approver"}, "bob": {"dba"}})) == 2
    # Augmenting paths: ann first takes dba, then moves to approver for bob's sake.
    owner = matching.assign(["dba", "approver"], {"ann": {"dba", "approver"}, "bob": {"dba"}})
    assert owner == {0: "bob", 1: "ann"}
    assert len(matching.assign(["approver", "approver"], {"ann": {"approver"}})) == 1


# --- editing and YAML ---------------------------------------------------------------------------


def test_only_admins_edit_policies_and_every_edit_is_audited(approver, admin_user):
    data = {"name": "prod-db", "environments": ["prod"], "selector": "role=db",
            "requirements": [{"group": "approver", "count": 2}]}
    with pytest.raises(PermissionDenied):
        services.save_policy(ApprovalPolicy(), data, by=approver)
    saved = services.save_policy(ApprovalPolicy(), data, by=admin_user)
    with pytest.raises(ValidationError) as info:
        services.save_policy(saved, {"selector": "role in (",
                                     "requirements": [{"group": "nobody", "count": 1}]},
                             by=admin_user)
    assert {"selector", "requirements"} <= set(info.value.message_dict)
    assert "nobody" in str(info.value.message_dict["requirements"])
    assert list(AuditEvent.objects.filter(object_type="approvals.approvalpolicy")
                .values_list("action", flat=True)) == ["approval_policy.create"]


def test_an_open_request_keeps_what_the_policies_said(operator, admin_user):
    services.save_policy(ApprovalPolicy(), {
        "name": "two", "requirements": [{"group": "approver", "count": 2}]}, by=admin_user)
    req = services.open_request(subject(operator, host("web-1")), by=operator)
    services.save_policy(ApprovalPolicy.objects.get(name="two"), {
        "requirements": [{"group": "approver", "count": 5}]}, by=admin_user)
    req.refresh_from_db()
    assert req.requirements[0]["requirements"] == [{"group": "approver", "count": 2}]


DOCUMENT = """
version: 1
policies:
  - name: prod-db
    description: Databases in production need a DBA and an approver.
    match:
      environments: [prod]
      selector: role=db
      min_risk: high
    require:
      - {group: dba, count: 1}
      - {group: approver, count: 1}
    validity_hours: 24
  - name: restarts
    match:
      runbooks: [restart]
    require:
      - {group: approver, count: 2}
    author_may_approve: true
    rejection_ends: false
"""


def test_yaml_import_then_export_round_trips(admin_user):
    ensure_role_groups()
    Group.objects.create(name="dba")
    created, updated, deleted = services.import_policies(DOCUMENT, by=admin_user)
    assert (created, updated, deleted) == (["prod-db", "restarts"], [], [])
    prod_db = ApprovalPolicy.objects.get(name="prod-db")
    assert prod_db.requirements == [{"group": "dba", "count": 1},
                                    {"group": "approver", "count": 1}]
    assert prod_db.min_risk == "high" and prod_db.validity_hours == 24
    assert ApprovalPolicy.objects.get(name="restarts").allow_author is True
    exported = services.export_policies()
    assert policy_io.parse(exported) == policy_io.parse(DOCUMENT)
    # Importing the export again updates, changes nothing; prune deletes the unnamed.
    ApprovalPolicy.objects.create(name="stale", requirements=[{"group": "approver",
                                                              "count": 1}])
    assert services.import_policies(exported, by=admin_user, prune=True) == (
        [], ["prod-db", "restarts"], ["stale"])


@pytest.mark.parametrize(("change", "path", "words"), [
    (("count: 1}\n      - {group: approver", "count: 0}\n      - {group: approver"),
     "policies[0].require[0].count", "less than the minimum of 1"),
    (("name: prod-db", "name: prod db"), "policies[0].name", "does not match"),
    (("selector: role=db", "selector: role in ("), "policies[0].match.selector", "position"),
    (("min_risk: high", "min_risk: extreme"), "policies[0].match.min_risk", "extreme"),
    (("environments: [prod]", "envs: [prod]"), "policies[0].match.envs", "unexpected"),
    (("validity_hours: 24", "validity_hours: soon"), "policies[0].validity_hours",
     "not of type 'integer'"),
    (("version: 1", "version: 2"), "version", "1 was expected"),
    (("name: restarts", "name: prod-db"), "policies[1].name", "already the name"),
    (("    require:\n      - {group: approver, count: 2}\n", ""), "policies[1].require",
     "required property"),
    (("{group: dba, count: 1}", "{group: dba, count: 1"), "line 12", "not valid YAML"),
    (("{group: dba, count: 1}", "{group: nobody, count: 1}"), "policies[0].require[0].group",
     "no group named 'nobody'"),
])
def test_yaml_import_errors_name_the_field_and_import_nothing(admin_user, change, path, words):
    ensure_role_groups()
    Group.objects.create(name="dba")
    old, new = change
    assert old in DOCUMENT
    with pytest.raises(policy_io.PolicyFileError) as info:
        services.import_policies(DOCUMENT.replace(old, new, 1), by=admin_user)
    assert path in info.value.errors, info.value.errors
    assert words in info.value.errors[path]
    assert not ApprovalPolicy.objects.exists()


def test_import_needs_the_admin_role(operator):
    with pytest.raises(PermissionDenied):
        services.import_policies(DOCUMENT, by=operator)


def test_automatic_when_nothing_asks_and_pending_otherwise(operator):
    dev = services.open_request(subject(operator, host("dev-1", "dev"), id="1"), by=operator)
    assert dev.status == ApprovalRequest.Status.APPROVED and dev.automatic
    prod = services.open_request(subject(operator, host("web-1"), id="2"), by=operator)
    assert prod.status == ApprovalRequest.Status.PENDING and not prod.automatic
    assert services.progress_text(prod) == "0 of 1 from approver"
