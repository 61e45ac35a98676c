"""The selector language: which hosts a change, an alert route, a UI filter or an API call
is about. One language everywhere, so a selector copied from one place means the same in
another::

    env=prod,role=web,!canary,zone in (a,b),group=frontend,name~web-*

Grammar (EBNF; whitespace may surround every token)::

    selector = [ term { "," term } ] ;
    term     = "!" label_key                              (* label absent *)
             | label_key                                  (* label present *)
             | key ( "=" | "==" | "!=" ) value
             | key ( "in" | "notin" ) "(" value { "," value } ")"
             | "name" ( "~" | "!~" ) value ;              (* glob: * ? [abc] [a-z] [!abc] *)
    key      = "env" | "group" | "service" | "name" | label_key ;
    label_key = ? LABEL_KEY_RE of cmdb.models, at most 63 characters ? ;
    value    = bare | quoted ;
    bare     = ? one or more of A-Z a-z 0-9 . _ : / @ + * ? [ ] - ? ;
    quoted   = '"' { ? a printable character but " and \\ ? | '\\"' | '\\\\' } '"' ;

Terms are ANDed. ``key!=v`` and ``key notin (...)`` also match hosts without the label,
as in Kubernetes. ``env``, ``group``, ``service`` and ``name`` are keywords, not labels
(models.RESERVED_LABEL_KEYS), so they take an operator: ``env`` alone is an error. ``group=x``
means x or any group nested below it. The empty selector matches every host.

``resolve()`` turns a selector into one SQL query on both SQLite and PostgreSQL: labels
through the JSONField's key lookups, services and groups through ``EXISTS`` subqueries
(never joins, which would repeat a host once per matching row), nested groups through a
recursive CTE inside that subquery, name globs through an anchored regular expression.
All name and value comparisons are case-sensitive on both databases.
"""

import enum
import re
from dataclasses import dataclass

from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Exact, In

from cmdb.models import LABEL_KEY_RE, RESERVED_LABEL_KEYS, Group, Host, Service

MAX_LENGTH = 4096
MAX_KEY_LENGTH = 63  # as models.validate_labels: a longer key can never match

_BARE_RE = re.compile(r"[A-Za-z0-9._:/@+*?\[\]-]+")
_KEY_RE = re.compile(r"[A-Za-z0-9._/-]+")
_WHITESPACE = " \t\r\n"

ENV, GROUP, SERVICE, NAME = "env", "group", "service", "name"
assert {ENV, GROUP, SERVICE, NAME} == RESERVED_LABEL_KEYS  # one list of keywords, not two


class Op(enum.StrEnum):
    """The operators; each value is the canonical spelling (``==`` is read as ``=``)."""

    EQ = "="
    NE = "!="
    IN = "in"
    NOTIN = "notin"
    EXISTS = ""
    NOT_EXISTS = "!"
    GLOB = "~"
    NOT_GLOB = "!~"


_KEYWORD_OPS = {Op.EQ, Op.NE, Op.IN, Op.NOTIN}
_ALLOWED_OPS = {
    ENV: _KEYWORD_OPS, GROUP: _KEYWORD_OPS, SERVICE: _KEYWORD_OPS,
    NAME: _KEYWORD_OPS | {Op.GLOB, Op.NOT_GLOB},
}
_LABEL_OPS = _KEYWORD_OPS | {Op.EXISTS, Op.NOT_EXISTS}


class SelectorError(ValueError):
    """A selector that does not parse. ``position`` is the 0-based character offset the
    message names; ``expected`` says what would have been valid there (for a UI hint)."""

    def __init__(self, message, position, expected):
        super().__init__(message)
        self.message = message
        self.position = position
        self.expected = expected


@dataclass(frozen=True)
class Term:
    """One condition. ``values`` holds one value for =, !=, ~ and !~, a sorted set without
    duplicates for in/notin (so ``in (b,a)`` equals ``in (a,b)``), nothing for existence."""

    key: str
    op: Op
    values: tuple[str, ...] = ()

    def __str__(self):
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.NOT_EXISTS:
            return f"!{self.key}"
        if self.op in (Op.IN, Op.NOTIN):
            return f"{self.key} {self.op} ({','.join(map(quote, self.values))})"
        return f"{self.key}{self.op}{quote(self.values[0])}"

    def q(self):
        return _term_q(self)


