"""Policies as YAML: export, and import checked against a JSON Schema with errors that
name the field (``policies[1].require[0].count: 0 is less than the minimum of 1``).

The document::

    version: 1
    policies:
      - name: prod-db
        description: Databases in production need a DBA and an approver.
        enabled: true
        match:
          environments: [prod]
          selector: role=db
          runbooks: []
          min_risk: high          # low, medium, high, critical; empty: any
        require:
          - {group: dba, count: 1}
          - {group: approver, count: 1}
        author_may_approve: false
        validity_hours: 24
        rejection_ends: true
        notify: [dba-dingtalk]    # notification channels told about its requests

No database access here: ``approvals.services.import_policies`` checks what only the
database knows (that the groups and notification channels exist) and writes.
"""

import jsonschema
import yaml

from approvals.matching import RISKS, SelectorError, parse_selector

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

POLICY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "require"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 100},
        "description": {"type": "string", "maxLength": 300},
        "enabled": {"type": "boolean"},
        "match": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "environments": {"type": "array", "uniqueItems": True,
                                 "items": {"type": "string", "minLength": 1,
                                           "maxLength": 50}},
                "selector": {"type": "string", "maxLength": 4096},
                "runbooks": {"type": "array", "uniqueItems": True,
                             "items": {"type": "string", "minLength": 1, "maxLength": 100}},
                "min_risk": {"enum": ["", *RISKS]},
            },
        },
        "require": {
            "type": "array", "minItems": 1, "maxItems": 10,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["group", "count"],
                "properties": {
                    "group": {"type": "string", "minLength": 1, "maxLength": 150},
                    "count": {"type": "integer", "minimum": 1, "maximum": 20},
                },
            },
        },
        "author_may_approve": {"type": "boolean"},
        "validity_hours": {"type": "integer", "minimum": 1, "maximum": 24 * 365},
        "rejection_ends": {"type": "boolean"},
        "notify": {"type": "array", "uniqueItems": True, "maxItems": 20,
                   "items": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 100}},
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "opsplane approval policies",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "policies"],
    "properties": {
        "version": {"const": 1},
        "policies": {"type": "array", "items": POLICY_SCHEMA},
    },
}

_validator = jsonschema.Draft202012Validator(SCHEMA)


class PolicyFileError(ValueError):
    """``errors`` maps a field path (``policies[0].require[1].group``) to its message."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))


def _path(parts):
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document)"


def parse(text):
    """YAML text -> a list of policy dicts in the model's terms. Raises
    ``PolicyFileError`` naming each bad field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(document)"
        raise PolicyFileError({where: f"not valid YAML: {getattr(exc, 'problem', exc)}"}) \
            from None
    errors = {}
    for error in sorted(_validator.iter_errors(document), key=lambda e: list(e.path)):
        path = list(error.absolute_path)
        if error.validator in ("required", "additionalProperties") and "'" in error.message:
            # Name the missing (or unexpected) field itself, not its parent.
            path.append(error.message.split("'")[1])
        errors.setdefault(_path(path), error.message)
    if errors:
        raise PolicyFileError(errors)
    policies, seen = [], {}
    for index, item in enumerate(document["policies"]):
        where = f"policies[{index}]"
        if item["name"] in seen:
            errors[f"{where}.name"] = (f"'{item['name']}' is already the name of "
                                       f"policies[{seen[item['name']]}]")
        seen.setdefault(item["name"], index)
        match = item.get("match", {})
        try:
            parse_selector(match.get("selector", ""))
        except SelectorError as exc:
            errors[f"{where}.match.selector"] = exc.message
        groups = [r["group"] for r in item["require"]]
        if len(set(groups)) != len(groups):
            errors[f"{where}.require"] = "each group once (add up the counts instead)"
        policies.append({
            "name": item["name"],
            "description": item.get("description", ""),
            "enabled": item.get("enabled", True),
            "environments": match.get("environments", []),
            "selector": match.get("selector", ""),
            "runbooks": match.get("runbooks", []),
            "min_risk": match.get("min_risk", ""),
            "requirements": [{"group": r["group"], "count": r["count"]}
                             for r in item["require"]],
            "allow_author": item.get("author_may_approve", False),
            "validity_hours": item.get("validity_hours", 72),
            "rejection_ends": item.get("rejection_ends", True),
            "channels": item.get("notify", []),
        })
    if errors:
        raise PolicyFileError(errors)
    return policies


def dump(policies):
    """Policies (model instances) -> YAML text that ``parse`` reads back unchanged."""
    items = []
    for p in policies:
        items.append({
            "name": p.name,
            "description": p.description,
            "enabled": p.enabled,
            "match": {"environments": list(p.environments), "selector": p.selector,
                      "runbooks": list(p.runbooks), "min_risk": p.min_risk},
            "require": [{"group": r["group"], "count": r["count"]} for r in p.requirements],
            "author_may_approve": p.allow_author,
            "validity_hours": p.validity_hours,
            "rejection_ends": p.rejection_ends,
            "notify": list(p.channels),
        })
    return yaml.safe_dump({"version": 1, "policies": items}, sort_keys=False,
                          allow_unicode=True)
