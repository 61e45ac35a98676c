"""The routing tree: Alertmanager's ``route``, ``receivers``, ``inhibit_rules`` and
``time_intervals`` sections, with Alertmanager's semantics, plus opsplane's
``severity_channels``.

- A route matches when all its matchers do; its children are tried in order and the
  walk stops at the first matching child unless that child says ``continue``; a node
  none of whose children matched is itself the match (``Route.match``).
- Unset ``receiver``, ``group_by``, ``group_wait``, ``group_interval``,
  ``repeat_interval`` and ``severity_channels`` are inherited from the parent;
  ``mute_time_intervals`` and ``active_time_intervals`` are not (as in Alertmanager).
- A receiver sends to notification channels by name: its ``channels`` list, or the
  channel named like the receiver. A route without a receiver (at any level) sends by
  the incident's severity through ``severity_channels``.
- A route's identity is its key, built as Alertmanager builds it: the parent's key, a
  slash, and the route's sorted matchers (``{}/{team="db"}``). Editing timers,
  receivers or the order of unrelated routes keeps every key, so open incidents keep
  their notification state and nothing is sent again. Two siblings with identical
  matchers are told apart by a ``#2`` suffix.

``parse()`` validates everything and raises ``ConfigError`` with one message per
problem, each naming its path (``route.routes[1].group_wait``).
"""

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import yaml

from alerts import matchers as m
from alerts import timeintervals

SEVERITIES = ("critical", "warning", "info")

DEFAULT_YAML = """\
# Alertmanager's format: route, receivers, inhibit_rules, time_intervals.
# A route without a receiver sends by severity through severity_channels
# (channel names of the notification settings).
route:
  group_by: [alertname, cluster]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    # A silent heartbeat integration gets an incident of its own.
    - matchers: [alertname="HeartbeatMissing"]
      group_by: [alertname, integration]
      group_wait: 0s
severity_channels:
  critical: [chat, sms]
  warning: [chat]
  info: []
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname, cluster]
"""

DEFAULTS = {"group_wait": timedelta(seconds=30), "group_interval": timedelta(minutes=5),
            "repeat_interval": timedelta(hours=4)}
DEFAULT_SEVERITY_CHANNELS = {"critical": ("chat", "sms"), "warning": ("chat",), "info": ()}

ROUTE_FIELDS = {"receiver", "group_by", "continue", "matchers", "match", "match_re",
                "group_wait", "group_interval", "repeat_interval", "mute_time_intervals",
                "active_time_intervals", "routes", "severity_channels", "escalation"}
SECTIONS = {"route", "receivers", "inhibit_rules", "time_intervals", "mute_time_intervals",
            "severity_channels"}
RECEIVER_FIELDS = {"name", "channels", "send_resolved"}
INHIBIT_FIELDS = {"source_match", "source_match_re", "source_matchers", "target_match",
                  "target_match_re", "target_matchers", "equal"}
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


class _Loader(yaml.SafeLoader):
    """YAML as Go's yaml reads an Alertmanager config: ``20:00`` and ``1:5`` stay text
    (PyYAML's YAML 1.1 would read them as base-60 numbers, 1200 and 65)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_yaml(text):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """``errors`` is a list of (path, message)."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{p}: {msg}" for p, msg in errors))
        self.errors = errors


def parse_duration(text):
    """Prometheus' duration syntax (``30s``, ``1h30m``, ``0``) -> timedelta."""
    text = str(text).strip()
    if text == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(int(v) * unit for v, unit in zip(match.groups(), _DURATION_UNITS,
                                                    strict=True) if v)
    return timedelta(seconds=seconds)


def format_duration(delta):
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


def label_set_string(labels):
    """Alertmanager's ``LabelSet.String()``: ``{a="b", c="d"}``, names sorted."""
    return "{" + ", ".join(f"{k}={m.go_quote(labels[k])}" for k in sorted(labels)) + "}"


@dataclass
class Receiver:
    name: str
    channels: tuple
    send_resolved: bool = True


@dataclass
class InhibitRule:
    source: list
    target: list
    equal: tuple
    path: str = ""