@dataclass(frozen=True)
class Selector:
    """A parsed selector: terms that must all hold. Immutable and hashable, so it can be
    compared, cached or used as a key; ``str()`` gives the canonical text to store."""

    terms: tuple[Term, ...] = ()

    def __str__(self):
        """The canonical text: ``parse(str(s)) == s`` for every selector."""
        return ",".join(map(str, self.terms))

    def q(self):
        """A ``Q`` for ``Host`` querysets; the empty selector gives ``Q()`` (everything).
        Disabled hosts are not excluded here: ``resolve()`` does that."""
        q = Q()
        for term in self.terms:
            q &= term.q()
        return q


def quote(value):
    """A value as the canonical text writes it: bare when it can be, else double-quoted."""
    if _BARE_RE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse(text):
    """Parse selector text; raises ``SelectorError`` naming the position, what was
    expected there and what was found."""
    return _Parser(text).parse()


def resolve(selector, *, include_disabled=False, queryset=None):
    """The hosts a selector (text or ``Selector``) matches, as one lazy queryset that runs
    one SQL query. ``queryset`` narrows the search (default: all hosts)."""
    if not isinstance(selector, Selector):
        selector = parse(selector)
    hosts = Host.objects.all() if queryset is None else queryset
    if not include_disabled:
        hosts = hosts.filter(enabled=True)
    return hosts.filter(selector.q())


# --- parser ----------------------------------------------------------------------------

_TERM = "a label key, a keyword or '!'"


def _ops_text(key):
    """What may follow a key, for error messages."""
    if key == NAME:
        return "an operator ('=', '!=', '~', '!~', 'in', 'notin') after 'name'"
    if key in RESERVED_LABEL_KEYS:
        return f"an operator ('=', '!=', 'in', 'notin') after '{key}'"
    return f"an operator ('=', '!=', 'in', 'notin'), ',' or end of input after '{key}'"


