"""The runbook language: parameter declarations and steps, validated with errors that
name the field (``steps[2].timeout: ...``), and parameter values checked against them.

A runbook is written as YAML (or the same structure as JSON through the API)::

    parameters:
      - name: service
        type: choice            # string, text, int, bool, choice
        choices: [nginx, redis]
        required: true
      - name: token
        type: string
        secret: true            # masked in output, stored encrypted, hashed in digests
    steps:
      - name: restart
        kind: shell             # shell, script, upload
        command: systemctl restart {{ service }}
        timeout: 60
        when: labels.role == "web"
      - name: config
        kind: upload
        template: "port = {{ port }}"
        dest: /etc/app.conf
        mode: "0644"

No Django model import: ``changes/services.py`` stores what this module validated.
"""

import hashlib
import json
import re

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

PARAM_TYPES = ("string", "text", "int", "bool", "choice")
STEP_KINDS = ("shell", "script", "upload")
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
STEP_FIELDS = {
    "shell": {"command"},
    "script": {"script", "interpreter"},
    "upload": {"template", "dest", "mode", "owner"},
}
COMMON_STEP_FIELDS = {"name", "kind", "timeout", "continue_on_error", "run_once", "when"}
MAX_STEPS = 100
_jinja = ImmutableSandboxedEnvironment()


class RunbookError(ValueError):
    """Problems with a runbook definition: ``errors`` maps a field path to a message."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))


def parse_definition(text):
    """YAML text -> (parameters, steps), validated. Raises ``RunbookError``."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise RunbookError({where: str(getattr(exc, "problem", exc))}) from None
    if not isinstance(data, dict):
        raise RunbookError({"definition": "expected a mapping with parameters and steps"})
    unknown = set(data) - {"parameters", "steps"}
    if unknown:
        raise RunbookError({k: "unknown key (expected parameters, steps)" for k in unknown})
    return validate(data.get("parameters") or [], data.get("steps") or [])


def dump_definition(parameters, steps):
    return yaml.safe_dump({"parameters": parameters, "steps": steps}, sort_keys=False,
                          allow_unicode=True)


def validate(parameters, steps):
    """Check declarations and steps; returns them normalised (defaults filled in)."""
    errors = {}
    params = _validate_parameters(parameters, errors)
    clean_steps = _validate_steps(steps, errors)
    if errors:
        raise RunbookError(errors)
    return params, clean_steps


def _validate_parameters(parameters, errors):
    if not isinstance(parameters, list):
        errors["parameters"] = "expected a list"
        return []
    seen, clean = set(), []
    for i, raw in enumerate(parameters):
        path = f"parameters[{i}]"
        if not isinstance(raw, dict):
            errors[path] = "expected a mapping with name and type"
            continue
        unknown = set(raw) - {"name", "type", "default", "required", "choices", "secret",
                              "description", "label"}
        if unknown:
            errors[f"{path}.{sorted(unknown)[0]}"] = "unknown field"
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors[f"{path}.name"] = "lower-case letters, digits and _, not starting with a digit"
            continue
        if name in seen:
            errors[f"{path}.name"] = f"{name!r} is declared twice"
        if name in {"params", "host", "labels", "facts"}:
            errors[f"{path}.name"] = f"{name!r} is reserved in templates"
        seen.add(name)
        kind = raw.get("type", "string")
        if kind not in PARAM_TYPES:
            errors[f"{path}.type"] = f"one of {', '.join(PARAM_TYPES)}"
            continue
        param = {
            "name": name, "type": kind, "required": bool(raw.get("required", False)),
            "secret": bool(raw.get("secret", False)),
            "description": str(raw.get("description", "")),
            "label": str(raw.get("label", "")) or name.replace("_", " "),
        }
        if kind == "choice":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                errors[f"{path}.choices"] = "a choice parameter needs a list of choices"
                continue
            param["choices"] = [str(c) for c in choices]
        elif "choices" in raw:
            errors[f"{path}.choices"] = "only choice parameters have choices"
        if "default" in raw and raw["default"] is not None:
            value, error = _coerce(param, raw["default"])
            if error:
                errors[f"{path}.default"] = error
            else:
                param["default"] = value
        if param["secret"] and "default" in param:
            errors[f"{path}.default"] = "a secret parameter cannot have a default"
        clean.append(param)
    return clean


