"""What a subject is, as policies and windows see it, and the questions asked of it.

``approvals`` imports no other domain app, so it cannot look hosts up in the CMDB. The
caller (for changes: ``changes.services.approval_subject``) describes its subject once, as
plain data: ``Subject`` with one ``HostFacts`` per target host (name, environment,
labels, services). Policies, freeze windows and maintenance windows pick hosts with a
*host selector* evaluated here, in Python, on those facts.

The host selector is the CMDB selector language (``cmdb/selectors.py``) without the
``group`` keyword (nested groups are not in the facts)::

    role=db,zone in (a,b),!canary,env=prod,service=storefront,name~db-*

Terms are ANDed; ``key!=v`` and ``notin`` also match hosts without the label, as in the
CMDB; name globs take ``* ? [abc] [a-z] [!abc]``. ``tests/test_approvals_policies.py``
checks that both languages pick the same hosts.

No Django import here: everything is a pure function of its arguments.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

RISKS = ("low", "medium", "high", "critical")

ENV, SERVICE, NAME = "env", "service", "name"
KEYWORDS = {ENV, SERVICE, NAME}
UNSUPPORTED = {"group"}
MAX_LENGTH = 4096

_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]*)?$")
_KEY_RE = re.compile(r"[A-Za-z0-9._/-]+")
_BARE_RE = re.compile(r"[A-Za-z0-9._:/@+*?\[\]-]+")
_WS = " \t\r\n"


@dataclass(frozen=True)
class HostFacts:
    name: str
    environment: str
    labels: dict = field(default_factory=dict)
    services: tuple = ()

    def as_dict(self):
        return {"name": self.name, "environment": self.environment,
                "labels": dict(self.labels), "services": sorted(self.services)}

    @classmethod
    def from_dict(cls, data):
        return cls(name=data["name"], environment=data.get("environment", ""),
                   labels=dict(data.get("labels") or {}),
                   services=tuple(data.get("services") or ()))


@dataclass
class Subject:
    """Everything approvals needs to know about one thing to approve.

    ``type``/``id`` identify it (``"changes.change"``, ``"42"``); ``digest`` is the hash of
    its content, computed by the owner: an approval counts only for the digest it was
    given on. ``hosts`` and ``protected_environments`` are what policies and windows
    match; ``runbook`` and ``risk`` (one of ``RISKS``) too. ``not_before`` is a scheduled
    start. ``summary`` is a JSON snapshot shown to approvers (steps, parameters with
    secrets masked, hosts by environment and service): approvals stores it as given."""

    type: str
    id: str
    title: str
    digest: str
    author: object
    link: str = ""
    hosts: list = field(default_factory=list)
    protected_environments: frozenset = frozenset()
    runbook: str = ""
    risk: str = "low"
    not_before: datetime | None = None
    summary: dict = field(default_factory=dict)

    @property
    def environments(self):
        return sorted({h.environment for h in self.hosts})

    def facts(self):
        """The JSON the request keeps, so later checks see what approvers saw."""
        return {"hosts": [h.as_dict() for h in self.hosts],
                "protected_environments": sorted(self.protected_environments),
                "runbook": self.runbook, "risk": self.risk}


def hosts_from_facts(facts):
    return [HostFacts.from_dict(h) for h in facts.get("hosts", [])]


def risk_at_least(risk, minimum):
    """``risk >= minimum`` on the ``RISKS`` scale; an empty minimum is always met."""
    if not minimum:
        return True
    rank = {name: i for i, name in enumerate(RISKS)}
    return rank.get(risk, 0) >= rank[minimum]


# --- host selectors ------------------------------------------------------------------------


class SelectorError(ValueError):
    def __init__(self, message, position):
        super().__init__(message)
        self.message, self.position = message, position


@dataclass(frozen=True)
class Term:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", "~", "!~"
    values: tuple = ()

    def matches(self, host):
        if self.key == NAME:
            return self._compare({host.name})
        if self.key == ENV:
            return self._compare({host.environment})
        if self.key == SERVICE:
            return self._compare(set(host.services))
        present = self.key in host.labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        return self._compare({host.labels[self.key]} if present else set())

    def _compare(self, have):
        """``have`` is the set of the host's values for the key (several for services)."""
        if self.op == "=":
            return self.values[0] in have
        if self.op == "!=":
            return self.values[0] not in have
        if self.op == "in":
            return bool(have & set(self.values))
        if self.op == "notin":
            return not (have & set(self.values))
        if self.op == "~":
            return any(fnmatchcase(v, self.values[0]) for v in have)
        if self.op == "!~":
            return not any(fnmatchcase(v, self.values[0]) for v in have)
        raise AssertionError(self.op)


@dataclass(frozen=True)
class HostSelector:
    terms: tuple = ()

    def matches(self, host):
        return all(term.matches(host) for term in self.terms)


def parse_selector(text):
    """Parse a host selector; ``SelectorError`` names the position of the problem."""
    return _Parser(text or "").parse()


