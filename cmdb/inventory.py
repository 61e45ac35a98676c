"""Inventory import and export.

Imports: Ansible inventories (INI and YAML), the JSON ``ansible-inventory --list`` prints
(recognised by its ``_meta`` key), and our own CSV and JSON. Exports: an Ansible YAML
inventory, Prometheus ``file_sd`` JSON, and CSV.

Importing takes two steps. ``plan_import()`` parses and validates the whole input and
compares it with the database without writing anything: every host and group comes out
created, updated (with the fields that change) or unchanged, and every problem as
``{"line": n, "message": ...}``. ``apply_import()`` writes a plan without errors in one
transaction with bulk statements, after checking that the database still is what the
plan was made against.

The Ansible formats are parsed here, with Ansible's rules (ansible-core is only a test
dependency: the tests compare every import with ``ansible-inventory --list``).

How Ansible's inventory maps onto the CMDB
------------------------------------------
* ``Host.variables`` holds the host's own variables exactly as the file gives them,
  ``ansible_host``, ``ansible_port`` and ``ansible_user`` included (so their types survive a
  round trip). ``Host.address``/``port``/``ssh_user`` hold the *effective* values of those
  three (group variables count: ``[all:vars] ansible_user=deploy`` is common), because
  connections go there. Where a field and a variable disagree later (someone edited the
  host), the field wins.
* ``opsplane_env`` names the host's environment and ``opsplane_labels`` sets its labels
  (effective values, so a group can set them for all its hosts). Without them a host
  already in the CMDB keeps its environment and labels; a new one gets the import's
  environment and no labels.
* Groups keep their name, parents and variables. Ansible's ``all`` group is a Group row
  named ``all`` whose variables every host gets at the lowest precedence, member or not,
  as in Ansible; its membership is implicit, so no host is linked to it. ``ungrouped`` is
  not stored: a host without groups is ungrouped.
* A host in the file ends up in exactly the file's groups (its direct memberships are
  replaced); hosts missing from the file are left alone and listed as "not in file".
  A group in the file gets the file's parents and variables.

The effective variables (``effective_variables()``) follow Ansible's precedence: ``all``,
then the host's groups and their ancestors by depth, ``ansible_group_priority`` and name,
then the host's own variables, then the fields above. For an imported file they equal
``ansible-inventory --list``'s hostvars, and so do those of ``export_ansible_yaml()``.
"""

import ast
import csv
import hashlib
import io
import ipaddress
import json
import json.decoder
import json.scanner
import math
import re
import shlex
import string
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field

import yaml
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from cmdb.models import Environment, Group, Host, validate_labels
from cmdb.services import CMDBError, can_edit
from opsplane import audit

FORMATS = ("ini", "yaml", "csv", "json")
MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_HOSTS = 100_000  # host entries, ranges expanded: a typo like web[1:9999999] stops here
# YAML values are copied into JSON-safe form node by node; without a bound, a "billion
# laughs" (aliases of aliases of lists) would expand until memory runs out. Other formats
# are bounded by their size.
MAX_YAML_VALUES = 2_000_000

ALL, UNGROUPED = "all", "ungrouped"
PRIORITY = "ansible_group_priority"
ADDRESS_VAR, PORT_VAR, USER_VAR = "ansible_host", "ansible_port", "ansible_user"
ENV_VAR, LABELS_VAR = "opsplane_env", "opsplane_labels"
DEFAULT_PORT = Host._meta.get_field("port").default
DEFAULT_USER = Host._meta.get_field("ssh_user").default

# What ansible-inventory never shows as a variable (ansible.constants.INTERNAL_STATIC_VARS):
# a file that sets one would import a variable Ansible ignores, so we drop it with a warning.
ANSIBLE_INTERNAL_VARS = frozenset({
    "ansible_async_path", "ansible_collection_name", "ansible_config_file",
    "ansible_dependent_role_names", "ansible_diff_mode", "ansible_facts", "ansible_forks",
    "ansible_inventory_sources", "ansible_limit", "ansible_play_batch", "ansible_play_hosts",
    "ansible_play_hosts_all", "ansible_play_role_names", "ansible_playbook_python",
    "ansible_role_name", "ansible_role_names", "ansible_run_tags", "ansible_skip_tags",
    "ansible_verbosity", "ansible_version", "inventory_dir", "inventory_file",
    "inventory_hostname", "inventory_hostname_short", "groups", "group_names", "hostvars",
    "playbook_dir", "play_hosts", "role_name", "role_names", "role_path", "role_uuid",
})

CSV_COLUMNS = ("name", "environment", "address", "port", "ssh_user", "groups", "labels",
               "variables", "owner_team", "description", "enabled")
# Plan and audit field names (as services.host_snapshot) -> Host attribute.
HOST_ATTRS = {"address": "address", "port": "port", "ssh_user": "ssh_user",
              "environment": "environment_id", "labels": "labels", "variables": "variables",
              "owner_team": "owner_team", "description": "description", "enabled": "enabled"}
_DB_CHUNK = 900  # names per IN (...): below SQLite's 999 bound parameters

_NAME_FIELD = Host._meta.get_field("name")
_ADDRESS_FIELD = Host._meta.get_field("address")
_USER_FIELD = Host._meta.get_field("ssh_user")
_GROUP_NAME_FIELD = Group._meta.get_field("name")


def format_for_filename(filename):
    """The import format a file name suggests (``None`` when it suggests none)."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return {"ini": "ini", "cfg": "ini", "hosts": "ini", "yml": "yaml", "yaml": "yaml",
            "csv": "csv", "json": "json"}.get(suffix)


# --- the plan ------------------------------------------------------------------------


@dataclass
class PlannedChange:
    """One host or group of a plan. ``changes`` maps a field to ``[before, after]``
    (``before`` is None for a new object); names stand for environments and groups."""

    name: str
    action: str  # "create", "update" or "unchanged"
    changes: dict
    line: int | None = None


@dataclass
class ImportPlan:
    format: str
    environment: Environment
    digest: str  # sha256 of the input, for the audit trail
    hosts: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    not_in_file: list = field(default_factory=list)  # hosts of the same environments
    errors: list = field(default_factory=list)  # [{"line": int | None, "message": str}]
    warnings: list = field(default_factory=list)
    _host_specs: list = field(default_factory=list, repr=False)
    _group_specs: list = field(default_factory=list, repr=False)

    @property
    def has_changes(self):
        return any(item.action != "unchanged" for item in self.hosts + self.groups)

    def counts(self):
        result = {}
        for kind, items in (("hosts", self.hosts), ("groups", self.groups)):
            result[kind] = {"create": 0, "update": 0, "unchanged": 0}
            for item in items:
                result[kind][item.action] += 1
        result["hosts"]["not_in_file"] = len(self.not_in_file)
        return result


@dataclass
class _HostSpec:
    """A host as the input wants it: ``fields`` (plan names) are set on new and existing
    hosts, ``new_fields`` only on new ones; ``groups`` None leaves memberships alone."""

    name: str
    line: int | None
    fields: dict
    groups: tuple | None
    new_fields: dict = field(default_factory=dict)


@dataclass
class _GroupSpec:
    """``variables``/``parents`` None leave them alone. ``optional``: no row is created
    just to hold nothing (the ``all`` group of a file without ``all`` variables)."""

    name: str
    line: int | None
    variables: dict | None
    parents: tuple | None
    optional: bool = False


class _Report:
    def __init__(self):
        self.errors, self.warnings, self._seen = [], [], set()

    def error(self, line, message):
        self._add(self.errors, line, message)

    def warning(self, line, message):
        self._add(self.warnings, line, message)

    def _add(self, into, line, message):
        # A bad group variable is reported once, not once per host of the group.
        key = (id(into), line, str(message))
        if key not in self._seen:
            self._seen.add(key)
            into.append({"line": line, "message": str(message)})

    def sorted(self, items):
        return sorted(items, key=lambda item: (item["line"] is not None, item["line"] or 0))


class _Abort(Exception):
    """A limit was hit: stop parsing (the error is already reported)."""


class _BadValue(Exception):
    pass


class _BadRange(Exception):
    pass


# --- planning ------------------------------------------------------------------------


def plan_import(text, fmt, *, environment):
    """Parse ``text`` (str or UTF-8 bytes) in format ``fmt`` (one of ``FORMATS``) and
    compare it with the database. ``environment`` is where new hosts go unless the input
    names another. Reads only; the plan is what ``apply_import()`` takes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown inventory format {fmt!r}; expected one of {FORMATS}")
    report = _Report()
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    plan = ImportPlan(format=fmt, environment=environment,
                      digest=hashlib.sha256(raw).hexdigest())
    if len(raw) > MAX_INPUT_BYTES:
        report.error(None, _("The file is %(size)d bytes; the limit is %(limit)d.")
                     % {"size": len(raw), "limit": MAX_INPUT_BYTES})
    else:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = text.count(b"\n", 0, exc.start) + 1
                report.error(line, _("The file is not UTF-8 text."))
                text = None
        else:
            text = text.removeprefix("\ufeff")
        if text is not None:
            context = _Context(environment, report, fmt)
            try:
                host_specs, group_specs = context.parse(text, fmt)
            except _Abort:
                host_specs, group_specs = [], []
            except RecursionError:  # groups or values nested hundreds of levels deep
                report.error(None, _("The inventory is nested too deeply."))
                host_specs, group_specs = [], []
            state = _State.load({spec.name for spec in host_specs})
            _check_group_cycles(group_specs, state, report)
            plan.hosts, plan.groups = _diff(host_specs, group_specs, state)
            plan._host_specs, plan._group_specs = host_specs, group_specs
            plan.not_in_file = _not_in_file(host_specs, plan.hosts, state, environment)
    plan.errors = report.sorted(report.errors)
    plan.warnings = report.sorted(report.warnings)
    return plan