@dataclass
class Route:
    key: str
    path: str
    matchers: list
    cont: bool
    receiver: str
    group_by: tuple
    group_by_all: bool
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    severity_channels: dict
    mute_time_intervals: tuple = ()
    active_time_intervals: tuple = ()
    routes: list = field(default_factory=list)
    depth: int = 0
    # The escalation policy (by name) its incidents walk; inherited like the receiver.
    escalation: str = ""

    def match(self, labels):
        """Depth-first, first match unless ``continue``; Alertmanager's Route.Match."""
        if not m.matches_all(self.matchers, labels):
            return []
        found = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.cont:
                break
        return found or [self]

    def walk(self):
        yield self
        for child in self.routes:
            yield from child.walk()

    def group_labels(self, labels):
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}

    def group_key(self, labels):
        """Alertmanager's aggregation group key: ``<route key>:<group labels>``."""
        return f"{self.key}:{label_set_string(self.group_labels(labels))}"

    @property
    def matchers_text(self):
        return m.format_matchers(self.matchers)


@dataclass
class RoutingTree:
    root: Route
    receivers: dict
    inhibit_rules: list
    time_intervals: dict
    source: str = ""
    version: int = 0
    # [(path, policy name)] for every route that names one (checked against the
    # database by alerts.escalation.check_tree).
    escalation_refs: list = field(default_factory=list)

    def __post_init__(self):
        self.routes = {route.key: route for route in self.root.walk()}

    def match(self, labels):
        return self.root.match(labels)

    def route(self, key):
        return self.routes.get(key)

    def targets(self, route, severity):
        """(receiver name or "", channel names, send_resolved) for an incident."""
        if route.receiver:
            receiver = self.receivers[route.receiver]
            return receiver.name, receiver.channels, receiver.send_resolved
        return "", tuple(route.severity_channels.get(severity, ())), True

    def muted_by_time(self, route, moment):
        """The name of the interval muting ``route`` at ``moment``, or ""."""
        for name in route.mute_time_intervals:
            if timeintervals.active(self.time_intervals[name], moment):
                return name
        if route.active_time_intervals and not any(
                timeintervals.active(self.time_intervals[name], moment)
                for name in route.active_time_intervals):
            return "not in " + ", ".join(route.active_time_intervals)
        return ""

    def channel_names(self):
        names = set()
        for receiver in self.receivers.values():
            names.update(receiver.channels)
        for route in self.routes.values():
            if not route.receiver:
                for channels in route.severity_channels.values():
                    names.update(channels)
        return names


# --- parsing --------------------------------------------------------------------------------


