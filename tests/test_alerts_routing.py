"""The routing tree against Alertmanager's semantics: its own route tests
(dispatch/route_test.go), the example of its configuration docs, matchers, time
intervals, validation that names the path, import of a real alertmanager.yml."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from django.core.exceptions import PermissionDenied, ValidationError

from alerts import amimport, routing, timeintervals
from alerts import matchers as m

# Alertmanager's dispatch/route_test.go (TestRouteMatch), as one of our configs.
AM_ROUTE_TEST = """
route:
  receiver: 'notify-def'
  routes:
  - match:
      owner: 'team-A'
    receiver: 'notify-A'
    routes:
    - match:
        env: 'testing'
      receiver: 'notify-testing'
      group_by: [...]
    - match:
        env: "production"
      receiver: 'notify-productionA'
      group_wait: 1m
      continue: true
    - match_re:
        env: "produ.*"
        job: ".*"
      receiver: 'notify-productionB'
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 1h
      group_by: ['job']
  - match_re:
      owner: 'team-(B|C)'
    group_by: ['foo', 'bar']
    group_wait: 2m
    receiver: 'notify-BC'
  - match:
      group_by: 'role'
    group_by: ['role']
    routes:
    - match:
        env: 'testing'
      receiver: 'notify-testing'
      routes:
      - match:
          wait: 'long'
        group_wait: 2m
receivers:
  - name: notify-def
  - name: notify-A
  - name: notify-testing
  - name: notify-productionA
  - name: notify-productionB
  - name: notify-BC
"""

S = timedelta(seconds=1)


def _opts(route):
    return (route.receiver, set(route.group_by), route.group_by_all, route.group_wait,
            route.group_interval, route.repeat_interval)


@pytest.mark.parametrize(("labels", "expected", "keys"), [
    ({"owner": "team-A"}, [("notify-A", set(), False, 30 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{owner="team-A"}']),
    ({"owner": "team-A", "env": "unset"},
     [("notify-A", set(), False, 30 * S, 300 * S, 4 * 3600 * S)], ['{}/{owner="team-A"}']),
    ({"owner": "team-C"}, [("notify-BC", {"foo", "bar"}, False, 120 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{owner=~"team-(B|C)"}']),
    ({"owner": "team-A", "env": "testing"},
     [("notify-testing", set(), True, 30 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{owner="team-A"}/{env="testing"}']),
    ({"owner": "team-A", "env": "production"},
     [("notify-productionA", set(), False, 60 * S, 300 * S, 4 * 3600 * S),
      ("notify-productionB", {"job"}, False, 30 * S, 300 * S, 3600 * S)],
     ['{}/{owner="team-A"}/{env="production"}',
      '{}/{owner="team-A"}/{env=~"produ.*",job=~".*"}']),
    ({"group_by": "role"}, [("notify-def", {"role"}, False, 30 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{group_by="role"}']),
    ({"env": "testing", "group_by": "role"},
     [("notify-testing", {"role"}, False, 30 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{group_by="role"}/{env="testing"}']),
    ({"env": "testing", "group_by": "role", "wait": "long"},
     [("notify-testing", {"role"}, False, 120 * S, 300 * S, 4 * 3600 * S)],
     ['{}/{group_by="role"}/{env="testing"}/{wait="long"}']),
])
def test_alertmanagers_own_route_cases(labels, expected, keys):
    tree = routing.parse(AM_ROUTE_TEST)
    matched = tree.match(labels)
    assert [_opts(r) for r in matched] == expected
    assert [r.key for r in matched] == keys


def test_walk_order_is_alertmanagers():
    tree = routing.parse(AM_ROUTE_TEST)
    assert [r.receiver for r in tree.root.walk()] == [
        "notify-def", "notify-A", "notify-testing", "notify-productionA", "notify-productionB",
        "notify-BC", "notify-def", "notify-testing", "notify-testing"]


# The example of Alertmanager's configuration documentation (docs/configuration.md).
DOCS_EXAMPLE = """
route:
  receiver: 'default-receiver'
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  group_by: [cluster, alertname]
  routes:
  - receiver: 'database-pager'
    group_wait: 10s
    matchers:
    - service=~"mysql|cassandra"
  - receiver: 'frontend-pager'
    group_by: [product, environment]
    matchers:
    - team="frontend"
  - receiver: 'dev-pager'
    matchers:
      - service="inhouse-service"
    mute_time_intervals:
      - offhours
      - holidays
    continue: true
  - receiver: 'on-call-pager'
    matchers:
      - service="inhouse-service"
    active_time_intervals:
      - offhours
      - holidays