class _Context:
    """What every parser needs: the default environment, environments by name, the
    report, the value cleaner."""

    def __init__(self, environment, report, fmt):
        self.environment = environment
        self.report = report
        self.environments = dict(Environment.objects.values_list("name", "pk"))
        self.values = _Values(report, MAX_YAML_VALUES if fmt == "yaml" else math.inf)

    def parse(self, text, fmt):
        if fmt == "ini":
            return _ansible_specs(_parse_ini(text, self), self)
        if fmt == "yaml":
            return _ansible_specs(_parse_yaml(text, self), self)
        if fmt == "csv":
            return _parse_csv(text, self)
        return _parse_json(text, self)


class _Values:
    """Parsed values as a JSONField stores and returns them: dict keys as strings,
    tuples as lists; infinities, sets, bytes and the like refused."""

    def __init__(self, report, budget):
        self.report, self.budget = report, budget

    def clean(self, value):
        try:
            return self._clean(value)
        except RecursionError:
            raise _BadValue(_("the value is nested too deeply")) from None

    def _clean(self, value):
        self.budget -= 1
        if self.budget < 0:
            self.report.error(None, _("The variables hold more than %(n)d values: the import "
                                      "stops here.") % {"n": MAX_YAML_VALUES})
            raise _Abort
        if value is None or isinstance(value, str | bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _BadValue(_("infinite and NaN numbers cannot be stored"))
            return value
        if isinstance(value, list | tuple):
            return [self._clean(item) for item in value]
        if isinstance(value, dict):
            return {self._key(key): self._clean(item) for key, item in value.items()}
        raise _BadValue(_("a value of type %(type)s cannot be stored")
                        % {"type": type(value).__name__})

    def _key(self, key):
        # As json.dumps turns keys into strings (what Ansible's JSON output shows too).
        if isinstance(key, str):
            return key
        if key is None or isinstance(key, bool):
            return json.dumps(key)
        if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
            return json.dumps(key)
        raise _BadValue(_("a mapping key of type %(type)s cannot be stored")
                        % {"type": type(key).__name__})


def _field_problem(model_field, value):
    """The model field's own validators (length, pattern, range) as one message."""
    try:
        model_field.run_validators(value)
    except ValidationError as exc:
        return " ".join(exc.messages)
    return None


# --- Ansible's inventory model -------------------------------------------------------


class _AGroup:
    __slots__ = ("name", "line", "vars", "var_lines", "parents", "valid")

    def __init__(self, name, line, valid=True):
        self.name, self.line, self.valid = name, line, valid
        self.vars, self.var_lines, self.parents = {}, {}, {}  # parents: name -> line


class _AHost:
    __slots__ = ("name", "line", "vars", "var_lines", "groups", "valid")

    def __init__(self, name, line, valid=True):
        self.name, self.line, self.valid = name, line, valid
        self.vars, self.var_lines, self.groups = {}, {}, {}  # groups: an ordered set


class _Ansible:
    """The inventory as Ansible's InventoryData builds it from a file: hosts with their
    own variables and direct groups, groups with variables and parents. Each variable
    remembers the line that set it last, for error messages."""

    def __init__(self, context):
        self.context = context
        self.report = context.report
        self.groups = {ALL: _AGroup(ALL, None), UNGROUPED: _AGroup(UNGROUPED, None)}
        self.hosts = {}
        self.entries = 0
        self._ini_cache = {}

    def add_group(self, name, line):
        group = self.groups.get(name)
        if group is None:
            problem = _field_problem(_GROUP_NAME_FIELD, name)
            if problem:
                self.report.error(line, _("Group “%(name)s”: %(problem)s")
                                  % {"name": name, "problem": problem})
            group = self.groups[name] = _AGroup(name, line, valid=not problem)
        return group

    def add_host(self, name, line, group, port=None):
        self.entries += 1
        if self.entries > MAX_HOSTS:
            self._too_many(line)
        host = self.hosts.get(name)
        if host is None:
            problem = _field_problem(_NAME_FIELD, name) if name else _("the name is empty")
            if problem:
                self.report.error(line, _("Host “%(name)s”: %(problem)s")
                                  % {"name": name, "problem": problem})
            host = self.hosts[name] = _AHost(name, line, valid=not problem)
            # As Ansible: a port in the host pattern counts only where the host first
            # appears, and as ansible_port (an int); later assignments override it.
            if port:
                self.set_var(host, PORT_VAR, port, line)
        if group is not None and group.name not in (ALL, UNGROUPED):
            host.groups[group.name] = None
        return host

    def _too_many(self, line):
        self.report.error(line, _("More than %(n)d hosts: the import stops here.")
                          % {"n": MAX_HOSTS})
        raise _Abort

    def set_var(self, target, key, value, line):
        if not isinstance(key, str):
            self.report.error(line, _("Variable names must be strings, not %(key)r.")
                              % {"key": key})
            return
        if key in ANSIBLE_INTERNAL_VARS:
            self.report.warning(line, _("“%(key)s” is a name Ansible reserves for itself; "
                                        "the variable is ignored.") % {"key": key})
            return
        if isinstance(target, _AGroup):
            if target.name == UNGROUPED:
                self.report.error(line, _("Variables of the implicit group “ungrouped” are "
                                          "not supported: put them on a named group."))
                return
            if key == PRIORITY and _priority(value) is None:
                self.report.error(line, _("ansible_group_priority must be an integer, not "
                                          "%(value)r.") % {"value": value})
                return
        target.vars[key] = value
        target.var_lines[key] = line

    def add_child(self, parent, child, line):
        if child.name == UNGROUPED and parent.name == ALL:
            return  # what every inventory implies; --list output and YAML files say it
        if child.name in (ALL, UNGROUPED) or child is parent:
            self.report.error(line, _("Group “%(child)s” cannot be a child of “%(parent)s”.")
                              % {"child": child.name, "parent": parent.name})
            return
        if parent.name == UNGROUPED:
            self.report.error(line, _("The implicit group “ungrouped” cannot have children."))
            return
        child.parents.setdefault(parent.name, line)

    def host_pattern(self, pattern, line, *, ini=False):
        """Ansible's host patterns: ``name``, ``name:port``, ``[v6]:port``, ranges
        ``web[01:20]``, ``web[1:20:2]``, ``db-[a:c]``, several per name. None when bad."""
        host, port = _split_port(pattern)
        if ini and pattern.strip().endswith(":") and port is None:
            self.report.error(line, _("Host pattern “%(p)s” ends with “:”, which is kept for "
                                      "a port.") % {"p": pattern})
            return None
        if "[" not in host:
            names = [host]
        else:
            try:
                count = _range_count(host)
            except (_BadRange, RecursionError) as exc:
                why = exc if isinstance(exc, _BadRange) else _("too many ranges")
                self.report.error(line, _("Bad host range “%(p)s”: %(why)s")
                                  % {"p": pattern, "why": why})
                return None
            if count == 0:
                # Ansible silently adds no host; an empty range is always a typo.
                self.report.error(line, _("Bad host range “%(p)s”: it expands to no hosts.")
                                  % {"p": pattern})
                return None
            if self.entries + count > MAX_HOSTS:
                self._too_many(line)
            names = _range_expand(host)
        if ini and any(name.strip() == "---" for name in names):
            self.report.error(line, _("“---” is not a host: is this a YAML file?"))
            return None
        return names, port

    def ini_value(self, raw, line):
        """A value as Ansible's INI plugin reads it (``ast.literal_eval`` where that works,
        else the string), ready for a JSONField; ``_BAD`` after reporting an error."""
        try:
            return self._ini_cache[raw]
        except KeyError:
            pass
        try:
            value = self.context.values.clean(_ini_literal(raw))
        except _BadValue as exc:
            self.report.error(line, _("Value “%(raw)s”: %(why)s") % {"raw": raw, "why": exc})
            return _BAD
        # Cached values are shared between hosts: nothing here mutates a value.
        self._ini_cache[raw] = value
        return value


_BAD = object()
_INT_RE = re.compile(r"(?:0|[1-9][0-9]{0,17})\Z")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _ini_literal(raw):
    # The two fast paths give what literal_eval would (a bare name is a ValueError for
    # it, hence a string), for the most common values in big files.
    if _INT_RE.match(raw):
        return int(raw)
    if _IDENTIFIER_RE.match(raw) and raw not in ("True", "False", "None"):
        return raw
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    except (TypeError, MemoryError, RecursionError) as exc:  # e.g. {[1]: 2}
        raise _BadValue(str(exc) or type(exc).__name__) from None
    return _ini_coerce(value)


def _ini_coerce(value):
    """Ansible's INI plugin turns what literal_eval gives into variable types: tuples and
    sets into lists, bytes into text, complex numbers and ``...`` back into strings."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_ini_coerce(item) for item in value]
    if isinstance(value, dict):
        return {key: _ini_coerce(item) for key, item in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadValue(_("bytes that are not UTF-8")) from None
    return value


def _priority(value):
    """``int(value)`` as Ansible takes it, None where that fails."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


# --- host patterns (the grammar of ansible.parsing.utils.addresses) ------------------

_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z", re.I)
_BRACKETED_PORT_RE = re.compile(r"\[(.+)\]:([0-9]+)\Z")
_HOST_PORT_RE = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)\Z")