class _Parser:
    def __init__(self):
        self.errors = []
        self.escalation_refs = []

    def error(self, path, message):
        self.errors.append((path, message))

    def string_list(self, value, path):
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(path, "expected a list of strings")
            return []
        return value

    def duration(self, data, name, path, inherited):
        if name not in data or data[name] is None:
            return inherited
        try:
            return parse_duration(data[name])
        except ValueError as exc:
            self.error(f"{path}.{name}", str(exc))
            return inherited

    def matcher_section(self, data, path, prefix=""):
        """``match`` / ``match_re`` / ``matchers`` (with an optional ``source_`` or
        ``target_`` prefix) -> matchers."""
        found = []
        for name, op in ((f"{prefix}match", "="), (f"{prefix}match_re", "=~")):
            value = data.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                self.error(f"{path}.{name}", "expected a mapping of label name to value")
                continue
            for label, wanted in value.items():
                if not isinstance(label, str) or not m.LABEL_NAME_RE.match(label):
                    self.error(f"{path}.{name}", f"invalid label name {label!r}")
                    continue
                try:
                    found.append(m.Matcher.make(label, op, "" if wanted is None else str(wanted)))
                except m.MatcherError as exc:
                    self.error(f"{path}.{name}.{label}", str(exc))
        name = f"{prefix}matchers"
        for i, text in enumerate(self.string_list(data.get(name), f"{path}.{name}")):
            try:
                found.extend(m.parse(text))
            except m.MatcherError as exc:
                self.error(f"{path}.{name}[{i}]", str(exc))
        return found

    def severity_channels(self, value, path, inherited):
        if value is None:
            return inherited
        if not isinstance(value, dict):
            self.error(path, "expected a mapping of severity to a list of channel names")
            return inherited
        merged = dict(inherited)
        for severity, channels in value.items():
            if severity not in SEVERITIES:
                self.error(f"{path}.{severity}",
                           f"unknown severity; use {', '.join(SEVERITIES)}")
                continue
            merged[severity] = tuple(self.string_list(channels, f"{path}.{severity}"))
        return merged

    def route(self, data, path, parent, intervals, receivers, seen=None):
        if not isinstance(data, dict):
            self.error(path, "expected a mapping")
            data = {}
        for name in sorted(set(data) - ROUTE_FIELDS):
            self.error(f"{path}.{name}", "unknown field")
        root = parent is None
        matchers = self.matcher_section(data, path)
        key = "{}" if root else f"{parent.key}/{m.format_matchers(matchers)}"
        if seen is not None:
            seen[key] += 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
        if root:
            if matchers:
                self.error(path, "the root route must not have matchers")
            if data.get("continue"):
                self.error(f"{path}.continue", "the root route cannot continue")
            for name in ("mute_time_intervals", "active_time_intervals"):
                if data.get(name):
                    self.error(f"{path}.{name}", "the root route cannot have time intervals")
        receiver = data.get("receiver")
        if receiver is not None and not isinstance(receiver, str):
            self.error(f"{path}.receiver", "expected a receiver name")
            receiver = None
        if receiver and receiver not in receivers:
            self.error(f"{path}.receiver", f"undefined receiver {receiver!r}")
        group_by, group_by_all = (parent.group_by, parent.group_by_all) if parent else ((), False)
        if "group_by" in data and data["group_by"] is not None:
            labels = self.string_list(data["group_by"], f"{path}.group_by")
            wildcard = "..." in labels
            plain = [label for label in labels if label != "..."]
            if wildcard and plain:
                self.error(f"{path}.group_by",
                           "cannot have wildcard group_by (`...`) and other labels at the same "
                           "time")
            for label in plain:
                if not m.LABEL_NAME_RE.match(label):
                    self.error(f"{path}.group_by", f"invalid label name {label!r} in group_by")
            duplicates = sorted({label for label in plain if plain.count(label) > 1})
            if duplicates:
                self.error(f"{path}.group_by", f"duplicated label {duplicates[0]!r} in group_by")
            # An empty list inherits, as in Alertmanager.
            if wildcard:
                group_by, group_by_all = (), True
            elif plain:
                group_by, group_by_all = tuple(plain), False
        cont = data.get("continue", False)
        if not isinstance(cont, bool):
            self.error(f"{path}.continue", "expected true or false")
            cont = False
        timers = {}
        for name in ("group_wait", "group_interval", "repeat_interval"):
            inherited = getattr(parent, name) if parent else DEFAULTS[name]
            timers[name] = self.duration(data, name, path, inherited)
        for name in ("group_interval", "repeat_interval"):
            if data.get(name) is not None and timers[name] == timedelta(0):
                self.error(f"{path}.{name}", f"{name} cannot be zero")
        time_names = {}
        for name in ("mute_time_intervals", "active_time_intervals"):
            names = self.string_list(data.get(name), f"{path}.{name}")
            for ref in names:
                if ref not in intervals:
                    self.error(f"{path}.{name}", f"undefined time interval {ref!r}")
            time_names[name] = tuple(names)
        inherited_channels = parent.severity_channels if parent else DEFAULT_SEVERITY_CHANNELS
        escalation = data.get("escalation")
        if escalation is not None and (not isinstance(escalation, str) or not escalation.strip()):
            self.error(f"{path}.escalation", "expected an escalation policy name")
            escalation = None
        if escalation:
            self.escalation_refs.append((f"{path}.escalation", escalation.strip()))
        route = Route(
            key=key, path=path, matchers=matchers, cont=cont,
            receiver=receiver or (parent.receiver if parent else ""),
            group_by=group_by, group_by_all=group_by_all, **timers,
            severity_channels=self.severity_channels(
                data.get("severity_channels"), f"{path}.severity_channels", inherited_channels),
            **time_names, depth=parent.depth + 1 if parent else 0,
            escalation=(escalation or "").strip() or (parent.escalation if parent else ""),
        )
        children = data.get("routes")
        if children is not None and not isinstance(children, list):
            self.error(f"{path}.routes", "expected a list of routes")
            children = []
        siblings = defaultdict(int)
        for i, child in enumerate(children or []):
            route.routes.append(self.route(child, f"{path}.routes[{i}]", route, intervals,
                                           receivers, siblings))
        return route

    def receivers(self, value):
        found = {}
        if value is None:
            return found
        if not isinstance(value, list):
            self.error("receivers", "expected a list")
            return found
        for i, item in enumerate(value):
            path = f"receivers[{i}]"
            if not isinstance(item, dict):
                self.error(path, "expected a mapping")
                continue
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                self.error(f"{path}.name", "missing name in receiver")
                continue
            if name in found:
                self.error(f"{path}.name", f"receiver name {name!r} is not unique")
            for extra in sorted(set(item) - RECEIVER_FIELDS):
                hint = (" (an Alertmanager integration: use “Import from alertmanager.yml”, "
                        "which maps receivers to channels)") if extra.endswith("_configs") else ""
                self.error(f"{path}.{extra}", "unknown field" + hint)
            channels = item.get("channels")
            channels = (tuple(self.string_list(channels, f"{path}.channels"))
                        if channels is not None else (name,))
            send_resolved = item.get("send_resolved", True)
            if not isinstance(send_resolved, bool):
                self.error(f"{path}.send_resolved", "expected true or false")
                send_resolved = True
            found[name] = Receiver(name, channels, send_resolved)
        return found

    def intervals(self, config):
        found = {}
        for section in ("time_intervals", "mute_time_intervals"):
            value = config.get(section)
            if value is None:
                continue
            if not isinstance(value, list):
                self.error(section, "expected a list")
                continue
            for i, item in enumerate(value):
                path = f"{section}[{i}]"
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    self.error(path, "expected a mapping with a name")
                    continue
                name = item["name"]
                if name in found:
                    self.error(f"{path}.name", f"time interval {name!r} is not unique")
                entries = item.get("time_intervals") or []
                if not isinstance(entries, list):
                    self.error(f"{path}.time_intervals", "expected a list")
                    continue
                parsed = []
                for j, entry in enumerate(entries):
                    try:
                        parsed.append(timeintervals.parse_interval(
                            entry, f"{path}.time_intervals[{j}]"))
                    except timeintervals.IntervalError as exc:
                        self.error(exc.path, str(exc))
                found[name] = parsed
        return found

    def inhibit_rules(self, value):
        rules = []
        if value is None:
            return rules
        if not isinstance(value, list):
            self.error("inhibit_rules", "expected a list")
            return rules
        for i, item in enumerate(value):
            path = f"inhibit_rules[{i}]"
            if not isinstance(item, dict):
                self.error(path, "expected a mapping")
                continue
            for extra in sorted(set(item) - INHIBIT_FIELDS):
                self.error(f"{path}.{extra}", "unknown field")
            equal = self.string_list(item.get("equal"), f"{path}.equal")
            rules.append(InhibitRule(
                source=self.matcher_section(item, path, "source_"),
                target=self.matcher_section(item, path, "target_"),
                equal=tuple(equal), path=path))
        return rules


def parse(text, *, version=0):
    """YAML text -> ``RoutingTree``; raises ``ConfigError``."""
    try:
        config = load_yaml(text) if text and text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"not valid YAML: {problem}")]) from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError([("(top)", "expected a mapping with a route section")])
    parser = _Parser()
    for name in sorted(set(config) - SECTIONS, key=str):
        parser.error(str(name), "unknown section (expected route, receivers, inhibit_rules, "
                                "time_intervals, severity_channels)")
    if "route" not in config:
        parser.error("route", "no routes provided")
    receivers = parser.receivers(config.get("receivers"))
    intervals = parser.intervals(config)
    route_data = dict(config.get("route") or {})
    if "severity_channels" in config:
        # The top-level mapping is the root route's; a route's own overrides it.
        route_data.setdefault("severity_channels", config["severity_channels"])
    root = parser.route(route_data, "route", None, intervals, receivers)
    rules = parser.inhibit_rules(config.get("inhibit_rules"))
    if parser.errors:
        raise ConfigError(parser.errors)
    return RoutingTree(root=root, receivers=receivers, inhibit_rules=rules,
                       time_intervals=intervals, source=text, version=version,
                       escalation_refs=parser.escalation_refs)