def _validate_steps(steps, errors):
    if not isinstance(steps, list) or not steps:
        errors["steps"] = "a runbook needs at least one step"
        return []
    if len(steps) > MAX_STEPS:
        errors["steps"] = f"at most {MAX_STEPS} steps"
        return []
    clean = []
    for i, raw in enumerate(steps):
        path = f"steps[{i}]"
        if not isinstance(raw, dict):
            errors[path] = "expected a mapping with name and kind"
            continue
        kind = raw.get("kind")
        if kind not in STEP_KINDS:
            errors[f"{path}.kind"] = f"one of {', '.join(STEP_KINDS)}"
            continue
        unknown = set(raw) - COMMON_STEP_FIELDS - STEP_FIELDS[kind]
        if unknown:
            errors[f"{path}.{sorted(unknown)[0]}"] = f"not a field of a {kind} step"
        step = {"name": str(raw.get("name") or f"step {i + 1}"), "kind": kind,
                "continue_on_error": bool(raw.get("continue_on_error", False)),
                "run_once": bool(raw.get("run_once", False)),
                "when": str(raw.get("when") or "")}
        timeout = raw.get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                    or not 0 < timeout <= 86400:
                errors[f"{path}.timeout"] = "seconds, more than 0 and at most 86400"
            else:
                step["timeout"] = timeout
        required = {"shell": ["command"], "script": ["script"],
                    "upload": ["template", "dest"]}[kind]
        for field in required:
            if not isinstance(raw.get(field), str) or not raw[field].strip():
                errors[f"{path}.{field}"] = "required"
        for field in STEP_FIELDS[kind]:
            if field in raw and raw[field] is not None:
                step[field] = str(raw[field])
        if kind == "script":
            step.setdefault("interpreter", "/bin/sh")
        if kind == "upload":
            dest = step.get("dest", "")
            if dest and not dest.startswith("/"):
                errors[f"{path}.dest"] = "an absolute path"
            if "mode" in step and not re.fullmatch(r"0?[0-7]{3,4}", step["mode"]):
                errors[f"{path}.mode"] = "octal, like 0644"
        for field in ("command", "script", "template"):
            if field in step:
                _check_template(step[field], f"{path}.{field}", errors)
        if step["when"]:
            try:
                _jinja.compile_expression(step["when"])
            except TemplateSyntaxError as exc:
                errors[f"{path}.when"] = f"not an expression: {exc.message}"
        clean.append(step)
    return clean


def _check_template(text, path, errors):
    try:
        _jinja.parse(text)
    except TemplateSyntaxError as exc:
        errors[path] = f"template error on line {exc.lineno}: {exc.message}"


def _coerce(param, value):
    """(value, None) or (None, error message) for one parameter value."""
    kind = param["type"]
    if kind == "int":
        if isinstance(value, bool):
            return None, "a whole number"
        try:
            return int(str(value).strip()), None
        except ValueError:
            return None, "a whole number"
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True, None
        if text in {"0", "false", "no", "off", ""}:
            return False, None
        return None, "true or false"
    value = "" if value is None else str(value)
    if kind == "choice" and value not in param["choices"]:
        return None, f"one of {', '.join(param['choices'])}"
    if kind == "string" and "\n" in value:
        return None, "a single line (use a text parameter for several lines)"
    return value, None


def clean_params(declarations, raw):
    """Check submitted values against the declarations.

    Returns ``(values, errors)``: every declared parameter in ``values`` (defaults
    filled in); ``errors`` maps a parameter name to a message. Undeclared names are
    errors too, so a typo is not silently dropped."""
    values, errors = {}, {}
    for name in set(raw) - {p["name"] for p in declarations}:
        errors[name] = "not a parameter of this runbook"
    for param in declarations:
        name = param["name"]
        given = raw.get(name)
        if given is None or (given == "" and param["type"] not in {"bool"}):
            if "default" in param:
                values[name] = param["default"]
            elif param["required"]:
                errors[name] = "required"
            else:
                values[name] = False if param["type"] == "bool" else ""
            continue
        value, error = _coerce(param, given)
        if error:
            errors[name] = error
        else:
            values[name] = value
    return values, errors


def definition_digest(parameters, steps):
    """sha256 of the canonical JSON of a runbook version's content."""
    canonical = json.dumps({"parameters": parameters, "steps": steps}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


BATCH_RE = re.compile(r"^\s*(\d{1,6})\s*(%?)\s*$")


def clean_strategy(raw):
    """A change's strategy, checked: ``(strategy, errors)`` like ``clean_params``.

    ``batches`` is a comma-separated string or a list (``"1, 10%, 100%"``): Ansible's
    ``serial``; empty means one batch of every host."""
    raw = raw or {}
    errors, strategy = {}, {}
    try:
        parallelism = int(raw.get("parallelism", 20))
        if not 1 <= parallelism <= 1000:
            raise ValueError
        strategy["parallelism"] = parallelism
    except (TypeError, ValueError):
        errors["parallelism"] = "a whole number from 1 to 1000"
    batches = raw.get("batches") or []
    if isinstance(batches, str):
        batches = [b for b in batches.split(",") if b.strip()]
    clean_batches = []
    for item in batches:
        match = BATCH_RE.match(str(item))
        if not match or int(match.group(1)) == 0 or (match.group(2)
                                                    and int(match.group(1)) > 100):
            errors["batches"] = "sizes like 1, 10%, 100% (whole numbers or percentages)"
            break
        clean_batches.append(match.group(1) + match.group(2))
    strategy["batches"] = clean_batches
    max_fail = raw.get("max_fail_percentage")
    if max_fail in (None, ""):
        strategy["max_fail_percentage"] = None
    else:
        try:
            value = float(max_fail)
            if not 0 <= value <= 100:
                raise ValueError
            strategy["max_fail_percentage"] = value
        except (TypeError, ValueError):
            errors["max_fail_percentage"] = "a percentage from 0 to 100"
    try:
        pause = float(raw.get("pause_between_batches") or 0)
        if not 0 <= pause <= 3600:
            raise ValueError
        strategy["pause_between_batches"] = pause
    except (TypeError, ValueError):
        errors["pause_between_batches"] = "seconds from 0 to 3600"
    check = raw.get("check_mode", False)
    strategy["check_mode"] = check is True or str(check).lower() in {"1", "true", "on", "yes"}
    return strategy, errors