time_intervals:
- name: offhours
  time_intervals:
    - times:
      - start_time: 20:00
        end_time: 23:00
      weekdays: ['monday:friday']
      location: Asia/Shanghai
- name: holidays
  time_intervals:
    - months: ['december']
      days_of_month: ['25', '26']
receivers:
- name: default-receiver
- name: database-pager
- name: frontend-pager
- name: dev-pager
- name: on-call-pager
"""


def test_docs_example_routes_and_inheritance():
    tree = routing.parse(DOCS_EXAMPLE)
    [db] = tree.match({"service": "mysql", "cluster": "eu", "alertname": "Down"})
    assert db.receiver == "database-pager" and db.group_wait == 10 * S
    assert db.group_by == ("cluster", "alertname")  # inherited
    assert db.group_interval == 300 * S and db.repeat_interval == 4 * 3600 * S
    # Regexes are anchored: "mysqlx" is not "mysql|cassandra".
    [default] = tree.match({"service": "mysqlx"})
    assert default.receiver == "default-receiver" and default is tree.root
    [front] = tree.match({"team": "frontend", "product": "shop", "environment": "prod",
                          "cluster": "eu"})
    assert front.group_labels({"team": "frontend", "product": "shop", "environment": "prod",
                               "cluster": "eu"}) == {"product": "shop", "environment": "prod"}
    # continue: both dev-pager and on-call-pager get it.
    assert [r.receiver for r in tree.match({"service": "inhouse-service"})] == [
        "dev-pager", "on-call-pager"]


def test_docs_example_time_intervals():
    tree = routing.parse(DOCS_EXAMPLE)
    dev, oncall = tree.match({"service": "inhouse-service"})
    # Monday 2026-11-30 21:00 in Shanghai is 13:00 UTC: off hours.
    evening = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    noon = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    christmas = datetime(2026, 12, 25, 4, 0, tzinfo=UTC)
    assert tree.muted_by_time(dev, evening) == "offhours"
    assert tree.muted_by_time(dev, christmas) == "holidays"
    assert tree.muted_by_time(dev, noon) == ""
    assert tree.muted_by_time(oncall, noon).startswith("not in")
    assert tree.muted_by_time(oncall, evening) == ""
    # Time intervals are not inherited (as in Alertmanager): the root is never muted.
    assert tree.muted_by_time(tree.root, evening) == ""


def test_matchers_anchor_and_read_missing_labels_as_empty():
    def ok(text, labels):
        return m.matches_all(m.parse(text), labels)

    assert ok('env=~"prod"', {"env": "prod"}) and not ok('env=~"prod"', {"env": "production"})
    assert not ok('env=~"rod"', {"env": "prod"})
    assert ok('env!~"prod"', {"env": "production"}) and not ok('env!~"pro.*"', {"env": "prod"})
    assert ok('env!="prod"', {}) and ok('env=""', {}) and ok('env=~".*"', {})
    assert not ok('env=~".+"', {})
    assert ok('{a="1", b=~"x|y"}', {"a": "1", "b": "y"})
    assert ok('msg="a, \\"quoted\\" b"', {"msg": 'a, "quoted" b'})
    assert str(m.parse('job=~.*')[0]) == 'job=~".*"'
    assert m.format_matchers(m.parse('{owner="team-A", level!="critical"}')) == \
        '{level!="critical",owner="team-A"}'
    for bad in ("nolabel", 'a=~"("', 'a="unterminated', "{a=b"):
        with pytest.raises(m.MatcherError):
            m.parse(bad)


def test_group_by_all_and_its_inheritance():
    tree = routing.parse("""
route:
  routes:
  - matchers: [env="parent"]
    group_by: ['...']
    routes:
    - matchers: [tier="child1"]
    - matchers: [tier="child2"]
      group_by: [foo]
""")
    labels = {"env": "parent", "tier": "child1", "x": "1"}
    [child1] = tree.match(labels)
    assert child1.group_by_all and child1.group_labels(labels) == labels
    assert child1.group_key(labels) == \
        '{}/{env="parent"}/{tier="child1"}:{env="parent", tier="child1", x="1"}'
    [child2] = tree.match({"env": "parent", "tier": "child2", "foo": "f", "x": "1"})
    assert not child2.group_by_all and child2.group_by == ("foo",)


def test_inheritance_of_receiver_timers_and_severity_channels():
    tree = routing.parse("""
