"""Label matchers as Alertmanager writes and applies them: ``name="value"``, ``!=``,
``=~`` and ``!~``, regexes anchored at both ends, a missing label read as "".

Parsing accepts what an ``alertmanager.yml`` may hold: one matcher per string or a
brace-enclosed, comma-separated list (``{a="b", c=~"d|e"}``), values quoted (Go escapes)
or bare. ``str(matcher)`` prints Alertmanager's form, which route keys are made of.
"""

import re
from dataclasses import dataclass, field

OPERATORS = ("=~", "!~", "!=", "=")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_NAME = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([a-zA-Z_:][a-zA-Z0-9_:]*))\s*')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}


class MatcherError(ValueError):
    pass


def go_quote(value):
    """``strconv.Quote``: how Alertmanager prints a value inside a matcher or label set."""
    out = ['"']
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _unquote(text):
    out, chars = [], iter(text)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            if nxt not in _ESCAPES:
                raise MatcherError(f"invalid escape sequence \\{nxt}")
            out.append(_ESCAPES[nxt])
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name, op, value):
        if op not in OPERATORS:
            raise MatcherError(f"unknown operator {op!r}")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"^(?:{value})$", re.DOTALL)
            except re.error as exc:
                raise MatcherError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels):
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = self.regex.match(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self):
        name = self.name if LABEL_NAME_RE.match(self.name) else go_quote(self.name)
        return f"{name}{self.op}{go_quote(self.value)}"

    def as_list(self):
        return [self.name, self.op, self.value]

    @property
    def sort_key(self):
        # labels.Matchers.Less: by name, then value, then type.
        return (self.name, self.value, OPERATORS.index(self.op))


def matches_all(matchers, labels):
    return all(m.matches(labels) for m in matchers)


def format_matchers(matchers):
    """``{a="b",c=~"d"}`` with the matchers sorted as Alertmanager sorts them."""
    return "{" + ",".join(str(m) for m in sorted(matchers, key=lambda m: m.sort_key)) + "}"


def _split(text):
    """Split on commas outside double quotes."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise MatcherError("unterminated quoted string")
    parts.append("".join(current))
    return parts


def parse_one(text):
    match = _NAME.match(text)
    if not match or not (match.group(1) is not None or match.group(2)):
        raise MatcherError(f"{text.strip()!r}: expected a label name")
    name = _unquote(match.group(1)) if match.group(1) is not None else match.group(2)
    rest = text[match.end():]
    op = next((o for o in OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise MatcherError(f"{text.strip()!r}: expected one of = != =~ !~ after {name!r}")
    raw = rest[len(op):].strip()
    if raw.startswith('"'):
        end, escaped = None, False
        for index, char in enumerate(raw[1:], start=1):
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                end = index
                break
        if end is None:
            raise MatcherError(f"{text.strip()!r}: unterminated quoted value")
        if raw[end + 1:].strip():
            raise MatcherError(f"{text.strip()!r}: unexpected text after the quoted value")
        value = _unquote(raw[1:end])
    else:
        value = raw
    return Matcher.make(name, op, value)


def parse(text):
    """One string from a ``matchers:`` list -> a list of matchers."""
    if not isinstance(text, str):
        raise MatcherError("a matcher must be a string such as severity=\"critical\"")
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherError(f"{body!r}: missing closing brace")
        body = body[1:-1]
    if not body.strip():
        return []
    return [parse_one(part) for part in _split(body) if part.strip()]


def parse_list(items):
    """A ``matchers:`` list (strings) -> matchers."""
    result = []
    for item in items:
        result.extend(parse(item))
    return result


def from_lists(rows):
    """Stored ``[[name, op, value], ...]`` -> matchers."""
    return [Matcher.make(*row) for row in rows]
