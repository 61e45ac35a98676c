"""Import from a real ``alertmanager.yml``: the routing sections become our tree, and each
receiver's integrations become notification channels (``opsplane.notify``).

``convert(text)`` is pure (no database): it returns our YAML, notes for people, and the
channels the receivers need (``Planned``). What maps onto our channel kinds is mapped:

- ``webhook_configs``: ``url`` -> a webhook channel (``http_config``'s bearer token or
  ``authorization.credentials`` -> its token);
- ``slack_configs``: ``api_url`` (or ``global.slack_api_url``) -> a Slack channel;
- ``email_configs``: ``to`` -> an e-mail channel with those recipients;
- anything else (PagerDuty, Opsgenie, WeChat, Telegram, ...), or a config whose URL lives
  in a ``*_file`` or whose ``to`` is a template -> a *disabled placeholder* of the
  nearest kind, named like the receiver, whose description says what to fill in.

A receiver with one integration sends to the channel of its own name; one with several
to ``<receiver>-<kind>`` (``-2``, ``-3`` when a kind repeats); one with none notifies
nobody, as in Alertmanager. URLs and tokens go only into ``Planned.secret_fields``, which
``alerts.services.apply_import`` hands to ``opsplane.notify`` to store encrypted: they
never reach the YAML, the notes or anything shown.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from alerts import routing

# Alertmanager's default send_resolved per integration type.
SEND_RESOLVED_DEFAULT = {
    "email_configs": False, "slack_configs": False, "wechat_configs": False,
    "pushover_configs": True, "webhook_configs": True, "pagerduty_configs": True,
    "opsgenie_configs": True, "victorops_configs": True, "sns_configs": True,
    "telegram_configs": True, "discord_configs": True, "msteams_configs": True,
    "webex_configs": True, "msteamsv2_configs": True, "jira_configs": True,
    "rocketchat_configs": True,
}
IMPORTED = ("route", "receivers", "inhibit_rules", "time_intervals", "mute_time_intervals")
# Placeholders take the kind the missing piece will most likely be filled in as.
PLACEHOLDER_KIND = {"slack_configs": "slack", "email_configs": "email",
                    "wechat_configs": "wecom"}
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")
NAME_MAX = 100


@dataclass
class Planned:
    """A channel a receiver needs. ``secret_fields`` (URL, token) is never shown."""

    name: str
    kind: str
    receiver: str
    origin: str                       # e.g. "webhook_configs[0]"
    enabled: bool = True
    config: dict = field(default_factory=dict)
    secret_fields: dict = field(default_factory=dict, repr=False)
    description: str = ""
    target: str = ""                  # where it sends, as people may see it (a host)

    @property
    def placeholder(self):
        return not self.enabled


@dataclass
class Imported:
    source: str
    notes: list
    channels: list


def channel_name(text):
    """A valid channel name (``opsplane.notify``'s rule) made from a receiver's name."""
    name = _NAME_BAD.sub("-", str(text)).lstrip("._-")[:NAME_MAX]
    return name or "receiver"


def _http_url(value):
    if not isinstance(value, str):
        return ""
    value = value.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme not in {"http", "https"} or not parts.hostname or any(
            c.isspace() or ord(c) < 32 for c in value):
        return ""
    return value


def _email(text):
    try:
        validate_email(text)
    except ValidationError:
        return False
    return True


def _host(url):
    return urlsplit(url).hostname or ""


def _bearer(cfg):
    http = cfg.get("http_config") or {}
    if not isinstance(http, dict):
        return "", []
    ignored = sorted(k for k in ("basic_auth", "oauth2", "tls_config", "proxy_url")
                     if http.get(k))
    auth = http.get("authorization") or {}
    token = auth.get("credentials") if isinstance(auth, dict) else None
    token = token or http.get("bearer_token")
    return (token.strip() if isinstance(token, str) else ""), ignored


def _placeholder(kind_key, receiver, origin, what):
    kind = PLACEHOLDER_KIND.get(kind_key, "webhook")
    description = (f"Placeholder from alertmanager.yml ({receiver}: {origin}). "
                   f"Fill in {what}, then enable it.")[:200]
    return Planned(name="", kind=kind, receiver=receiver, origin=origin, enabled=False,
                   description=description)


def _plan(kind_key, cfg, receiver, origin, global_cfg, notes):
    """One integration of a receiver -> a ``Planned`` (name filled in by the caller)."""
    if not isinstance(cfg, dict):
        cfg = {}
    if kind_key == "webhook_configs":
        url = _http_url(cfg.get("url"))
        if not url:
            return _placeholder(kind_key, receiver, origin,
                                "the webhook URL (Alertmanager read it from url_file)"
                                if cfg.get("url_file") else "the webhook URL")
        secret_fields = {"url": url}
        token, ignored = _bearer(cfg)
        if token:
            secret_fields["token"] = token
        if ignored:
            notes.append(f"Receiver {receiver}: {origin}'s http_config "
                         f"{', '.join(ignored)} is not imported.")
        return Planned(name="", kind="webhook", receiver=receiver, origin=origin,
                       secret_fields=secret_fields, target=_host(url),
                       description=f"Imported from alertmanager.yml ({receiver})")
    if kind_key == "slack_configs":
        url = _http_url(cfg.get("api_url") or global_cfg.get("slack_api_url"))
        if not url:
            return _placeholder(kind_key, receiver, origin, "the Slack incoming webhook URL")
        if cfg.get("channel"):
            notes.append(f"Receiver {receiver}: Slack incoming webhooks post to the "
                         f"channel they were made for; {origin}'s channel is not used.")
        return Planned(name="", kind="slack", receiver=receiver, origin=origin,
                       secret_fields={"url": url}, target=_host(url),
                       description=f"Imported from alertmanager.yml ({receiver})")
    if kind_key == "email_configs":
        to = cfg.get("to")
        recipients = [a.strip() for a in str(to or "").split(",") if a.strip()]
        if not recipients or not all(_email(a) for a in recipients):
            return _placeholder(kind_key, receiver, origin, "the recipients")
        config = {"recipients": recipients}
        sender = cfg.get("from") or global_cfg.get("smtp_from")
        if isinstance(sender, str) and _email(sender.strip()):
            config["from_email"] = sender.strip()
        return Planned(name="", kind="email", receiver=receiver, origin=origin,
                       config=config, target=", ".join(recipients)[:200],
                       description=f"Imported from alertmanager.yml ({receiver})")
    short = kind_key.removesuffix("_configs")
    what = ("the WeCom group robot URL (Alertmanager's wechat_configs use WeCom's app "
            "API; opsplane sends through a group robot)" if kind_key == "wechat_configs"
            else f"a webhook that reaches {short} (opsplane has no {short} integration), "
                 "or replace it with a channel of another kind under the same name")
    return _placeholder(kind_key, receiver, origin, what)


def convert(text):
    """An ``alertmanager.yml`` -> ``Imported``. Keeps ``route``, ``receivers``,
    ``inhibit_rules`` and ``time_intervals``; raises ``routing.ConfigError`` when the
    result does not validate."""
    try:
        config = routing.load_yaml(text)
    except yaml.YAMLError as exc:
        raise routing.ConfigError([("alertmanager.yml", f"not valid YAML: {exc}")]) from None
    if not isinstance(config, dict) or "route" not in config:
        raise routing.ConfigError([("alertmanager.yml",
                                    "expected a mapping with a route section")])
    global_cfg = config.get("global") if isinstance(config.get("global"), dict) else {}
    notes = []
    dropped = [str(k) for k in config if k not in IMPORTED]
    if dropped:
        notes.append("Not imported (not about routing): " + ", ".join(dropped) + ".")
    result = {"route": config["route"]}
    receivers, planned, taken = [], [], set()
    for item in config.get("receivers") or []:
        if not isinstance(item, dict):
            continue
        name = item.get("name")
        integrations = [(kind, i, cfg) for kind in sorted(k for k in item
                                                          if str(k).endswith("_configs"))
                        if isinstance(item[kind], list) for i, cfg in enumerate(item[kind])]
        send_resolved = True
        if integrations:
            send_resolved = any(
                (cfg.get("send_resolved", SEND_RESOLVED_DEFAULT.get(kind, True))
                 if isinstance(cfg, dict) else True) for kind, _i, cfg in integrations)
        else:
            notes.append(f"Receiver {name} has no integrations: it notifies nobody, as in "
                         "Alertmanager.")
        counts = {}
        for kind, _i, _cfg in integrations:
            counts[kind] = counts.get(kind, 0) + 1
        channels, seen = [], {}
        for kind, i, cfg in integrations:
            plan = _plan(kind, cfg, str(name), f"{kind}[{i}]", global_cfg, notes)
            base = channel_name(name)
            if len(integrations) > 1:
                seen[kind] = seen.get(kind, 0) + 1
                suffix = kind.removesuffix("_configs")
                if counts[kind] > 1:
                    suffix += f"-{seen[kind]}"
                base = channel_name(f"{base[:NAME_MAX - len(suffix) - 1]}-{suffix}")
            plan.name, number = base, 1
            while plan.name in taken:
                number += 1
                plan.name = f"{base[:NAME_MAX - 4]}-{number}"
            taken.add(plan.name)
            planned.append(plan)
            channels.append(plan.name)
        receivers.append({"name": name, "channels": channels, "send_resolved": send_resolved})
    if any(p.kind == "email" and p.enabled for p in planned):
        notes.append("E-mail goes through opsplane's SMTP settings (EMAIL_HOST); the "
                     "global smtp_* settings are not imported.")
    if receivers:
        result["receivers"] = receivers
    if config.get("inhibit_rules"):
        result["inhibit_rules"] = config["inhibit_rules"]
    intervals = list(config.get("time_intervals") or []) + list(
        config.get("mute_time_intervals") or [])
    if intervals:
        result["time_intervals"] = intervals
    out = yaml.safe_dump(result, sort_keys=False, allow_unicode=True, default_flow_style=False)
    routing.parse(out)
    return Imported(source=out, notes=notes, channels=planned)