route:
  receiver: team
  repeat_interval: 1h
  routes:
  - matchers: [severity="critical"]
    group_interval: 1m
    routes:
    - matchers: [team="db"]
  - matchers: [team="web"]
    receiver: ""
severity_channels:
  critical: [phone]
receivers:
  - name: team
    channels: [chat-team, sms-team]
    send_resolved: false
""")
    [leaf] = tree.match({"severity": "critical", "team": "db"})
    assert leaf.receiver == "team" and leaf.repeat_interval == 3600 * S
    assert leaf.group_interval == 60 * S and leaf.group_wait == 30 * S
    assert tree.targets(leaf, "critical") == ("team", ("chat-team", "sms-team"), False)
    # An empty receiver inherits too (as Alertmanager); severity_channels apply only to
    # routes without any receiver.
    [web] = tree.match({"team": "web"})
    assert web.receiver == "team"
    default = routing.parse(routing.DEFAULT_YAML)
    assert default.targets(default.root, "critical") == ("", ("chat", "sms"), True)
    assert default.targets(default.root, "warning") == ("", ("chat",), True)
    assert default.targets(default.root, "info") == ("", (), True)


def test_route_keys_survive_edits_that_do_not_change_matchers():
    before = routing.parse(DOCS_EXAMPLE)
    edited = routing.load_yaml(DOCS_EXAMPLE)
    edited["route"]["routes"][0]["group_wait"] = "1m"
    edited["route"]["routes"][1]["receiver"] = "database-pager"
    edited["route"]["routes"].insert(0, {"matchers": ['team="new"'], "receiver": "dev-pager"})
    edited["route"]["group_interval"] = "10m"
    after = routing.parse(yaml.safe_dump(edited))
    assert set(before.routes) <= set(after.routes)
    # Identical siblings stay apart.
    twins = routing.parse("route:\n  routes:\n  - matchers: [a=\"1\"]\n    continue: true\n"
                          "  - matchers: [a=\"1\"]\n")
    assert [r.key for r in twins.match({"a": "1"})] == ['{}/{a="1"}', '{}/{a="1"}#2']


@pytest.mark.parametrize(("text", "path", "words"), [
    ("receivers: []\n", "route", "no routes"),
    ("route: {matchers: [a=\"b\"]}\n", "route", "root route must not have matchers"),
    ("route: {continue: true}\n", "route.continue", "cannot continue"),
    ("route: {group_wait: 5x}\n", "route.group_wait", "not a duration"),
    ("route: {group_interval: 0s}\n", "route.group_interval", "cannot be zero"),
    ("route: {routes: [{receiver: nope}]}\n", "route.routes[0].receiver", "undefined receiver"),
    ("route: {routes: [{group_by: [a, '...']}]}\n", "route.routes[0].group_by", "wildcard"),
    ("route: {group_by: [a, a]}\n", "route.group_by", "duplicated"),
    ("route: {routes: [{}, {matchers: ['a=~\"(\"']}]}\n", "route.routes[1].matchers[0]",
     "regular expression"),
    ("route: {routes: [{mute_time_intervals: [x]}]}\n", "route.routes[0].mute_time_intervals",
     "undefined time interval"),
    ("route: {group_wiat: 1m}\n", "route.group_wiat", "unknown field"),
    ("route: {}\nreceivers: [{name: a, webhook_configs: [{url: 'http://x'}]}]\n",
     "receivers[0].webhook_configs", "Import"),
    ("route: {}\nglobal: {}\n", "global", "unknown section"),
    ("route: {}\nseverity_channels: {urgent: [x]}\n", "route.severity_channels.urgent",
     "unknown severity"),
    ("route: {}\ninhibit_rules: [{source_matchers: ['a=~\"[\"'], equal: [x]}]\n",
     "inhibit_rules[0].source_matchers[0]", "regular expression"),
    ("route: {}\ntime_intervals: [{name: t, time_intervals: [{weekdays: [funday]}]}]\n",
     "time_intervals[0].time_intervals[0].weekdays[0]", "not a weekday"),
    ("route: [\n", "line 2", "not valid YAML"),
])
def test_validation_names_the_path(text, path, words):
    with pytest.raises(routing.ConfigError) as caught:
        routing.parse(text)
    assert any(p.startswith(path) and words in msg for p, msg in caught.value.errors), \
        caught.value.errors


ALERTMANAGER_YML = """
global:
  resolve_timeout: 5m
  smtp_smarthost: 'localhost:25'