class _Parser:
    def __init__(self, text):
        self.text, self.pos = text, 0

    def parse(self):
        if len(self.text) > MAX_LENGTH:
            self._fail(MAX_LENGTH, f"at most {MAX_LENGTH} characters")
        terms = []
        self._ws()
        if self._end():
            return HostSelector()
        while True:
            terms.append(self._term())
            self._ws()
            if self._end():
                return HostSelector(tuple(terms))
            if self._peek() != ",":
                self._fail(self.pos, "',' or end of input after a term")
            self.pos += 1
            self._ws()

    def _term(self):
        if self._peek() == "!" and not self.text.startswith(("!=", "!~"), self.pos):
            self.pos += 1
            self._ws()
            start = self.pos
            key = self._key()
            if key in KEYWORDS:
                self._fail(start, "a label key after '!' (keywords cannot be tested for "
                                  "absence)")
            return Term(key, "!exists")
        start = self.pos
        key = self._key()
        if key in UNSUPPORTED:
            self._fail(start, "a label key, 'env', 'service' or 'name' ('group' needs the "
                              "inventory: use a label)")
        self._ws()
        op = self._operator()
        if op is None:
            if (self._end() or self._peek() == ",") and key not in KEYWORDS:
                return Term(key, "exists")
            self._fail(self.pos, f"an operator after '{key}'")
        if op in ("~", "!~") and key != NAME:
            self._fail(self.pos - len(op), "'=', '!=', 'in' or 'notin' ('~' and '!~' "
                                           "match globs on 'name' only)")
        self._ws()
        if op in ("in", "notin"):
            return Term(key, op, tuple(sorted(set(self._values(op)))))
        value = self._value()
        if op in ("~", "!~") and value.count("[") != value.count("]"):
            self._fail(self.pos, "']' to close the character class in the glob")
        return Term(key, op, (value,))

    def _key(self):
        match = _KEY_RE.match(self.text, self.pos)
        if not match:
            self._fail(self.pos, "a label key or a keyword")
        key = match.group()
        if key not in KEYWORDS | UNSUPPORTED and (len(key) > 63
                                                   or not _LABEL_KEY_RE.match(key)):
            self._fail(self.pos, "a label key (letters, digits, '.', '_', '-', at most 63)")
        self.pos = match.end()
        return key

    def _operator(self):
        for spelling, op in (("==", "="), ("!=", "!="), ("!~", "!~"), ("=", "="),
                             ("~", "~")):
            if self.text.startswith(spelling, self.pos):
                self.pos += len(spelling)
                return op
        word = _KEY_RE.match(self.text, self.pos)
        if word and word.group() in ("in", "notin"):
            self.pos = word.end()
            return word.group()
        return None

    def _values(self, op):
        if self._peek() != "(":
            self._fail(self.pos, f"'(' after '{op}'")
        self.pos += 1
        values = []
        while True:
            self._ws()
            values.append(self._value())
            self._ws()
            if self._peek() == ")":
                self.pos += 1
                return values
            if self._peek() != ",":
                self._fail(self.pos, "')' or ',' after a value")
            self.pos += 1

    def _value(self):
        if self._peek() == '"':
            opened = self.pos
            self.pos += 1
            chars = []
            while self.pos < len(self.text):
                char = self.text[self.pos]
                if char == '"':
                    self.pos += 1
                    return "".join(chars)
                if char == "\\":
                    nxt = self.text[self.pos + 1:self.pos + 2]
                    if nxt not in ('"', "\\"):
                        self._fail(self.pos + 1, "'\"' or '\\' after '\\'")
                    chars.append(nxt)
                    self.pos += 2
                    continue
                chars.append(char)
                self.pos += 1
            self._fail(self.pos, f"'\"' to close the value quoted at position {opened}")
        match = _BARE_RE.match(self.text, self.pos)
        if not match:
            self._fail(self.pos, "a value")
        self.pos = match.end()
        return match.group()

    def _ws(self):
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def _peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _end(self):
        return self.pos >= len(self.text)

    def _fail(self, at, expected):
        found = "end of input" if at >= len(self.text) else repr(self.text[at:at + 20])
        raise SelectorError(f"position {at}: expected {expected}, found {found}", at)


def hosts_matching(hosts, *, environments=(), selector=""):
    """The hosts (``HostFacts``) in one of ``environments`` (any when empty) that the
    selector picks. Both conditions hold for the same host."""
    parsed = parse_selector(selector)
    wanted = set(environments)
    return [h for h in hosts if (not wanted or h.environment in wanted) and parsed.matches(h)]


# --- N of group G -----------------------------------------------------------------------------


def assign(slots, approvers):
    """Match approvers to requirement slots, each approver filling at most one slot.

    ``slots`` is a list of group names, one per approval needed (``2 of approver`` is two
    slots); ``approvers`` maps an approver's key to the set of groups they count for.
    Returns ``{slot index: approver key}`` of a maximum matching (Kuhn's augmenting
    paths), so "1 of dba AND 1 of approver" needs two different people even when one of
    them is in both groups."""
    owner = {}

    def place(person, seen):
        for index, group in enumerate(slots):
            if group in approvers[person] and index not in seen:
                seen.add(index)
                if index not in owner or place(owner[index], seen):
                    owner[index] = person
                    return True
        return False

    for person in approvers:
        place(person, set())
    return owner