def _split_port(pattern):
    """(host, port or None). Only a valid host name or IP address sheds a ``:port``;
    anything else stays whole, as in Ansible (and then fails our name check)."""
    address, port = pattern, None
    for regex in (_BRACKETED_PORT_RE, _HOST_PORT_RE):
        match = regex.match(address)
        if match:
            address, port = match.group(1), int(match.group(2))
    if _HOSTNAME_RE.match(address):
        return address, port
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return pattern, None
    return address, port


def _parse_range(pattern):
    """Split at the first ``[begin:end(:step)]``: (head, items, fill, tail). Ansible's
    rules: a zero-padded begin pads every item (and needs an end of the same width);
    letters range over a-zA-Z."""
    start, stop = pattern.find("["), pattern.find("]")
    if stop < start or "|" in pattern:
        raise _BadRange(_("unbalanced brackets"))
    head, spec, tail = pattern[:start], pattern[start + 1:stop], pattern[stop + 1:]
    bounds = spec.split(":")
    if len(bounds) not in (2, 3):
        raise _BadRange(_("a range is [begin:end] or [begin:end:step]"))
    begin, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise _BadRange(_("the range has no end"))
    if begin[0] == "0" and len(begin) > 1:
        width = len(begin)
        if len(end) != width:
            raise _BadRange(_("a zero-padded begin needs an end of the same width"))

        def fill(item):
            return str(item).zfill(width)
    else:
        fill = str
    letters = string.ascii_letters
    try:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise _BadRange(_("the begin comes after the end"))
        items = list(letters[first:last + 1:int(step)])
    except ValueError:
        try:
            items = range(int(begin), int(end) + 1, int(step))
        except ValueError:
            raise _BadRange(_("begin, end and step must be numbers or single letters")) \
                from None
    return head, items, fill, tail


def _range_count(pattern):
    if "[" not in pattern:
        return 1
    _head, items, _fill, tail = _parse_range(pattern)
    return len(items) * _range_count(tail) if items else 0


def _range_expand(pattern):
    if "[" not in pattern:
        return [pattern]
    head, items, fill, tail = _parse_range(pattern)
    tails = _range_expand(tail)
    return [head + fill(item) + rest for item in items for rest in tails]


# --- INI -----------------------------------------------------------------------------

_SECTION_RE = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?\Z")
_GROUP_NAME_RE = re.compile(r"([^:\]\s]+)\s*(?:#.*)?\Z")
_SHLEX_SPECIAL = frozenset("'\"\\#")
_SHLEX_WHITESPACE_RE = re.compile(r"[ \t\r\n]+")


def _parse_ini(text, context):
    """Ansible's INI inventory: ``[group]`` sections of host lines, ``[group:children]``
    and ``[group:vars]``; lines before any section are ``ungrouped``. Host lines are split
    like a shell (``#`` starts a comment) and values go through ``ast.literal_eval``;
    ``:vars`` lines split at the first ``=`` and the whole rest is the value, also through
    ``literal_eval`` (ansible-core 2.19 does that, whatever its documentation says)."""
    inv = _Ansible(context)
    report = context.report
    declared = {ALL, UNGROUPED}  # groups with a [g] or [g:children] section
    vars_only = {}  # group -> line of its first [g:vars], until declared
    named_as_child = {}  # group -> line where a :children section first named it
    group, state = inv.groups[UNGROUPED], "hosts"
    try:
        for number, raw_line in enumerate(text.splitlines(), 1):
            line = raw_line.strip()
            if not line or line[0] in "#;":
                continue
            match = _SECTION_RE.match(line)
            if match:
                name, state = match.group(1), match.group(2) or "hosts"
                if state not in ("hosts", "children", "vars"):
                    report.error(number, _("Section [%(name)s:%(kind)s]: the kind must be "
                                           "children or vars.")
                                 % {"name": name, "kind": state})
                    state = None
                    continue
                group = inv.add_group(name, number)
                if state == "vars":
                    vars_only.setdefault(name, number)
                else:
                    declared.add(name)
                continue
            if line.startswith("[") and line.endswith("]"):
                report.error(number, _("Invalid section “%(line)s”: no spaces or other "
                                       "characters may follow the group name.")
                             % {"line": line})
                state = None
                continue
            if state == "hosts":
                _ini_host_line(inv, group, line, number)
            elif state == "vars":
                if "=" not in line:
                    report.error(number, _("Expected key=value, got “%(line)s”.")
                                 % {"line": line})
                    continue
                key, raw = (part.strip() for part in line.split("=", 1))
                value = inv.ini_value(raw, number)
                if value is not _BAD:
                    inv.set_var(group, key, value, number)
            elif state == "children":
                match = _GROUP_NAME_RE.match(line)
                if not match:
                    report.error(number, _("Expected a group name, got “%(line)s”.")
                                 % {"line": line})
                    continue
                child = inv.add_group(match.group(1), number)
                named_as_child.setdefault(child.name, (number, group.name))
                inv.add_child(group, child, number)
    except _Abort:
        return inv
    # Ansible refuses a group that only :vars or :children sections mention.
    for name, line in vars_only.items():
        if name not in declared:
            report.error(line, _("Section [%(name)s:vars] is for a group that no [%(name)s] "
                                 "or [%(name)s:children] section defines.") % {"name": name})
    for name, (line, parent) in named_as_child.items():
        if name not in declared:
            report.error(line, _("[%(parent)s:children] names “%(name)s”, which no "
                                 "[%(name)s] or [%(name)s:children] section defines.")
                         % {"parent": parent, "name": name})
    return inv


def _ini_host_line(inv, group, line, number):
    report = inv.report
    if _SHLEX_SPECIAL.isdisjoint(line):
        tokens = _SHLEX_WHITESPACE_RE.split(line)  # what shlex gives, much faster
    else:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            report.error(number, _("Cannot split the host line: %(why)s") % {"why": exc})
            return
    if not tokens:
        return
    assignments = []
    for token in tokens[1:]:
        if "=" not in token:
            report.error(number, _("Expected key=value after the host, got “%(token)s”.")
                         % {"token": token})
            return
        key, raw = token.split("=", 1)
        assignments.append((key, inv.ini_value(raw, number)))
    pattern = inv.host_pattern(tokens[0], number, ini=True)
    if pattern is None:
        return
    names, port = pattern
    for name in names:
        host = inv.add_host(name, number, group, port)
        for key, value in assignments:
            if value is not _BAD:
                inv.set_var(host, key, value, number)