templates: ['/etc/alertmanager/*.tmpl']
route:
  receiver: team-ops
  group_by: ['alertname', 'cluster', 'service']
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 3h
  routes:
  - matchers: [service=~"foo1|foo2|baz"]
    receiver: team-X-mails
    routes:
    - matchers: [severity="critical"]
      receiver: team-X-pager
  - match_re:
      service: ^(database|db)$
    receiver: team-DB-pager
    group_by: [alertname, cluster, database]
    mute_time_intervals: [weekends]
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: ['alertname', 'cluster', 'service']
mute_time_intervals:
- name: weekends
  time_intervals:
  - weekdays: ['saturday', 'sunday']
receivers:
- name: team-ops
  webhook_configs:
  - url: 'http://ops.example/hook'
- name: team-X-mails
  email_configs:
  - to: 'team-X+alerts@example.org'
- name: team-X-pager
  email_configs:
  - to: 'team-X+alerts-critical@example.org'
    send_resolved: true
- name: team-DB-pager
  pagerduty_configs:
  - service_key: secret
"""


def test_import_from_a_real_alertmanager_yml():
    imported = amimport.convert(ALERTMANAGER_YML)
    source, notes = imported.source, imported.notes
    tree = routing.parse(source)
    assert "global" not in source and "service_key" not in source and "smtp" not in source
    assert "ops.example" not in source
    assert any("global, templates" in note for note in notes)
    assert tree.receivers["team-X-mails"].channels == ("team-X-mails",)
    assert tree.receivers["team-X-mails"].send_resolved is False  # e-mail's default
    assert tree.receivers["team-X-pager"].send_resolved is True
    assert tree.receivers["team-ops"].send_resolved is True  # webhook's default
    [pager] = tree.match({"service": "foo1", "severity": "critical"})
    assert pager.receiver == "team-X-pager"
    [db] = tree.match({"service": "db"})
    assert db.mute_time_intervals == ("weekends",)
    assert tree.muted_by_time(db, datetime(2026, 11, 28, 12, tzinfo=UTC)) == "weekends"
    assert len(tree.inhibit_rules) == 1
    plans = {p.name: p for p in imported.channels}
    assert plans["team-ops"].kind == "webhook" and plans["team-ops"].enabled
    assert plans["team-X-mails"].config == {"recipients": ["team-X+alerts@example.org"]}
    pager = plans["team-DB-pager"]
    assert pager.placeholder and "pagerduty_configs" in pager.description
    assert "secret" not in repr(pager)
    with pytest.raises(routing.ConfigError):
        amimport.convert("route: {routes: [{receiver: ghost}]}\nreceivers: []\n")


# A production-like alertmanager.yml: robot URLs with their tokens, a receiver with
# several integrations, a template in `to`, a URL in a file, a blackhole receiver.
REAL_YML = """
global:
  resolve_timeout: 5m
  slack_api_url: 'https://hooks.slack.com/services/T000/B000/globalsecret'
  smtp_smarthost: 'smtp.example.org:587'
  smtp_from: 'alertmanager@example.org'
  smtp_auth_password: 'smtp-password'
route:
  receiver: default
  group_by: [alertname, cluster]
  routes:
  - matchers: [severity="critical"]
    receiver: oncall pager
    continue: true
  - matchers: [team="db"]
    receiver: db-team
  - matchers: [team="infra"]
    receiver: wechat-ops
  - matchers: [team="null"]
    receiver: blackhole
receivers:
- name: default
  webhook_configs:
  - url: 'https://hooks.example.com/alertmanager?token=hooksecret'
    http_config:
      authorization: {type: Bearer, credentials: bearersecret}
- name: oncall pager
  slack_configs:
  - channel: '#pager'
    send_resolved: true
  email_configs:
  - to: 'oncall@example.org, lead@example.org'
  - to: '{{ template "email.to" . }}'
- name: db-team
  webhook_configs:
  - url_file: /etc/alertmanager/db-hook-url