class _Parser:
    """Recursive descent over the text itself (the tokens are few and context decides
    what a character means: ``!`` starts a term, ``!=`` or ``!~``)."""

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def parse(self):
        if len(self.text) > MAX_LENGTH:
            self._fail(MAX_LENGTH, f"at most {MAX_LENGTH} characters",
                       f"{len(self.text)} characters")
        self._skip_ws()
        if self._at_end():
            return Selector()
        terms = [self._term(_TERM)]
        while True:
            self._skip_ws()
            if self._at_end():
                return Selector(tuple(terms))
            if self._peek() != ",":
                self._fail(self.pos, "',' or end of input after a term")
            self.pos += 1
            self._skip_ws()
            terms.append(self._term(f"{_TERM} after ','"))

    # A term: "!key", "key", "key op value", "key in (values)".
    def _term(self, expected):
        if self._peek() == "!":
            self.pos += 1
            self._skip_ws()
            start = self.pos
            key = self._key("a label key after '!'")
            if key in RESERVED_LABEL_KEYS:
                self._fail(start, "a label key after '!'", f"keyword '{key}'",
                           hint="keywords cannot be tested for absence")
            return Term(key, Op.NOT_EXISTS)

        key = self._key(expected)
        self._skip_ws()
        op_start = self.pos
        op = self._operator()
        if op is None:
            term_ends = self._at_end() or self._peek() == ","
            if term_ends and key not in RESERVED_LABEL_KEYS:
                return Term(key, Op.EXISTS)
            hint = f"'{key}' is a keyword, not a label: it cannot stand alone" \
                if term_ends else None
            self._fail(self.pos, _ops_text(key), hint=hint)
        if op not in _ALLOWED_OPS.get(key, _LABEL_OPS):
            # Only '~' and '!~' can be refused here.
            self._fail(op_start, _ops_text(key), hint="'~' and '!~' match globs on 'name' only")
        self._skip_ws()

        if op in (Op.IN, Op.NOTIN):
            return Term(key, op, tuple(sorted(set(self._value_list(op)))))
        spelled = self.text[op_start:self.pos].strip()
        value, offsets = self._value(f"a value after '{spelled}'")
        if op in (Op.GLOB, Op.NOT_GLOB):
            try:
                glob_to_regex(value)
            except _GlobError as exc:
                # Back from an index in the decoded value to an offset in the text.
                expected = exc.expected
                if exc.opened is not None:
                    expected += f" opened at position {offsets[exc.opened]}"
                self._fail(offsets[exc.index], expected, exc.found)
        return Term(key, op, (value,))

    def _key(self, expected):
        match = _KEY_RE.match(self.text, self.pos)
        if not match:
            self._fail(self.pos, expected)
        key = match.group()
        if key not in RESERVED_LABEL_KEYS and (
            len(key) > MAX_KEY_LENGTH or not LABEL_KEY_RE.match(key)
        ):
            self._fail(self.pos, "a label key: an optional lowercase DNS prefix and '/', "
                       "then letters, digits, '.', '_' or '-', at most 63 characters",
                       _show(key))
        self.pos = match.end()
        return key

    def _operator(self):
        """Consume an operator and return it, or None (position unchanged) if none."""
        text, pos = self.text, self.pos
        for spelling, op in (("==", Op.EQ), ("!=", Op.NE), ("!~", Op.NOT_GLOB),
                             ("=", Op.EQ), ("~", Op.GLOB)):
            if text.startswith(spelling, pos):
                self.pos += len(spelling)
                return op
        word = _KEY_RE.match(text, pos)
        if word and word.group() in ("in", "notin"):
            self.pos = word.end()
            return Op(word.group())
        return None

    def _value_list(self, op):
        if self._peek() != "(":
            self._fail(self.pos, f"'(' after '{op}'")
        self.pos += 1
        values = []
        expected = "a value after '('"
        while True:
            self._skip_ws()
            values.append(self._value(expected)[0])
            self._skip_ws()
            if self._peek() == ")":
                self.pos += 1
                return values
            if self._peek() != ",":
                self._fail(self.pos, "')' or ',' after value")
            self.pos += 1
            expected = "a value after ','"

    def _value(self, expected):
        """A bare or quoted value, and the text offset of each of its characters plus one
        for the end of the value."""
        start = self.pos
        if self._peek() == '"':
            return self._quoted()
        match = _BARE_RE.match(self.text, start)
        if not match:
            self._fail(start, expected)
        self.pos = match.end()
        return match.group(), list(range(start, self.pos + 1))

    def _quoted(self):
        opened = self.pos
        self.pos += 1
        chars, offsets = [], []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                offsets.append(self.pos)  # "the end of the value" is the closing quote
                self.pos += 1
                return "".join(chars), offsets
            if char == "\\":
                nxt = text[self.pos + 1] if self.pos + 1 < len(text) else None
                if nxt not in ('"', "\\"):
                    self._fail(self.pos + 1, "'\"' or '\\' after '\\' in a quoted value")
                offsets.append(self.pos)
                chars.append(nxt)
                self.pos += 2
                continue
            if not char.isprintable():
                # Never in a name or a label, and PostgreSQL refuses NUL in a parameter.
                self._fail(self.pos, "a printable character or '\"' in a quoted value")
            offsets.append(self.pos)
            chars.append(char)
            self.pos += 1
        self._fail(self.pos, f"'\"' to close the value quoted at position {opened}")

    def _skip_ws(self):
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def _peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _at_end(self):
        return self.pos >= len(self.text)

    def _found(self, at):
        if at >= len(self.text):
            return "end of input"
        # A word is shown whole ("found 'prod'"), anything else one character at a time.
        match = _BARE_RE.match(self.text, at)
        return _show(match.group() if match else self.text[at])

    def _fail(self, at, expected, found=None, *, hint=None):
        found = self._found(at) if found is None else found
        message = f"position {at}: expected {expected}, found {found}"
        if hint:
            message += f" ({hint})"
        raise SelectorError(message, at, expected)


def _show(found):
    if len(found) > 20:
        found = found[:20] + "..."
    return f"'{found}'" if found.isprintable() else repr(found)


# --- globs -----------------------------------------------------------------------------


class _GlobError(Exception):
    """``index`` into the pattern (``len(pattern)`` for its end); ``opened``: the index of
    the '[' an unclosed class starts at."""

    def __init__(self, index, expected, found, *, opened=None):
        super().__init__(expected)
        self.index, self.expected, self.found, self.opened = index, expected, found, opened