# --- YAML ----------------------------------------------------------------------------


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (what Ansible's loader builds on), plus what inventories use:
    ``!unsafe`` strings (kept as plain strings), dates as ISO strings (as Ansible prints
    them), and a clear refusal of ``!vault`` (we do not have the vault password)."""


def _construct_vault(loader, node):
    raise yaml.constructor.ConstructorError(
        None, None, _("vault-encrypted values cannot be imported"), node.start_mark)


def _construct_timestamp(loader, node):
    return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node).isoformat()


_YamlLoader.add_constructor("!unsafe", yaml.constructor.SafeConstructor.construct_scalar)
_YamlLoader.add_constructor("!vault", _construct_vault)
_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _yaml_line(node_or_error):
    mark = getattr(node_or_error, "start_mark", None) or \
        getattr(node_or_error, "problem_mark", None) or \
        getattr(node_or_error, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _is_null(node):
    return node is None or (isinstance(node, yaml.ScalarNode)
                            and node.tag == "tag:yaml.org,2002:null")


def _parse_yaml(text, context):
    """Ansible's YAML inventory: top-level keys are groups; a group has ``hosts`` (host
    patterns -> variables), ``vars`` and ``children`` (groups, to any depth). Walks the
    composed node tree, so every problem has a line number."""
    inv = _Ansible(context)
    loader = _YamlLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            context.report.error(_yaml_line(exc), _("Malformed YAML: %(why)s")
                                 % {"why": problem})
            return inv
        if _is_null(root):
            context.report.error(1, _("The file is empty."))
            return inv
        walker = _YamlWalker(loader, inv)
        if not isinstance(root, yaml.MappingNode):
            context.report.error(_yaml_line(root), _("A YAML inventory is a mapping of "
                                                     "group names."))
            return inv
        top = walker.mapping(root)
        if top is None:
            return inv
        if "plugin" in top and not _is_null(top["plugin"][1]):
            context.report.error(_yaml_line(top["plugin"][0]),
                                 _("This is an inventory plugin configuration, not an "
                                   "inventory."))
            return inv
        try:
            for name, (key_node, value_node) in top.items():
                walker.group(name, key_node, value_node)
        except _Abort:
            pass
    finally:
        loader.dispose()
    return inv


class _YamlWalker:
    def __init__(self, loader, inv):
        self.loader, self.inv, self.report = loader, inv, inv.report

    def construct(self, node):
        """The node's value (JSON-safe), or ``_BAD`` after reporting why not."""
        try:
            value = self.loader.construct_object(node, deep=True)
            return self.inv.context.values.clean(value)
        except (yaml.YAMLError, _BadValue, TypeError) as exc:
            why = getattr(exc, "problem", None) or str(exc)
            self.report.error(_yaml_line(node), _("Value: %(why)s") % {"why": why})
            return _BAD

    def mapping(self, node):
        """{key: (key node, value node)}; a repeated key keeps its first place and its
        last value (as PyYAML and Ansible do), with a warning. None after an error."""
        try:
            self.loader.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.YAMLError as exc:
            self.report.error(_yaml_line(exc), str(getattr(exc, "problem", exc)))
            return None
        result = {}
        for key_node, value_node in node.value:
            key = self.construct(key_node)
            if key is _BAD:
                continue
            try:
                if key in result:
                    self.report.warning(_yaml_line(key_node),
                                        _("Key “%(key)s” appears twice; the last one wins.")
                                        % {"key": key})
                result[key] = (key_node, value_node)
            except TypeError:
                self.report.error(_yaml_line(key_node), _("A mapping key must be a scalar."))
        return result

    def group(self, name, key_node, node):
        """Ansible's ``_parse_group``; returns the group's name, None when it has none."""
        line = _yaml_line(key_node)
        if not (_is_null(node) or isinstance(node, yaml.MappingNode)):
            self.report.warning(line, _("“%(name)s” is not a valid group definition (a "
                                        "mapping); skipped.") % {"name": name})
            return name
        if not isinstance(name, str) or not name:
            self.report.error(line, _("Group names must be strings, not %(name)r.")
                              % {"name": name})
            return None
        group = self.inv.add_group(name, line)
        if _is_null(node):
            return name
        sections = self.mapping(node)
        if sections is None:
            return name
        for key, (section_key, section) in list(sections.items()):
            if key not in ("vars", "children", "hosts"):
                if not _is_null(section):
                    self.report.warning(_yaml_line(section_key), _(
                        "Key “%(key)s” of group “%(name)s” is skipped: only hosts, vars and "
                        "children are allowed.") % {"key": key, "name": name})
                continue
            if _is_null(section):
                continue
            if isinstance(section, yaml.ScalarNode):
                value = self.construct(section)
                if not isinstance(value, str):
                    if value is not _BAD:
                        self.report.error(_yaml_line(section), _(
                            "“%(key)s” of group “%(name)s” must be a mapping.")
                            % {"key": key, "name": name})
                    continue
                entries = {value: (section, None)}  # "hosts: web01" means {web01: null}
            elif isinstance(section, yaml.MappingNode):
                entries = self.mapping(section)
                if entries is None:
                    continue
            else:
                self.report.error(_yaml_line(section), _(
                    "“%(key)s” of group “%(name)s” must be a mapping.")
                    % {"key": key, "name": name})
                continue
            if key == "vars":
                for var, (var_key, var_node) in entries.items():
                    value = None if var_node is None else self.construct(var_node)
                    if value is not _BAD:
                        self.inv.set_var(group, var, value, _yaml_line(var_key))
            elif key == "children":
                for child_name, (child_key, child_node) in entries.items():
                    child_name = self.group(child_name, child_key, child_node)
                    if child_name is None:
                        continue
                    child = self.inv.groups.get(child_name)
                    if child is None:
                        self.report.error(_yaml_line(child_key), _(
                            "Child “%(name)s” is not a group.") % {"name": child_name})
                    else:
                        self.inv.add_child(group, child, _yaml_line(child_key))
            else:
                for pattern, (host_key, host_node) in entries.items():
                    self.hosts(group, pattern, host_key, host_node)
        return name

    def hosts(self, group, pattern, key_node, node):
        line = _yaml_line(key_node)
        if not isinstance(pattern, str):
            self.report.error(line, _("Host pattern %(p)r must be a string: quote numbers.")
                              % {"p": pattern})
            return
        assignments = []
        if not _is_null(node):
            if not isinstance(node, yaml.MappingNode):
                self.report.error(_yaml_line(node), _("The variables of host “%(p)s” must be "
                                                      "a mapping.") % {"p": pattern})
                return
            entries = self.mapping(node)
            if entries is None:
                return
            for var, (var_key, var_node) in entries.items():
                value = self.construct(var_node)
                if value is not _BAD:
                    assignments.append((var, value, _yaml_line(var_key)))
        expanded = self.inv.host_pattern(pattern, line)
        if expanded is None:
            return
        names, port = expanded
        for host_name in names:
            host = self.inv.add_host(host_name, line, group, port)
            for var, value, var_line in assignments:
                self.inv.set_var(host, var, value, var_line)


# --- from Ansible's model to ours ----------------------------------------------------


def _ansible_specs(inv, context):
    """Host and group specs from a parsed Ansible inventory: the host fields come from the
    effective variables, computed as Ansible does."""
    report = context.report
    groups = {name: group for name, group in inv.groups.items()
              if name not in (ALL, UNGROUPED)}
    _break_cycles(groups, report)
    graph = _GroupGraph(
        names={name: name for name in groups},
        parents={name: [p for p in group.parents if p in groups] for name, group in groups.items()},
        priorities={name: _group_priority(group.vars) for name, group in groups.items()},
        entries={name: {key: (value, group.var_lines[key], name)
                        for key, value in group.vars.items() if key != PRIORITY}
                 for name, group in groups.items()},
        top={key: (value, inv.groups[ALL].var_lines[key], None)
             for key, value in inv.groups[ALL].vars.items() if key != PRIORITY},
    )
    host_specs = []
    for host in inv.hosts.values():
        if not host.valid:
            continue
        merged = graph.merged(name for name in host.groups if groups[name].valid)
        spec = _host_from_variables(host, merged, context)
        if spec is not None:
            host_specs.append(spec)
    group_specs = [
        _GroupSpec(name, group.line, variables=dict(group.vars),
                   parents=tuple(sorted(p for p in group.parents if p != ALL)))
        for name, group in groups.items() if group.valid
    ]
    group_specs.append(_GroupSpec(ALL, None, variables=dict(inv.groups[ALL].vars),
                                  parents=None, optional=True))
    return host_specs, group_specs


def _break_cycles(groups, report):
    """Ansible refuses the edge that closes a loop of groups; report each such edge and
    drop it, so what follows can walk the graph."""
    color = {}
    for start in groups:
        if start in color:
            continue
        color[start] = "open"
        stack = [(start, list(groups[start].parents))]
        while stack:
            name, pending = stack[-1]
            if not pending:
                color[name] = "done"
                stack.pop()
                continue
            parent = pending.pop()
            if parent not in groups:
                continue
            if color.get(parent) == "open":
                line = groups[name].parents.pop(parent)
                report.error(line, _("Group “%(child)s” under “%(parent)s” makes a loop of "
                                     "groups.") % {"child": name, "parent": parent})
            elif parent not in color:
                color[parent] = "open"
                stack.append((parent, list(groups[parent].parents)))


_HOST = object()


def _host_from_variables(host, merged, context):
    """A host spec from the host's own and its groups' variables; None after errors."""
    report = context.report
    ok = True

    def effective(key):
        if key in host.vars:
            return True, host.vars[key], host.var_lines[key], _HOST
        if key in merged:
            value, line, group = merged[key]
            return True, value, line, group
        return False, None, None, None

    def fail(key, line, group, why):
        nonlocal ok
        ok = False
        if group is _HOST:
            where = _("host “%(h)s”") % {"h": host.name}
        else:
            where = _("group “%(g)s”") % {"g": group or ALL}
        report.error(line, _("%(var)s of %(where)s: %(why)s")
                     % {"var": key, "where": where, "why": why})

    fields = {}
    new_fields = {"environment": context.environment.pk, "labels": {}}
    said = {}  # variable -> what its field will hold
    for key, attr, convert in ((ADDRESS_VAR, "address", _address_value),
                               (PORT_VAR, "port", _port_value),
                               (USER_VAR, "ssh_user", _user_value)):
        present, value, line, group = effective(key)
        try:
            fields[attr] = said[key] = convert(value if present else None)
        except _BadValue as exc:
            fail(key, line, group, exc)
    present, value, line, group = effective(ENV_VAR)
    if present:
        environment = context.environments.get(value) if isinstance(value, str) else None
        if environment is None:
            fail(ENV_VAR, line, group, _("there is no environment “%(env)s”")
                 % {"env": value})
        else:
            fields["environment"] = environment
            said[ENV_VAR] = value
    present, value, line, group = effective(LABELS_VAR)
    if present:
        try:
            fields["labels"] = said[LABELS_VAR] = _labels_value(value)
        except _BadValue as exc:
            fail(LABELS_VAR, line, group, exc)
    if not ok:
        return None
    # A host variable its field (and the groups) give back exactly is not stored twice:
    # "ansible_host=10.0.0.1" lives in Host.address only. One that would not come back
    # the same (a port written as a string, an explicit default) stays a variable.
    variables = dict(host.vars)
    for key, field_value in said.items():
        if key in variables:
            inherited = merged.get(key)
            present, value = _reconcile(key, inherited is not None,
                                        inherited[0] if inherited else None, field_value)
            if present and _same(value, variables[key]):
                del variables[key]
    fields["variables"] = variables
    return _HostSpec(host.name, host.line, fields, groups=tuple(sorted(host.groups)),
                     new_fields=new_fields)