- name: wechat-ops
  wechat_configs:
  - corp_id: corp
    api_secret: wechatsecret
    agent_id: '1000002'
- name: blackhole
"""
SECRETS = ("hooksecret", "bearersecret", "globalsecret", "smtp-password", "wechatsecret",
           "hooks.slack.com/services")


def test_import_maps_receivers_onto_channels():
    imported = amimport.convert(REAL_YML)
    plans = {p.name: p for p in imported.channels}
    assert set(plans) == {"default", "oncall-pager-slack", "oncall-pager-email-1",
                          "oncall-pager-email-2", "db-team", "wechat-ops"}
    tree = routing.parse(imported.source)
    assert tree.receivers["oncall pager"].channels == (
        "oncall-pager-email-1", "oncall-pager-email-2", "oncall-pager-slack")
    assert tree.receivers["blackhole"].channels == ()
    default = plans["default"]
    assert (default.kind, default.enabled, default.target) == ("webhook", True,
                                                              "hooks.example.com")
    assert default.secret_fields == {
        "url": "https://hooks.example.com/alertmanager?token=hooksecret",
        "token": "bearersecret"}
    slack = plans["oncall-pager-slack"]
    assert slack.kind == "slack" and slack.secret_fields["url"].endswith("globalsecret")
    assert plans["oncall-pager-email-1"].config == {
        "recipients": ["oncall@example.org", "lead@example.org"],
        "from_email": "alertmanager@example.org"}
    for name, kind in (("oncall-pager-email-2", "email"), ("db-team", "webhook"),
                       ("wechat-ops", "wecom")):
        assert plans[name].placeholder and plans[name].kind == kind, name
        assert not plans[name].secret_fields
    assert "url_file" in plans["db-team"].description
    shown = imported.source + " ".join(imported.notes) + " ".join(
        f"{p.description} {p.target}" for p in imported.channels)
    for secret in SECRETS:
        assert secret not in shown
    assert any("blackhole" in note and "nobody" in note for note in imported.notes)


@pytest.mark.django_db
def test_import_creates_channels_with_the_tree_in_one_step(client, admin_user, oncall):
    from alerts import services
    from alerts.models import RoutingConfig
    from opsplane import secrets
    from opsplane.models import AuditEvent
    from opsplane.notify.models import Channel
    from opsplane.notify.services import save_channel

    # An existing channel is never overwritten.
    save_channel(Channel(), {"name": "default", "kind": "webhook", "config": {}},
                 secret_fields={"url": "http://127.0.0.1:9/mine"}, by=admin_user)
    imported, create, existing = services.import_alertmanager(REAL_YML)
    assert existing == ["default"] and len(create) == 5
    assert Channel.objects.count() == 1 and RoutingConfig.objects.count() == 0
    # On-call may save trees but not create channels.
    client.force_login(oncall)
    page = client.post("/alerts/routes/import/", {"alertmanager_yml": REAL_YML})
    html = page.content.decode()
    assert "Importing will create 5 channels" in html and "Only admins may create" in html
    assert not any(secret in html for secret in SECRETS)
    with pytest.raises(PermissionDenied):
        services.apply_import(REAL_YML, by=oncall)

    client.force_login(admin_user)
    page = client.post("/alerts/routes/import/", {"alertmanager_yml": REAL_YML})
    html = page.content.decode()
    assert "Importing will create 5 channels" in html and "placeholder, disabled" in html
    assert not any(secret in html for secret in SECRETS)
    assert 'name="alertmanager_yml"' not in html  # the pasted text is not sent back
    digest = re.search(r'name="digest" value="([0-9a-f]+)"', html).group(1)
    # A preview other than the one in the session is refused.
    assert client.post("/alerts/routes/import/", {"apply": "1", "digest": "0" * 64}) \
        .status_code == 302 and RoutingConfig.objects.count() == 0
    done = client.post("/alerts/routes/import/", {"apply": "1", "digest": digest})
    assert done.status_code == 302 and done["Location"] == "/alerts/routes/"
    config = RoutingConfig.objects.get()
    channels = {c.name: c for c in Channel.objects.all()}
    assert len(channels) == 6
    mine = channels["default"]
    assert secrets.decrypt(mine.secret) == {"url": "http://127.0.0.1:9/mine"}
    slack = channels["oncall-pager-slack"]
    assert slack.enabled and slack.kind == "slack" and "globalsecret" not in slack.target
    assert "globalsecret" in secrets.decrypt(slack.secret)["url"]
    assert "globalsecret" not in slack.secret
    assert not channels["wechat-ops"].enabled and channels["wechat-ops"].kind == "wecom"
    assert channels["oncall-pager-email-1"].config["recipients"] == [
        "oncall@example.org", "lead@example.org"]
    audit = AuditEvent.objects.get(action="alert_routing.import")
    assert audit.detail["version"] == config.version
    assert sorted(audit.detail["placeholders_created"]) == [
        "db-team", "oncall-pager-email-2", "wechat-ops"]
    logged = json.dumps(list(AuditEvent.objects.values("detail")))
    assert not any(secret in logged for secret in SECRETS)
    # Importing again creates nothing and changes no channel.
    _imported, create, existing = services.import_alertmanager(REAL_YML)
    assert create == [] and len(existing) == 6
    # A placeholder is filled in later by an admin and then enabled.
    save_channel(channels["db-team"], {"enabled": True},
                 secret_fields={"url": "http://127.0.0.1:9/db"}, by=admin_user)
    with pytest.raises(ValidationError):
        save_channel(channels["wechat-ops"], {"enabled": True}, by=admin_user)


def test_time_interval_details():
    def interval(data):
        return timeintervals.parse_interval(data, "t")

    last_day = interval({"days_of_month": ["-1"]})
    assert last_day.contains(datetime(2026, 2, 28, tzinfo=UTC))
    assert not last_day.contains(datetime(2026, 2, 27, tzinfo=UTC))
    assert last_day.contains(datetime(2024, 2, 29, tzinfo=UTC))
    business = interval({"weekdays": ["monday:friday"],
                         "times": [{"start_time": "09:00", "end_time": "17:00"}]})
    assert business.contains(datetime(2026, 11, 27, 9, 0, tzinfo=UTC))      # Friday
    assert not business.contains(datetime(2026, 11, 27, 17, 0, tzinfo=UTC))  # end exclusive
    assert not business.contains(datetime(2026, 11, 28, 10, 0, tzinfo=UTC))  # Saturday
    assert interval({"months": ["january:march"]}).contains(datetime(2026, 2, 1, tzinfo=UTC))
    assert not interval({"months": ["1:3"]}).contains(datetime(2026, 4, 1, tzinfo=UTC))
    assert interval({"years": ["2025:2026"]}).contains(datetime(2026, 1, 1, tzinfo=UTC))
    assert interval({"times": [{"start_time": "23:00", "end_time": "24:00"}]}).contains(
        datetime(2026, 1, 1, 23, 59, tzinfo=UTC))
    for bad in ({"weekdays": ["friday:monday"]}, {"times": [{"start_time": "10:00",
                                                             "end_time": "09:00"}]},
                {"location": "Mars/Olympus"}, {"days_of_month": ["40"]}):
        with pytest.raises(timeintervals.IntervalError):
            interval(bad)


def test_durations():
    assert routing.parse_duration("1h30m") == timedelta(minutes=90)
    assert routing.parse_duration("1d") == timedelta(days=1)
    assert routing.parse_duration("0") == timedelta(0)
    assert routing.parse_duration("500ms") == timedelta(milliseconds=500)
    for bad in ("", "5", "1.5h", "m"):
        with pytest.raises(ValueError):
            routing.parse_duration(bad)


@pytest.mark.django_db
def test_import_over_the_api(client, admin_user, operator):
    from alerts.models import RoutingConfig
    from opsplane.notify.models import Channel

    client.force_login(operator)
    url = "/api/v1/alerts/routing/import/"
    preview = client.post(url, {"alertmanager_yml": REAL_YML}, content_type="application/json")
    assert preview.status_code == 200
    body = preview.json()
    assert body["version"] is None and len(body["channels_to_create"]) == 6
    assert not any(secret in preview.content.decode() for secret in SECRETS)
    refused = client.post(url, {"alertmanager_yml": REAL_YML, "apply": True},
                          content_type="application/json")
    assert refused.status_code == 403 and not Channel.objects.exists()
    client.force_login(admin_user)
    done = client.post(url, {"alertmanager_yml": REAL_YML, "apply": True},
                       content_type="application/json")
    assert done.status_code == 200 and done.json()["version"] == 1
    assert Channel.objects.count() == 6 and RoutingConfig.objects.count() == 1