def glob_to_regex(pattern):
    """A glob as an anchored regular expression that Python's ``re`` (Django's REGEXP
    function on SQLite) and PostgreSQL's ``~`` read the same way: ``*``, ``?``, ``[abc]``,
    ``[a-z]``, ``[!abc]``; every other character literal, case-sensitive.

    ``(?s)`` makes ``.`` match a newline in Python as it does in PostgreSQL; ``\\A``/``\\Z``
    anchor at the very ends (``$`` would allow a trailing newline in Python). Literal ASCII
    punctuation is backslash-escaped, which both engines read as the character itself,
    also inside brackets; letters, digits and non-ASCII characters are never escaped
    (``\\`` + letter is a class escape in both).
    """
    out = ["(?s)\\A"]
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i + 1
            negate = j < n and pattern[j] == "!"
            if negate:
                j += 1
            start = j
            while j < n and pattern[j] != "]":
                j += 1
            if j == n:
                raise _GlobError(n, "']' to close the character class", "end of the value",
                                 opened=i)
            if j == start:
                raise _GlobError(j, "a character in the class", "']'")
            out.append("[" + ("^" if negate else "") + _class_body(pattern, start, j) + "]")
            i = j
        else:
            out.append(_escape(char))
        i += 1
    out.append("\\Z")
    return "".join(out)


def _class_body(pattern, start, end):
    out = []
    i = start
    while i < end:
        # "a-z" is a range; a '-' first or last in the class is itself.
        if i + 2 < end and pattern[i + 1] == "-":
            low, high = pattern[i], pattern[i + 2]
            if low > high:
                raise _GlobError(i, "a range in ascending order", f"'{low}-{high}'")
            out.append(f"{_escape(low)}-{_escape(high)}")
            i += 3
        else:
            out.append(_escape(pattern[i]))
            i += 1
    return "".join(out)


def _escape(char):
    if char.isascii() and not char.isalnum():
        return "\\" + char
    return char


# --- SQL -------------------------------------------------------------------------------


class GroupSubtree(models.Expression):
    """The ids of the named groups and of every group nested below them, to any depth:
    a recursive CTE as a subquery, for ``group_id__in=``.

    ``UNION`` (not ``UNION ALL``) visits a group reached twice (a diamond) once, and would
    end even on a cycle. Table and column names come from ``Group.parents``' through
    model; the names are bound parameters.
    """

    output_field = models.BigIntegerField()

    def __init__(self, names):
        super().__init__()
        self.names = tuple(names)

    def as_sql(self, compiler, connection):
        qn = connection.ops.quote_name
        parents = Group._meta.get_field("parents")
        group_table, group_pk = qn(Group._meta.db_table), qn(Group._meta.pk.column)
        link = qn(parents.m2m_db_table())
        child = qn(parents.m2m_column_name())  # the group that has the parent
        parent = qn(parents.m2m_reverse_name())
        cte = qn("selector_subtree")
        placeholders = ", ".join(["%s"] * len(self.names))
        # Only quoted identifiers from _meta are formatted in; the names are parameters.
        sql = (
            f"WITH RECURSIVE {cte} (id) AS ("  # noqa: S608
            f"SELECT {group_table}.{group_pk} FROM {group_table}"
            f" WHERE {group_table}.{qn('name')} IN ({placeholders})"
            f" UNION SELECT {link}.{child} FROM {link}"
            f" INNER JOIN {cte} ON {link}.{parent} = {cte}.id"
            f") SELECT id FROM {cte}"
        )
        return f"({sql})", list(self.names)


def _term_q(term):
    key, op, values = term.key, term.op, term.values
    negate = op in (Op.NE, Op.NOTIN, Op.NOT_GLOB)
    if key == ENV:
        q = Q(environment__name__in=values)
    elif key == NAME:
        q = Q(name__regex=glob_to_regex(values[0])) if op in (Op.GLOB, Op.NOT_GLOB) \
            else Q(name__in=values)
    elif key == SERVICE:
        q = Q(Exists(Service.hosts.through.objects.filter(
            host=OuterRef("pk"), service__name__in=values)))
    elif key == GROUP:
        q = Q(Exists(Host.groups.through.objects.filter(
            host=OuterRef("pk"), group_id__in=GroupSubtree(values))))
    elif op in (Op.EXISTS, Op.NOT_EXISTS):
        q = Q(labels__has_key=key)
        negate = op is Op.NOT_EXISTS
    else:
        # The key goes in as a transform argument, not a "labels__<key>" keyword, because
        # a label key may contain "__". has_key first: without the key the comparison is
        # NULL, and NOT (NULL) would drop exactly the hosts that != must keep.
        value = KeyTextTransform(key, "labels")
        compare = Exact(value, values[0]) if len(values) == 1 else In(value, list(values))
        q = Q(labels__has_key=key) & Q(compare)
    return ~q if negate else q