def _env_name(value):
    if not isinstance(value, str):
        raise _BadValue(_("an environment name must be a string"))
    return value


_NO_DEFAULT = object()


def _reconcile(key, present, value, field_value):
    """(present, value) of variable ``key`` once its field has its say: the field wins
    over a variable that says otherwise, and adds one only where it holds something
    other than the default (so an imported host shows no variable its file lacked).
    ``opsplane_env`` has no default: it is only ever corrected, never added."""
    _attr, default, convert = _FIELD_VARS[key]
    if present:
        try:
            same = _same(convert(value), field_value)
        except _BadValue:
            same = False
        return True, value if same else field_value
    if default is not _NO_DEFAULT and not _same(field_value, default):
        return True, field_value
    return False, None


def _templated(value):
    return "{{" in value or "{%" in value


def _address_value(value):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadValue(_("an address must be a string, not %(v)r") % {"v": value})
    if _templated(value):
        raise _BadValue(_("templates cannot be imported: the CMDB connects without Ansible"))
    problem = _field_problem(_ADDRESS_FIELD, value)
    if problem:
        raise _BadValue(problem)
    return value


def _port_value(value):
    if value is None:
        return DEFAULT_PORT
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,5}\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise _BadValue(_("%(v)r is not a port number (1-65535)") % {"v": value})
    return value


def _user_value(value):
    if value is None:
        return DEFAULT_USER
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadValue(_("a user name must be a string, not %(v)r") % {"v": value})
    if _templated(value):
        raise _BadValue(_("templates cannot be imported: the CMDB connects without Ansible"))
    problem = _field_problem(_USER_FIELD, value)
    if problem:
        raise _BadValue(_("%(v)r is not a valid user name") % {"v": value})
    return value


def _labels_value(value):
    try:
        validate_labels(value)
    except ValidationError as exc:
        raise _BadValue(" ".join(exc.messages)) from None
    return dict(value)


# The variables that have a Host field: variable -> (field in _load_hosts rows, the
# field's default, how a variable's value becomes the field's).
_FIELD_VARS = {
    ADDRESS_VAR: ("address", "", _address_value),
    PORT_VAR: ("port", DEFAULT_PORT, _port_value),
    USER_VAR: ("ssh_user", DEFAULT_USER, _user_value),
    LABELS_VAR: ("labels", {}, _labels_value),
    ENV_VAR: ("environment__name", _NO_DEFAULT, _env_name),
}


# --- CSV and our JSON ----------------------------------------------------------------


def _parse_csv(text, context):
    """One host per row; the header names the columns (``CSV_COLUMNS``, ``name``
    required). Only the columns present are set: a file with just ``name,address``
    changes addresses and nothing else."""
    report = context.report
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            report.error(1, _("The file is empty."))
            return [], []
        columns = [column.strip().lower() for column in header]
        unknown = [column for column in columns if column not in CSV_COLUMNS]
        if unknown:
            report.error(1, _("Unknown columns: %(c)s (known: %(known)s).")
                         % {"c": ", ".join(unknown), "known": ", ".join(CSV_COLUMNS)})
        if len(set(columns)) != len(columns):
            report.error(1, _("A column appears twice."))
        if "name" not in columns:
            report.error(1, _("The header must have a “name” column."))
        if report.errors:
            return [], []
        records, line = [], reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(columns):
                    report.error(line, _("The row has %(n)d cells; the header has %(h)d.")
                                 % {"n": len(row), "h": len(columns)})
                else:
                    # Spreadsheets pad cells; a description keeps what it has.
                    records.append((line, {
                        column: cell if column == "description" else cell.strip()
                        for column, cell in zip(columns, row, strict=True)}))
                if len(records) > MAX_HOSTS:
                    report.error(line, _("More than %(n)d hosts: the import stops here.")
                                 % {"n": MAX_HOSTS})
                    return [], []
            line = reader.line_num + 1
    except csv.Error as exc:
        report.error(reader.line_num, _("Malformed CSV: %(why)s") % {"why": exc})
        return [], []
    return _record_specs(records, [], context, from_csv=True)


def _parse_json(text, context):
    """``ansible-inventory --list`` output (it has ``_meta``), or ours: a list of host
    objects with the CSV columns as keys, or ``{"hosts": [...], "groups": [...]}`` where
    a group is ``{"name", "parents", "variables"}``."""
    report = context.report
    decoder = _LineTrackingDecoder()
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as exc:
        report.error(exc.lineno, _("Malformed JSON: %(why)s") % {"why": exc.msg})
        return [], []
    except RecursionError:
        report.error(None, _("Malformed JSON: nested too deeply."))
        return [], []
    newlines = [match.start() for match in re.finditer("\n", text)]

    def line_of(value):
        start = decoder.starts.get(id(value))
        return None if start is None else bisect_right(newlines, start) + 1

    if isinstance(data, dict) and "_meta" in data:
        return _ansible_specs(_parse_ansible_json(data, line_of, context), context)
    if isinstance(data, dict) and "hosts" in data and set(data) <= {"hosts", "groups"}:
        hosts, groups = data["hosts"], data.get("groups", [])
    elif isinstance(data, list):
        hosts, groups = data, []
    else:
        report.error(line_of(data) or 1, _(
            "Expected a list of hosts, {\"hosts\": [...], \"groups\": [...]} or the output of "
            "ansible-inventory --list."))
        return [], []
    if not isinstance(hosts, list) or not isinstance(groups, list):
        report.error(line_of(data), _("“hosts” and “groups” must be lists."))
        return [], []
    if len(hosts) > MAX_HOSTS:
        report.error(line_of(hosts), _("More than %(n)d hosts.") % {"n": MAX_HOSTS})
        return [], []
    records = []
    for item in hosts:
        if not isinstance(item, dict):
            report.error(line_of(hosts), _("Each host must be an object."))
            continue
        unknown = sorted(set(item) - set(CSV_COLUMNS))
        if unknown:
            report.error(line_of(item), _("Unknown host keys: %(k)s.") % {"k": ", ".join(unknown)})
            continue
        records.append((line_of(item), item))
    group_records = []
    for item in groups:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            report.error(line_of(item) or line_of(groups),
                         _("Each group must be an object with a “name”."))
            continue
        unknown = sorted(set(item) - {"name", "parents", "variables"})
        if unknown:
            report.error(line_of(item), _("Unknown group keys: %(k)s.")
                         % {"k": ", ".join(unknown)})
            continue
        group_records.append((line_of(item), item))
    return _record_specs(records, group_records, context, from_csv=False)


def _parse_ansible_json(data, line_of, context):
    """The JSON of inventory scripts and ``ansible-inventory --list``: groups with
    ``hosts`` (a list), ``vars`` and ``children`` (lists of names); host variables in
    ``_meta.hostvars``. No ranges or ports in host names there."""
    inv = _Ansible(context)
    report = context.report
    try:
        for name, body in data.items():
            if name == "_meta":
                continue
            line = line_of(body) or line_of(data)
            group = inv.add_group(name, line)
            if isinstance(body, list):
                body = {"hosts": body}
            if not isinstance(body, dict) or not {"hosts", "vars", "children"} & set(body):
                report.error(line, _("Group “%(name)s” must have hosts, vars or children.")
                             % {"name": name})
                continue
            hosts, variables = body.get("hosts", []), body.get("vars", {})
            children = body.get("children", [])
            if not isinstance(hosts, list) or not isinstance(children, list) \
                    or not isinstance(variables, dict):
                report.error(line, _("In group “%(name)s”, hosts and children must be lists "
                                     "and vars a mapping.") % {"name": name})
                continue
            for host_name in hosts:
                if not isinstance(host_name, str):
                    report.error(line_of(hosts), _("Host names must be strings."))
                    continue
                inv.add_host(host_name, line_of(hosts) or line, group)
            for key, value in variables.items():
                value = _clean_json(context, value, line_of(variables), report)
                if value is not _BAD:
                    inv.set_var(group, key, value, line_of(variables))
            for child_name in children:
                if not isinstance(child_name, str):
                    report.error(line_of(children), _("Group names must be strings."))
                    continue
                inv.add_child(group, inv.add_group(child_name, line_of(children)),
                              line_of(children))
    except _Abort:
        return inv
    meta = data["_meta"]
    hostvars = meta.get("hostvars", {}) if isinstance(meta, dict) else None
    if not isinstance(hostvars, dict):
        report.error(line_of(meta), _("_meta.hostvars must be a mapping."))
        return inv
    for host_name, variables in hostvars.items():
        host = inv.hosts.get(host_name)
        line = line_of(variables) or line_of(hostvars)
        if host is None:
            # Ansible only looks up the variables of hosts that some group lists.
            report.warning(line, _("Host “%(name)s” has variables but is in no group; it is "
                                   "ignored.") % {"name": host_name})
            continue
        if not isinstance(variables, dict):
            report.error(line, _("The variables of host “%(name)s” must be a mapping.")
                         % {"name": host_name})
            continue
        for key, value in variables.items():
            value = _clean_json(context, value, line, report)
            if value is not _BAD:
                inv.set_var(host, key, value, line)
    return inv


