"""Request bodies -> alerts: Alertmanager's webhook (version 4), Grafana's webhook contact
point, and our generic JSON. Pure functions, no database.

Problems are collected as (path, message) pairs — ``alerts[3].labels.severity: must be
a string`` — so a sender learns everything wrong with a request at once.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerts.fingerprint import fingerprint as compute_fingerprint

GO_ZERO_YEAR = 1  # Go's zero time, 0001-01-01T00:00:00Z, means "no end"
FINGERPRINT_RE = re.compile(r"^[0-9A-Za-z._:-]{1,64}$")
MAX_ERRORS = 20


class PayloadError(ValueError):
    def __init__(self, errors):
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))
        self.errors = errors


@dataclass(slots=True)
class Incoming:
    fingerprint: str
    labels: dict
    annotations: dict
    status: str            # "firing" or "resolved"
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    raw: dict


def parse_time(value, path, errors):
    """RFC 3339 -> aware datetime; None for absent, null or Go's zero time."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append((path, "must be an RFC 3339 time string"))
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors.append((path, f"{value[:40]!r} is not an RFC 3339 time"))
        return None
    if moment.year <= GO_ZERO_YEAR:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _string_map(value, path, errors, *, required):
    if value is None:
        if required:
            errors.append((path, "is required (an object of string values)"))
        return {}
    if not isinstance(value, dict):
        errors.append((path, "must be an object of string values"))
        return {}
    result = {}
    for key, item in value.items():
        if not key:
            errors.append((path, "a name is empty"))
        elif not isinstance(item, str):
            errors.append((f"{path}.{key}", "must be a string"))
        else:
            result[key] = item
    return result


def parse_alert(data, path, errors, now, *, kind, resolve_timeout=None):
    if not isinstance(data, dict):
        errors.append((path, "must be an object"))
        return None
    before = len(errors)
    labels = _string_map(data.get("labels"), f"{path}.labels", errors, required=True)
    if kind == "grafana":
        # Grafana's internal labels (__alert_rule_uid__ ...) are not the alert's.
        labels = {k: v for k, v in labels.items() if not (k.startswith("__")
                                                          and k.endswith("__"))}
    labels = {k: v for k, v in labels.items() if v != ""}
    if not labels and len(errors) == before:
        errors.append((f"{path}.labels", "at least one label with a value is required"))
    annotations = _string_map(data.get("annotations"), f"{path}.annotations", errors,
                              required=False)
    status = data.get("status")
    if status not in (None, "firing", "resolved"):
        errors.append((f"{path}.status", "must be \"firing\" or \"resolved\""))
    starts_at = parse_time(data.get("startsAt"), f"{path}.startsAt", errors) or now
    ends_at = parse_time(data.get("endsAt"), f"{path}.endsAt", errors)
    given = data.get("fingerprint")
    if given not in (None, "") and (not isinstance(given, str)
                                    or not FINGERPRINT_RE.match(given)):
        errors.append((f"{path}.fingerprint", "must be 1-64 letters, digits or ._:-"))
    url = data.get("generatorURL") or ""
    if not isinstance(url, str):
        errors.append((f"{path}.generatorURL", "must be a string"))
    if len(errors) > before:
        return None
    if ends_at is None and resolve_timeout and status != "resolved":
        ends_at = now + resolve_timeout
    if status == "resolved" or (ends_at is not None and ends_at <= now):
        status = "resolved"
        ends_at = ends_at or now
    else:
        status = "firing"
    return Incoming(
        fingerprint=given or compute_fingerprint(labels), labels=labels,
        annotations=annotations, status=status, starts_at=starts_at, ends_at=ends_at,
        generator_url=url[:2000], raw=data,
    )


def parse_body(kind, body, now, *, resolve_timeout_minutes=0):
    """``body`` (bytes) of an integration of ``kind`` -> (envelope, [Incoming]).

    The envelope is the body without its alert list (unknown fields included), kept on
    the receipt. Raises ``PayloadError``."""
    if kind == "heartbeat":
        return {}, []
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise PayloadError([("body", "is not UTF-8 text")]) from None
    except ValueError as exc:
        raise PayloadError([("body", f"is not valid JSON: {exc}")]) from None
    if kind == "generic" and isinstance(data, list):
        data = {"alerts": data}
    if not isinstance(data, dict):
        raise PayloadError([("body", "must be a JSON object with an \"alerts\" list")])
    items = data.get("alerts")
    if not isinstance(items, list):
        raise PayloadError([("alerts", "is required: a list of alerts")])
    errors = []
    resolve_timeout = timedelta(minutes=resolve_timeout_minutes) if (
        kind == "generic" and resolve_timeout_minutes) else None
    alerts = []
    for i, item in enumerate(items):
        alert = parse_alert(item, f"alerts[{i}]", errors, now, kind=kind,
                            resolve_timeout=resolve_timeout)
        if alert is not None:
            alerts.append(alert)
        if len(errors) >= MAX_ERRORS:
            errors.append(("alerts", f"stopped after {MAX_ERRORS} problems"))
            break
    if errors:
        raise PayloadError(errors)
    envelope = {k: v for k, v in data.items() if k != "alerts"}
    return envelope, alerts