def _clean_json(context, value, line, report):
    try:
        return context.values.clean(value)
    except _BadValue as exc:
        report.error(line, _("Value: %(why)s") % {"why": exc})
        return _BAD


class _LineTrackingDecoder(json.JSONDecoder):
    """``json.loads`` that remembers where each object and array starts, for line numbers
    in error messages. The pure-Python scanner is about ten times slower than the C one:
    a quarter of a second for 10,000 hosts."""

    def __init__(self):
        super().__init__()
        self.starts = {}
        self.parse_object = self._object
        self.parse_array = self._array
        self.scan_once = json.scanner.py_make_scanner(self)

    def _object(self, s_and_end, *args):
        value, end = json.decoder.JSONObject(s_and_end, *args)
        self.starts[id(value)] = s_and_end[1] - 1
        return value, end

    def _array(self, s_and_end, *args):
        value, end = json.decoder.JSONArray(s_and_end, *args)
        self.starts[id(value)] = s_and_end[1] - 1
        return value, end


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _record_specs(records, group_records, context, *, from_csv):
    """Host and group specs from CSV rows or JSON objects (column -> value)."""
    report = context.report
    specs, seen = [], {}
    referenced = {}
    for line, record in records:
        name = record.get("name")
        problem = _field_problem(_NAME_FIELD, name) if isinstance(name, str) and name \
            else _("the name is missing")
        if problem:
            report.error(line, _("Host “%(name)s”: %(problem)s")
                         % {"name": name or "", "problem": problem})
            continue
        if name in seen:
            report.error(line, _("Host “%(name)s” is already on line %(first)s.")
                         % {"name": name, "first": seen[name]})
            continue
        seen[name] = line
        fields, groups, ok = {}, None, True
        for column, raw in record.items():
            if column == "name":
                continue
            try:
                if column == "groups":
                    groups = _groups_value(raw, from_csv)
                    for group_name in groups:
                        referenced.setdefault(group_name, line)
                elif column == "environment":
                    if raw not in ("", None):
                        if not isinstance(raw, str) or raw not in context.environments:
                            raise _BadValue(_("there is no environment “%(env)s”")
                                            % {"env": raw})
                        fields["environment"] = context.environments[raw]
                else:
                    fields[column] = _column_value(column, raw, from_csv, context)
            except _BadValue as exc:
                report.error(line, _("Host “%(name)s”, %(column)s: %(why)s")
                             % {"name": name, "column": column, "why": exc})
                ok = False
        if ok:
            specs.append(_HostSpec(name, line, fields, groups,
                                   new_fields={"environment": context.environment.pk}))
    group_specs, listed = [], {}
    for line, record in group_records:
        name = record["name"]
        problem = _field_problem(_GROUP_NAME_FIELD, name)
        if problem or name == UNGROUPED or (name == ALL and record.get("parents")):
            report.error(line, _("Group “%(name)s”: %(problem)s") % {
                "name": name, "problem": problem or _("not a group that can be stored")})
            continue
        if name in listed:
            report.error(line, _("Group “%(name)s” is already on line %(first)s.")
                         % {"name": name, "first": listed[name]})
            continue
        listed[name] = line
        try:
            parents = record.get("parents")
            if parents is not None:
                parents = _groups_value(parents, False)
                for parent in parents:
                    referenced.setdefault(parent, line)
            variables = record.get("variables")
            if variables is not None:
                if not isinstance(variables, dict):
                    raise _BadValue(_("variables must be an object"))
                variables = context.values.clean(variables)
        except _BadValue as exc:
            report.error(line, _("Group “%(name)s”: %(why)s") % {"name": name, "why": exc})
            continue
        group_specs.append(_GroupSpec(name, line, variables, parents))
    for name, line in referenced.items():
        if name not in listed:
            group_specs.append(_GroupSpec(name, line, None, None))
    return specs, group_specs


def _groups_value(raw, from_csv):
    if from_csv:
        names = [name for name in re.split(r"[\s,]+", raw) if name]
    elif isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        names = raw
    else:
        raise _BadValue(_("groups must be a list of names"))
    for name in names:
        problem = _field_problem(_GROUP_NAME_FIELD, name)
        if problem:
            raise _BadValue(_("group “%(name)s”: %(problem)s")
                            % {"name": name, "problem": problem})
    # Memberships of all and ungrouped are implicit.
    return tuple(sorted({name for name in names if name not in (ALL, UNGROUPED)}))


def _column_value(column, raw, from_csv, context):
    if column in ("address", "owner_team", "description"):
        if not isinstance(raw, str):
            raise _BadValue(_("must be a string"))
        problem = _field_problem(Host._meta.get_field(column), raw)
        if problem:
            raise _BadValue(problem)
        return raw
    if column == "port":
        if from_csv:
            return DEFAULT_PORT if raw == "" else _port_value(raw)
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _BadValue(_("%(v)r is not a port number (1-65535)") % {"v": raw})
        return _port_value(raw)
    if column == "ssh_user":
        if from_csv and raw == "":
            return DEFAULT_USER
        if not isinstance(raw, str):
            raise _BadValue(_("must be a string"))
        return _user_value(raw)
    if column == "enabled":
        if not from_csv:
            if not isinstance(raw, bool):
                raise _BadValue(_("must be true or false"))
            return raw
        word = raw.lower()
        if word in _TRUE or word == "":
            return True
        if word in _FALSE:
            return False
        raise _BadValue(_("“%(v)s” is not true or false") % {"v": raw})
    if column == "labels":
        if from_csv:
            raw = _json_cell(raw) if raw.strip().startswith("{") else _label_pairs(raw)
        return _labels_value(raw)
    # variables
    if from_csv:
        raw = _json_cell(raw) if raw else {}
    if not isinstance(raw, dict):
        raise _BadValue(_("must be a JSON object"))
    return context.values.clean(raw)


def _label_pairs(raw):
    """``key=value,key=value`` (label keys and values never hold ``,`` or ``=``)."""
    labels = {}
    for pair in raw.split(","):
        if pair.strip():
            key, equals, value = pair.partition("=")
            if not equals:
                raise _BadValue(_("write labels as key=value,key=value"))
            labels[key.strip()] = value.strip()
    return labels


def _json_cell(raw):
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _BadValue(_("not valid JSON: %(why)s") % {"why": exc}) from None


# --- comparing with the database -----------------------------------------------------


class _State:
    """What the database holds for a plan: the hosts the input names (and their
    groups), every group with its parents, the environments."""

    def __init__(self):
        self.hosts = {}  # name -> {"pk", plan fields...}
        self.memberships = {}  # host pk -> set of group names
        self.groups = {}  # name -> {"pk", "variables", "parents": set of names}
        self.environments = {}  # pk -> name

    @classmethod
    def load(cls, host_names, *, lock=False):
        state = cls()
        hosts = Host.objects.select_for_update() if lock else Host.objects.all()
        columns = ["pk", "name", *HOST_ATTRS.values()]
        names = sorted(host_names)
        for start in range(0, len(names), _DB_CHUNK):
            chunk = names[start:start + _DB_CHUNK]
            for row in hosts.filter(name__in=chunk).values_list(*columns):
                record = dict(zip(columns, row, strict=True))
                state.hosts[record["name"]] = record
        groups = Group.objects.select_for_update() if lock else Group.objects.all()
        names_by_pk = {}
        for pk, name, variables in groups.values_list("pk", "name", "variables"):
            state.groups[name] = {"pk": pk, "variables": variables, "parents": set()}
            names_by_pk[pk] = name
        for child, parent in Group.parents.through.objects.values_list("from_group_id",
                                                                      "to_group_id"):
            state.groups[names_by_pk[child]]["parents"].add(names_by_pk[parent])
        pks = sorted(record["pk"] for record in state.hosts.values())
        through = Host.groups.through.objects
        for start in range(0, len(pks), _DB_CHUNK):
            for host_pk, group_pk in through.filter(
                    host_id__in=pks[start:start + _DB_CHUNK]).values_list("host_id", "group_id"):
                state.memberships.setdefault(host_pk, set()).add(names_by_pk[group_pk])
        state.environments = dict(Environment.objects.values_list("pk", "name"))
        return state


def _check_group_cycles(group_specs, state, report):
    """Parents from the input replace those in the database; refuse a loop across both."""
    parents = {name: set(group["parents"]) for name, group in state.groups.items()}
    lines = {}
    for spec in group_specs:
        parents[spec.name] = set(spec.parents) if spec.parents is not None \
            else parents.get(spec.name, set())
        lines[spec.name] = spec.line
    color = {}
    for start in sorted(parents):
        if start in color:
            continue
        color[start] = "open"
        stack = [(start, sorted(parents[start]))]
        while stack:
            name, pending = stack[-1]
            if not pending:
                color[name] = "done"
                stack.pop()
                continue
            parent = pending.pop()
            if color.get(parent) == "open":
                report.error(lines.get(name), _("Making “%(parent)s” a parent of “%(name)s” "
                                                "would make a loop of groups.")
                             % {"parent": parent, "name": name})
            elif parent not in color and parent in parents:
                color[parent] = "open"
                stack.append((parent, sorted(parents[parent])))


def _same(a, b):
    """JSON equality that tells true from 1 (Python's == does not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and \
            all(_same(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and \
            all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _shown(field_name, value, state):
    return state.environments.get(value) if field_name == "environment" else value


def _diff(host_specs, group_specs, state):
    """PlannedChanges for the specs against ``state``; the same input and database give
    the same result, which is how ``apply_import`` notices a stale plan."""
    groups = []
    for spec in group_specs:
        current = state.groups.get(spec.name)
        if current is None:
            if spec.optional and not spec.variables:
                continue
            changes = {"variables": [None, spec.variables or {}],
                       "parents": [None, list(spec.parents or ())]}
            groups.append(PlannedChange(spec.name, "create", changes, spec.line))
            continue
        changes = {}
        if spec.variables is not None and not _same(current["variables"], spec.variables):
            changes["variables"] = [current["variables"], spec.variables]
        if spec.parents is not None and current["parents"] != set(spec.parents):
            changes["parents"] = [sorted(current["parents"]), list(spec.parents)]
        groups.append(PlannedChange(spec.name, "update" if changes else "unchanged", changes,
                                    spec.line))
    hosts = []
    for spec in host_specs:
        current = state.hosts.get(spec.name)
        if current is None:
            values = {**spec.new_fields, **spec.fields}
            changes = {key: [None, _shown(key, value, state)] for key, value in values.items()}
            if spec.groups is not None:
                changes["groups"] = [None, list(spec.groups)]
            hosts.append(PlannedChange(spec.name, "create", changes, spec.line))
            continue
        changes = {}
        for key, value in spec.fields.items():
            before = current[HOST_ATTRS[key]]
            if not _same(before, value):
                changes[key] = [_shown(key, before, state), _shown(key, value, state)]
        if spec.groups is not None:
            before = state.memberships.get(current["pk"], set())
            if before != set(spec.groups):
                changes["groups"] = [sorted(before), list(spec.groups)]
        hosts.append(PlannedChange(spec.name, "update" if changes else "unchanged", changes,
                                   spec.line))
    return hosts, groups


def _not_in_file(host_specs, planned, state, environment):
    """Hosts of the environments the input's hosts end up in that the input omits."""
    environments = {environment.pk}
    for spec, item in zip(host_specs, planned, strict=True):
        if "environment" in spec.fields:
            environments.add(spec.fields["environment"])
        elif item.action != "create":
            environments.add(state.hosts[spec.name]["environment_id"])
    names = {spec.name for spec in host_specs}
    return sorted(name for name in Host.objects.filter(environment_id__in=environments)
                  .values_list("name", flat=True) if name not in names)


# --- applying ------------------------------------------------------------------------


def apply_import(plan, *, by, request=None):
    """Write ``plan`` in one transaction and return its counts. Refuses a plan with
    errors, and one whose database has changed since (plan again). ``by`` None is a
    system import (a management command); a user must be allowed to edit the inventory.
    Writes nothing at all when nothing changes."""
    if plan.errors:
        raise CMDBError(_("The import has errors; nothing was imported. Fix the file and "
                          "plan it again."))
    if by is not None and not can_edit(by):
        raise PermissionDenied(_("Your role does not allow this change to the inventory."))
    summary = {"format": plan.format, "environment": plan.environment.name,
               "sha256": plan.digest, **plan.counts()}
    with transaction.atomic():
        state = _State.load({spec.name for spec in plan._host_specs}, lock=True)
        loops = _Report()
        _check_group_cycles(plan._group_specs, state, loops)
        if loops.errors or \
                _diff(plan._host_specs, plan._group_specs, state) != (plan.hosts, plan.groups):
            raise CMDBError(_("The inventory changed since this import was planned; plan it "
                              "again."))
        if not plan.has_changes:
            return summary
        now = timezone.now()
        group_pks = _write_groups(plan, state, now)
        changed = _write_hosts(plan, state, group_pks, now)
        audit.record_many("host.import", [host for host, _changes in changed], by=by,
                          request=request,
                          details={host.pk: {"changes": changes} for host, changes in changed})
        summary["group_changes"] = {item.name: item.changes for item in plan.groups
                                    if item.action != "unchanged"}
        audit.record("inventory.import", by=by, obj=plan.environment, request=request,
                     detail=summary)
    return summary


def _write_groups(plan, state, now):
    group_pks = {name: group["pk"] for name, group in state.groups.items()}
    specs = {spec.name: spec for spec in plan._group_specs}
    created = [Group(name=item.name, variables=specs[item.name].variables or {})
               for item in plan.groups if item.action == "create"]
    Group.objects.bulk_create(created, batch_size=500)
    group_pks.update((group.name, group.pk) for group in created)
    updated = [Group(pk=group_pks[item.name], variables=specs[item.name].variables,
                     updated_at=now)
               for item in plan.groups if "variables" in item.changes and item.action == "update"]
    Group.objects.bulk_update(updated, ["variables", "updated_at"], batch_size=500)
    relinked = [item.name for item in plan.groups
                if "parents" in item.changes and specs[item.name].parents is not None]
    through = Group.parents.through
    through.objects.filter(from_group_id__in=[group_pks[name] for name in relinked]).delete()
    through.objects.bulk_create([
        through(from_group_id=group_pks[name], to_group_id=group_pks[parent])
        for name in relinked for parent in specs[name].parents
    ], batch_size=1000)
    return group_pks


def _write_hosts(plan, state, group_pks, now):
    """Bulk create and update; returns [(host, changes)] of the hosts that changed."""
    created, updates, relinked, changed = [], {}, [], []
    for spec, item in zip(plan._host_specs, plan.hosts, strict=True):
        if item.action == "create":
            values = {HOST_ATTRS[key]: value
                      for key, value in {**spec.new_fields, **spec.fields}.items()}
            host = Host(name=spec.name, **values)
            created.append(host)
        elif item.action == "update":
            host = Host(pk=state.hosts[spec.name]["pk"], name=spec.name)
            for key in item.changes:
                if key != "groups":
                    updates.setdefault(HOST_ATTRS[key], []).append((host.pk, spec.fields[key]))
        else:
            continue
        changed.append((host, item.changes))
        if "groups" in item.changes:
            relinked.append((host, spec.groups))
    Host.objects.bulk_create(created, batch_size=500)
    for attr, values in updates.items():
        _update_field(attr, values, now)
    through = Host.groups.through
    old = [host.pk for host, _groups in relinked if host.name in state.hosts]
    for start in range(0, len(old), _DB_CHUNK):
        through.objects.filter(host_id__in=old[start:start + _DB_CHUNK]).delete()
    through.objects.bulk_create([
        through(host_id=host.pk, group_id=group_pks[name])
        for host, names in relinked for name in names
    ], batch_size=1000)
    return changed


def _update_field(attr, values, now):
    """Set ``attr`` to each (pk, value). A value many hosts share (a group variable
    changed an SSH user) takes one UPDATE per 900 hosts; the others go through
    bulk_update's CASE statements, which grow slow with the batch."""
    by_value = {}
    for pk, value in values:
        key = json.dumps(value, sort_keys=True)
        by_value.setdefault(key, (value, []))[1].append(pk)
    one_offs = []
    for value, pks in by_value.values():
        if len(pks) < 10:
            one_offs += [Host(pk=pk, updated_at=now, **{attr: value}) for pk in pks]
            continue
        for start in range(0, len(pks), _DB_CHUNK):
            Host.objects.filter(pk__in=pks[start:start + _DB_CHUNK]).update(
                **{attr: value, "updated_at": now})
    Host.objects.bulk_update(one_offs, [attr, "updated_at"], batch_size=250)


# --- effective variables ---------------------------------------------------------------


class _GroupGraph:
    """Groups as Ansible orders their variables: by depth (the longest path from ``all``,
    whose children are at depth 1), then ``ansible_group_priority``, then name.

    ``entries`` holds each group's variables (without the priority) in whatever form the
    caller merges: plain values, or (value, line, group) for error messages. ``top`` is
    the ``all`` group's, below everything else. Keys are names or primary keys."""

    def __init__(self, *, names, parents, priorities, entries, top):
        self.names, self.parents, self.priorities = names, parents, priorities
        self.entries, self.top = entries, top
        self.depths = _depths(parents)
        self._ancestors, self._merged = {}, {}

    def ancestors(self, key):
        """The group and every group above it (``all`` aside)."""
        found = self._ancestors.get(key)
        if found is None:
            found, stack = set(), [key]
            while stack:
                current = stack.pop()
                if current not in found:
                    found.add(current)
                    stack.extend(self.parents[current])
            self._ancestors[key] = found = frozenset(found)
        return found

    def merged(self, direct):
        """The variables of ``all``, the ``direct`` groups and their ancestors, merged
        in Ansible's order (cached: hosts of a group share one computation)."""
        direct = frozenset(direct)
        merged = self._merged.get(direct)
        if merged is None:
            closure = set()
            for key in direct:
                closure |= self.ancestors(key)
            merged = dict(self.top)
            for key in sorted(closure, key=lambda k: (self.depths[k], self.priorities[k],
                                                      self.names[k])):
                merged.update(self.entries[key])
            self._merged[direct] = merged
        return merged


def _depths(parents):
    """Longest path from the top (1 for a group without parents). An edge that would
    close a loop is ignored, so a bad graph cannot hang us."""
    depths, visiting = {}, set()
    for start in parents:
        stack = [start]
        while stack:
            key = stack[-1]
            if key in depths:
                stack.pop()
                continue
            visiting.add(key)
            todo = [p for p in parents[key] if p not in depths and p not in visiting]
            if todo:
                stack.extend(todo)
                continue
            depths[key] = 1 + max((depths[p] for p in parents[key] if p in depths), default=0)
            visiting.discard(key)
            stack.pop()
    return depths


def _group_priority(variables):
    priority = _priority(variables.get(PRIORITY, 1))
    return 1 if priority is None else priority


def _db_graph():
    """Every group of the database with its parents, in two queries."""
    names, parents, variables, all_pk = {}, {}, {}, None
    for pk, name, group_vars in Group.objects.values_list("pk", "name", "variables"):
        names[pk], parents[pk], variables[pk] = name, [], group_vars
        if name == ALL:
            all_pk = pk
    for child, parent in Group.parents.through.objects.values_list("from_group_id",
                                                                  "to_group_id"):
        if all_pk not in (child, parent):
            parents[child].append(parent)
    all_vars = variables.pop(all_pk, {}) if all_pk else {}
    names.pop(all_pk, None)
    parents.pop(all_pk, None)
    graph = _GroupGraph(
        names=names, parents=parents,
        priorities={pk: _group_priority(v) for pk, v in variables.items()},
        entries={pk: {k: v for k, v in group_vars.items() if k != PRIORITY}
                 for pk, group_vars in variables.items()},
        top={k: v for k, v in all_vars.items() if k != PRIORITY},
    )
    graph.all_pk, graph.variables, graph.all_variables = all_pk, variables, all_vars
    return graph


_HOST_COLUMNS = ("pk", "name", "address", "port", "ssh_user", "labels", "variables",
                 "environment__name")


def _load_hosts(hosts):
    """(rows, {host pk: [direct group pks]}): two queries for any number of hosts."""
    rows = [dict(zip(_HOST_COLUMNS, row, strict=True))
            for row in hosts.values_list(*_HOST_COLUMNS)]
    memberships = {}
    for host_pk, group_pk in Host.groups.through.objects.filter(
            host_id__in=hosts.values("pk")).values_list("host_id", "group_id"):
        memberships.setdefault(host_pk, []).append(group_pk)
    return rows, memberships


def _field_overrides(variables, host):
    """``variables`` (a host's merged variables) with what its fields say: ``host`` is a
    row of ``_load_hosts``."""
    for key, (attr, _default, _convert) in _FIELD_VARS.items():
        present, value = _reconcile(key, key in variables, variables.get(key), host[attr])
        if present:
            variables[key] = value
    return variables


def effective_variables_many(hosts):
    """{host name: the variables Ansible sees for it} for a Host queryset, in four
    queries whatever its size."""
    rows, memberships = _load_hosts(hosts)
    graph = _db_graph()
    result = {}
    for host in rows:
        variables = dict(graph.merged(memberships.get(host["pk"], ())))
        variables.update(host["variables"])
        result[host["name"]] = _field_overrides(variables, host)
    return result


def effective_variables(host):
    """The variables Ansible sees for ``host`` (``ansible-inventory --list``'s hostvars)."""
    return effective_variables_many(Host.objects.filter(pk=host.pk))[host.name]


# --- exports ---------------------------------------------------------------------------


def export_ansible_yaml(hosts, *, environment=None):
    """A YAML inventory of the ``hosts`` queryset, their groups (and those groups'
    ancestors) and the ``all`` variables. Each host's own variables are written where it
    first appears; what the fields say (address, port, user, labels) is added where the
    groups' variables would say otherwise.

    Environments: a host whose variables do not name its environment gets an
    ``opsplane_env`` variable, so importing the file puts it back, except for hosts in
    ``environment`` (pass the environment you will import the file with to keep the file
    free of them)."""
    rows, memberships = _load_hosts(hosts)
    graph = _db_graph()
    host_vars, in_group, ungrouped, included = {}, {}, [], set()
    for host in sorted(rows, key=lambda row: row["name"]):
        direct = [pk for pk in memberships.get(host["pk"], ()) if pk != graph.all_pk]
        inherited = graph.merged(direct)
        wanted = _field_overrides({**inherited, **host["variables"]}, host)
        if ENV_VAR not in wanted and (environment is None
                                      or host["environment__name"] != environment.name):
            wanted[ENV_VAR] = host["environment__name"]
        own = dict(host["variables"])
        for key, value in wanted.items():
            if key in own or key not in inherited or not _same(inherited[key], value):
                own[key] = value
        host_vars[host["name"]] = own
        for pk in direct:
            in_group.setdefault(pk, []).append(host["name"])
            included |= graph.ancestors(pk)
        if not direct:
            ungrouped.append(host["name"])
    children = {}
    for pk in included:
        for parent in graph.parents[pk]:
            children.setdefault(parent, []).append(pk)
    written_hosts, written_groups = set(), set()

    def host_entry(name):
        if name in written_hosts:
            return None
        written_hosts.add(name)
        return host_vars[name] or None

    def group_entry(pk):
        if pk in written_groups:  # a diamond: defined once, named again
            return None
        written_groups.add(pk)
        entry = {}
        if graph.variables[pk]:
            entry["vars"] = graph.variables[pk]
        kids = sorted(children.get(pk, ()), key=graph.names.get)
        if kids:
            entry["children"] = {graph.names[kid]: group_entry(kid) for kid in kids}
        if pk in in_group:
            entry["hosts"] = {name: host_entry(name) for name in in_group[pk]}
        return entry or None

    top = {}
    if graph.all_variables:
        top["vars"] = graph.all_variables
    roots = sorted((pk for pk in included if not graph.parents[pk]), key=graph.names.get)
    if roots or ungrouped:
        top["children"] = {graph.names[pk]: group_entry(pk) for pk in roots}
        if ungrouped:
            top["children"][UNGROUPED] = {"hosts": {name: host_entry(name)
                                                    for name in ungrouped}}
    return yaml.dump({ALL: top}, Dumper=_PlainDumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases for values that happen to be the same object."""

    def ignore_aliases(self, data):
        return True


_PROMETHEUS_BAD_RE = re.compile(r"[^A-Za-z0-9_]")


def prometheus_label_name(key):
    """A CMDB label key as a Prometheus label name: ``app.kubernetes.io/name`` ->
    ``app_kubernetes_io_name``; a leading digit gets an underscore in front."""
    name = _PROMETHEUS_BAD_RE.sub("_", key)
    return f"_{name}" if name[:1].isdigit() else name


def export_file_sd(hosts, *, port=9100):
    """Prometheus ``file_sd`` JSON: one target group per host (its ``host`` label makes
    every label set unique, so there is nothing to merge), target ``address:port``, labels
    = the host's labels with Prometheus names plus ``env`` and ``host``. Where two keys
    sanitise to the same name the later key (in sorted order) wins; ``env`` and ``host``
    win over labels of those names. Pass ``hosts.filter(enabled=True)`` to leave disabled
    hosts out."""
    groups = []
    for name, address, labels, env in sorted(
            hosts.values_list("name", "address", "labels", "environment__name")):
        target = address or name
        if ":" in target:  # an IPv6 address
            target = f"[{target}]"
        label_set = {prometheus_label_name(key): labels[key] for key in sorted(labels)}
        label_set.update(env=env, host=name)
        groups.append({"targets": [f"{target}:{port}"], "labels": label_set})
    return json.dumps(groups, indent=2) + "\n"


def export_csv(hosts):
    """CSV with every column of ``CSV_COLUMNS``; importing it back changes nothing.
    Groups are direct memberships, comma-separated; labels ``key=value,...``; variables
    a JSON object."""
    rows = list(hosts.values_list("pk", "name", "environment__name", "address", "port",
                                  "ssh_user", "labels", "variables", "owner_team",
                                  "description", "enabled"))
    names = dict(Group.objects.values_list("pk", "name"))
    memberships = {}
    for host_pk, group_pk in Host.groups.through.objects.filter(
            host_id__in=hosts.values("pk")).values_list("host_id", "group_id"):
        memberships.setdefault(host_pk, []).append(names[group_pk])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for (pk, name, env, address, port, user, labels, variables, team, description,
         enabled) in sorted(rows, key=lambda row: row[1]):
        writer.writerow([
            name, env, address, port, user,
            ",".join(sorted(g for g in memberships.get(pk, ()) if g not in (ALL, UNGROUPED))),
            ",".join(f"{key}={labels[key]}" for key in sorted(labels)),
            json.dumps(variables, sort_keys=True, ensure_ascii=False) if variables else "",
            team, description, "true" if enabled else "false",
        ])
    return out.getvalue()


EXPORTS = {
    # format: (function, content type, file name)
    "ansible": (export_ansible_yaml, "application/yaml", "inventory.yml"),
    "file_sd": (export_file_sd, "application/json", "targets.json"),
    "csv": (export_csv, "text/csv", "hosts.csv"),
}


def export(fmt, hosts):
    """``(text, content_type, filename)`` of ``hosts`` in ``fmt`` (a key of EXPORTS);
    ValueError for an unknown format."""
    if fmt not in EXPORTS:
        raise ValueError(f"format: one of {', '.join(EXPORTS)}")
    function, content_type, filename = EXPORTS[fmt]
    return function(hosts), content_type, filename
