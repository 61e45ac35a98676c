"""Every write of the alerts app besides the intake (``intake.py``) and the flush
(``flush.py``): integrations, the routing tree, silences, incidents, and beat's
expiry and heartbeat checks. Views, the API, tasks and tests call these.
"""

import hashlib
import hmac
import secrets as pysecrets
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alerts import intake, live, routing, states
from alerts import matchers as m
from alerts.fingerprint import fingerprint
from alerts.models import (
    Alert,
    AlertEvent,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Integration,
    Receipt,
    RoutingConfig,
    Silence,
    narrow_by_labels,
    severity_of,
)
from alerts.routing_state import active_silences, current_tree, silence_for, snapshot
from opsplane import audit
from opsplane import secrets as opsecrets
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, require

TOKEN_PREFIX = "alt_"  # noqa: S105 - a public marker, not a secret
RECEIPT_DAYS = 7
SIGNATURE_SKEW = timedelta(minutes=5)
A = Alert.Status


class AlertsError(DomainError):
    pass


# --- who may do what ----------------------------------------------------------------------------


def can_view(user):
    """Alerts, incidents, silences, routes and integrations (without secrets)."""
    return has_role(user, Role.ONCALL, Role.OPERATOR)


def can_respond(user):
    """Edit the routing tree, create and expire silences, acknowledge incidents."""
    return has_role(user, Role.ONCALL)


def can_admin(user):
    """Create and change integrations (their tokens and secrets)."""
    return has_role(user, Role.ADMIN)


# --- integrations -----------------------------------------------------------------------------


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token():
    prefix = pysecrets.token_hex(4)
    return prefix, f"{TOKEN_PREFIX}{prefix}_{pysecrets.token_urlsafe(32)}"


def token_digest(token):
    """What ``token`` is stored as (``Integration.token_digest``), or None when it is no
    integration token at all."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return _digest(token)


def integration_for_token(token):
    """The integration a token belongs to, or None."""
    digest = token_digest(token)
    return None if digest is None else Integration.objects.filter(token_digest=digest).first()


INTEGRATION_FIELDS = ("name", "kind", "description", "enabled", "hmac_timestamp_header",
                      "heartbeat_minutes", "resolve_timeout_minutes", "escalation_policy")


def save_integration(integration, data, *, hmac_secret=None, clear_secret=False, by,
                     request=None):
    """Create (returns ``(integration, token)``, the token shown once) or edit (token
    None) an integration. ``hmac_secret``: a new signing secret; ``clear_secret``:
    none any more."""
    require(can_admin(by))
    created = integration.pk is None
    for name in INTEGRATION_FIELDS:
        if name in data:
            setattr(integration, name, data[name])
    integration.name = (integration.name or "").strip()
    token = None
    if created:
        integration.created_by = by
        integration.token_prefix, token = _new_token()
        integration.token_digest = _digest(token)
    if hmac_secret:
        integration.hmac_secret = opsecrets.encrypt({"secret": hmac_secret})
    elif clear_secret:
        integration.hmac_secret = ""
    integration.full_clean()
    with transaction.atomic():
        integration.save()
        audit.record("alert_integration.create" if created else "alert_integration.edit",
                     by=by, obj=integration, request=request,
                     detail={"kind": integration.kind, "signed": integration.has_secret})
    return integration, token


def rotate_token(integration, *, by, request=None):
    """A new token for ``integration`` (the old one stops working); returns it, once."""
    require(can_admin(by))
    prefix, token = _new_token()
    with transaction.atomic():
        Integration.objects.filter(pk=integration.pk).update(
            token_prefix=prefix, token_digest=_digest(token), updated_at=timezone.now())
        audit.record("alert_integration.rotate_token", by=by, obj=integration, request=request)
    integration.token_prefix, integration.token_digest = prefix, _digest(token)
    return token


def check_signature(integration, body, headers, now=None):
    """"" when the request is signed as ``integration`` wants (or it wants nothing),
    else what is wrong. Grafana: ``X-Grafana-Alerting-Signature``, hex HMAC-SHA256 of
    ``[timestamp ":"] body`` with the timestamp from the configured header; the others:
    the same recipe in ``X-Opsplane-Signature`` and ``X-Opsplane-Timestamp``."""
    if not integration.hmac_secret:
        return ""
    secret = opsecrets.decrypt(integration.hmac_secret)["secret"].encode()
    if integration.kind == Integration.Kind.GRAFANA:
        signature = headers.get("X-Grafana-Alerting-Signature", "")
        stamp_header = integration.hmac_timestamp_header
    else:
        signature = headers.get("X-Opsplane-Signature", "")
        stamp_header = integration.hmac_timestamp_header or "X-Opsplane-Timestamp"
    if not signature:
        return "missing signature"
    stamp = headers.get(stamp_header, "") if stamp_header else ""
    signed = f"{stamp}:".encode() + body if stamp else body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower().removeprefix("sha256=")):
        return "bad signature"
    if stamp and stamp.isdigit():
        seconds = int(stamp) / (1000 if len(stamp) > 11 else 1)
        now = now or timezone.now()
        if abs(now.timestamp() - seconds) > SIGNATURE_SKEW.total_seconds():
            return "signature timestamp too old or in the future"
    return ""


# --- the routing tree -------------------------------------------------------------------------


def validate_routing(source):
    """Parse ``source``; returns (tree, warnings). Raises ``ValidationError`` with one
    message per problem, each naming its path."""
    try:
        tree = routing.parse(source)
    except routing.ConfigError as exc:
        raise ValidationError({"source": [f"{path}: {msg}" for path, msg in exc.errors]}) from None
    from alerts.escalation import check_tree
    from alerts.notifications import known_channels

    check_tree(tree)  # every `escalation:` must name a policy
    names = tree.channel_names()
    missing = sorted(names - known_channels(names))
    warnings = [_("No notification channel is named “%(name)s” yet: notifications for it "
                  "are recorded but not sent.") % {"name": name} for name in missing]
    return tree, warnings


def save_routing(source, *, by, comment="", request=None, now=None):
    """Save a new version of the routing tree and re-route firing alerts under it.
    Routes keep their keys across edits, so incidents of unchanged routes keep their
    notification state: nothing is sent again. Returns (config, warnings)."""
    require(can_respond(by))
    tree, warnings = validate_routing(source)
    now = now or timezone.now()
    with transaction.atomic():
        latest = RoutingConfig.objects.select_for_update().order_by("-version").first()
        if latest is not None and latest.source == source:
            return latest, warnings
        config = RoutingConfig.objects.create(
            version=(latest.version + 1) if latest else 1, source=source,
            comment=comment[:200], created_by=by)
        tree.version = config.version
        moved = reroute(tree, now)
        audit.record("alert_routing.save", by=by, obj=config, request=request,
                     detail={"version": config.version, **moved})
    return config, warnings


def reroute(tree, now):
    """Make open incidents hold exactly the firing alerts ``tree`` routes to them: add
    missing memberships (opening incidents), drop ones the tree no longer gives, and
    resolve, without notifying, incidents left with no alert. Call inside atomic."""
    firing = list(Alert.objects.filter(status=A.FIRING))
    wanted = {}
    for alert in firing:
        wanted[alert.pk] = {intake.group_hash(r.group_key(alert.labels))
                            for r in tree.match(alert.labels)}
    current = {}
    stale = []
    for pk, alert_id, digest in IncidentAlert.objects.filter(
            incident__status__in=Incident.OPEN, active=True, alert__status=A.FIRING
    ).values_list("pk", "alert_id", "incident__group_hash"):
        current.setdefault(alert_id, set()).add(digest)
        if digest not in wanted.get(alert_id, ()):
            stale.append((pk, alert_id))
    missing = {pk: hashes - current.get(pk, set()) for pk, hashes in wanted.items()}
    missing = {pk: hashes for pk, hashes in missing.items() if hashes}
    routed, opened = intake.route_alerts([a for a in firing if a.pk in missing], tree, now,
                                         only=missing)
    if stale:
        IncidentAlert.objects.filter(pk__in=[pk for pk, _ in stale]).delete()
        AlertEvent.objects.bulk_create([
            AlertEvent(alert_id=alert_id, at=now, kind=AlertEvent.Kind.UNROUTED,
                       detail={"reason": "routing changed"}) for _, alert_id in stale])
    if routed:
        AlertEvent.objects.bulk_create([
            AlertEvent(alert_id=pk, at=now, kind=AlertEvent.Kind.ROUTED,
                       detail={"incidents": ids, "reason": "routing changed"})
            for pk, ids in routed.items()])
    emptied = Incident.objects.filter(status__in=Incident.OPEN).exclude(
        members__active=True)
    for incident in emptied.select_for_update():
        states.transition(incident, Incident.Status.RESOLVED, now=now,
                          detail={"reason": "routing changed: no alert routes here any more"})
    return {"added": sum(len(v) for v in routed.values()), "removed": len(stale),
            "opened": len(opened)}


def import_alertmanager(text):
    """An alertmanager.yml -> (``amimport.Imported``, the planned channels that do not
    exist yet, the names of those that do). Nothing is saved. Raises
    ``ValidationError`` naming each problem's path."""
    from alerts import amimport
    from alerts.notifications import known_channels

    try:
        imported = amimport.convert(text)
    except routing.ConfigError as exc:
        raise ValidationError({"source": [f"{path}: {msg}" for path, msg in exc.errors]}) from None
    validate_routing(imported.source)
    existing = known_channels(plan.name for plan in imported.channels)
    return (imported, [plan for plan in imported.channels if plan.name not in existing],
            sorted(existing))


def apply_import(text, *, by, comment="", request=None, now=None):
    """Import an alertmanager.yml in one transaction: create the channels its receivers
    need that do not exist yet (an existing channel is never touched; placeholders are
    made disabled), then save the tree as a new version. Creating channels is an
    admin's right, saving the tree on-call's. Returns (config, created channels,
    warnings)."""
    from opsplane.notify import services as notify
    from opsplane.notify.models import Channel

    require(can_respond(by))
    imported, create, _existing = import_alertmanager(text)
    if create and not notify.can_manage(by):
        raise PermissionDenied(_("Only admins may create notification channels: ask one to "
                                 "import this configuration."))
    with transaction.atomic():
        created = []
        for plan in create:
            data = {"name": plan.name, "kind": plan.kind, "enabled": plan.enabled,
                    "description": plan.description, "config": plan.config}
            try:
                created.append(notify.save_channel(Channel(), data, by=by, request=request,
                                                   secret_fields=plan.secret_fields))
            except ValidationError as exc:  # its messages never quote a secret
                raise ValidationError({"source": [f"{plan.receiver} ({plan.origin}): {msg}"
                                                  for msg in exc.messages]}) from None
        config, warnings = save_routing(
            imported.source, by=by, request=request, now=now,
            comment=comment or _("Imported from alertmanager.yml"))
        audit.record("alert_routing.import", by=by, obj=config, request=request, detail={
            "version": config.version,
            "channels_created": [c.name for c in created if c.enabled],
            "placeholders_created": [c.name for c in created if not c.enabled]})
    return config, created, warnings


def explain(labels, *, now=None, tree=None):
    """The test console: which routes ``labels`` match, how they group, who would be
    notified, and whether a silence, an inhibition or a time interval holds it back."""
    from alerts.flush import FlushContext

    now = now or timezone.now()
    tree = tree or current_tree()
    ctx = FlushContext(tree, now)
    severity = severity_of(labels)
    matches = []
    for route in tree.match(labels):
        receiver, channels, send_resolved = tree.targets(route, severity)
        matches.append({
            "route": route.path, "key": route.key, "matchers": route.matchers_text,
            "receiver": receiver, "channels": list(channels), "send_resolved": send_resolved,
            "group_by": ["..."] if route.group_by_all else list(route.group_by),
            "group_labels": route.group_labels(labels), "group_key": route.group_key(labels),
            "group_wait": routing.format_duration(route.group_wait),
            "group_interval": routing.format_duration(route.group_interval),
            "repeat_interval": routing.format_duration(route.repeat_interval),
            "muted_by_time": tree.muted_by_time(route, now),
        })
    return {"fingerprint": fingerprint(labels), "severity": severity, "routes": matches,
            "silenced_by": ctx.silenced_by(labels), "inhibited": ctx.inhibited(labels),
            "version": tree.version}


# --- silences ----------------------------------------------------------------------------------


def parse_silence_matchers(text):
    """``alertname="X", instance=~"web-.*"`` (one per line or comma-separated) ->
    matchers. Raises ``ValidationError``."""
    lines = [line for line in (text or "").replace("\r", "").split("\n") if line.strip()]
    try:
        found = m.parse_list(lines)
    except m.MatcherError as exc:
        raise ValidationError({"matchers": [str(exc)]}) from None
    if not found:
        raise ValidationError({"matchers": [_("Give at least one matcher, e.g. "
                                              "alertname=\"HighCPU\".")]})
    if all(mt.matches({}) for mt in found):
        raise ValidationError({"matchers": [_("These matchers would silence every alert: "
                                              "at least one must not match an empty label.")]})
    return found


def create_silence(matchers, *, starts_at=None, ends_at, comment, by, request=None, now=None):
    """Silence alerts matching ``matchers`` (``Matcher`` list) from ``starts_at`` (now)
    to ``ends_at``. Alerts it covers are marked at once when it starts now."""
    require(can_respond(by))
    now = now or timezone.now()
    starts_at = starts_at or now
    errors = {}
    if ends_at <= starts_at:
        errors["ends_at"] = [_("The end must be after the start.")]
    elif ends_at <= now:
        errors["ends_at"] = [_("The end must be in the future.")]
    if not (comment or "").strip():
        errors["comment"] = [_("Say why, for whoever sees this silence later.")]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        silence = Silence.objects.create(
            matchers=[mt.as_list() for mt in matchers], starts_at=starts_at, ends_at=ends_at,
            created_by=by, author=by.get_username(), comment=comment.strip())
        audit.record("alert_silence.create", by=by, obj=silence, request=request,
                     detail={"matchers": silence.matchers_text,
                             "ends_at": ends_at.isoformat()})
        if starts_at <= now:
            apply_silence(silence, now)
    return silence


def silence_alert(alert, *, hours=2, comment="", by, request=None, now=None):
    """One click from an alert: silence exactly its labels for ``hours``."""
    now = now or timezone.now()
    matchers = [m.Matcher.make(name, "=", value) for name, value in sorted(alert.labels.items())]
    comment = comment.strip() or _("Silenced from alert %(alert)s") % {"alert": alert}
    return create_silence(matchers, ends_at=now + timedelta(hours=hours), comment=comment,
                          by=by, request=request, now=now)


def expire_silence(silence, *, by, request=None, now=None):
    """End a silence now; the alerts it held are notified again at their next flush."""
    require(can_respond(by))
    now = now or timezone.now()
    with transaction.atomic():
        updated = Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(
            ends_at=now, starts_at=min(silence.starts_at, now - timedelta(seconds=1)),
            updated_at=timezone.now())
        if not updated:
            raise AlertsError(_("This silence has already ended."))
        silence.refresh_from_db()
        audit.record("alert_silence.expire", by=by, obj=silence, request=request)
        release_silenced(now)
    return silence


def apply_silence(silence, now):
    """Mark the firing alerts ``silence`` covers (those not silenced already)."""
    matchers = m.from_lists(silence.matchers)
    hits = [pk for pk, labels in narrow_by_labels(
                Alert.objects.filter(status=A.FIRING, silenced_by__isnull=True), matchers)
            .values_list("pk", "labels") if m.matches_all(matchers, labels)]
    if hits:
        Alert.objects.filter(pk__in=hits).update(silenced_by=silence)
        AlertEvent.objects.bulk_create([
            AlertEvent(alert_id=pk, at=now, kind=AlertEvent.Kind.SILENCED,
                       detail={"silence": silence.pk}) for pk in hits])
    Silence.objects.filter(pk=silence.pk).update(applied_at=now)
    return len(hits)


def release_silenced(now):
    """Alerts whose silence has ended: another active silence, or none."""
    held = list(Alert.objects.filter(silenced_by__ends_at__lte=now).values_list("pk", "labels"))
    if not held:
        return 0
    active = active_silences(snapshot()[1], now)
    events, by_silence = [], {}
    for pk, labels in held:
        other = silence_for(labels, active)
        by_silence.setdefault(other, []).append(pk)
        events.append(AlertEvent(alert_id=pk, at=now, kind=AlertEvent.Kind.SILENCED
                                 if other else AlertEvent.Kind.UNSILENCED,
                                 detail={"silence": other} if other else {}))
    for other, pks in by_silence.items():
        Alert.objects.filter(pk__in=pks).update(silenced_by=other)
    AlertEvent.objects.bulk_create(events)
    return len(held)


# --- incidents ---------------------------------------------------------------------------------


# Acknowledge, unacknowledge, resolve and snooze: alerts/incidents.py.


# --- beat: expiry and heartbeats ------------------------------------------------------------------


def expire(now=None, *, batch=2000):
    """Resolve firing alerts whose ``endsAt`` has passed (no resolve came), start and end
    silences, and prune old receipts. Returns how many alerts were resolved."""
    now = now or timezone.now()
    with transaction.atomic():
        # Locked in fingerprint order, as the intake locks them: no deadlock between us.
        alerts = list(Alert.objects.select_for_update().filter(
            status=A.FIRING, ends_at__lte=now).order_by("fingerprint")[:batch])
        for alert in alerts:
            alert.status, alert.resolved_at = A.RESOLVED, now
            alert.resolution = Alert.Resolution.EXPIRED
        Alert.objects.bulk_update(alerts, ["status", "resolved_at", "resolution"])
        AlertEvent.objects.bulk_create([
            AlertEvent(alert=a, at=now, kind=AlertEvent.Kind.EXPIRED,
                       detail={"ends_at": a.ends_at.isoformat()}) for a in alerts])
        if alerts:
            live.board_changed(IncidentAlert.objects.filter(
                alert__in=alerts, active=True).values_list("incident_id", flat=True))
    for silence in Silence.objects.filter(applied_at__isnull=True, starts_at__lte=now,
                                          ends_at__gt=now):
        with transaction.atomic():
            apply_silence(silence, now)
    with transaction.atomic():
        release_silenced(now)
    old = Receipt.objects.filter(received_at__lt=now - timedelta(days=RECEIPT_DAYS))
    Receipt.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:batch])).delete()
    return len(alerts)


def check_heartbeats(now=None):
    """Open a "heartbeat missing" alert (routed like any other) for every heartbeat
    integration silent for longer than its interval; it resolves with the next request
    from that integration. Returns the names of the integrations found silent."""
    now = now or timezone.now()
    silent = []
    for integration in Integration.objects.filter(enabled=True, heartbeat_minutes__gt=0,
                                                  heartbeat_missing_since__isnull=True):
        limit = now - timedelta(minutes=integration.heartbeat_minutes)
        if (integration.last_seen_at or integration.created_at) > limit:
            continue
        with transaction.atomic():
            updated = Integration.objects.filter(
                pk=integration.pk, heartbeat_missing_since__isnull=True).update(
                heartbeat_missing_since=now)
            if not updated:
                continue
            intake.ingest(integration, [intake.heartbeat_alert(integration, now, firing=True)],
                          envelope={"heartbeat": integration.name}, now=now,
                          source="heartbeat", seen=False)
            silent.append(integration.name)
    return silent


def incident_alerts(incident):
    return (Alert.objects.filter(memberships__incident=incident)
            .select_related("host").order_by("status", "-starts_at"))


def recent_incident_events(incident):
    return IncidentEvent.objects.filter(incident=incident).select_related("actor")


def rotate_secrets():
    """Re-encrypt every integration's HMAC secret with the newest key (for
    ``manage.py rotate_credentials``); returns how many."""
    with transaction.atomic():
        integrations = list(Integration.objects.select_for_update().exclude(hmac_secret=""))
        for integration in integrations:
            integration.hmac_secret = opsecrets.rotate(integration.hmac_secret)
        Integration.objects.bulk_update(integrations, ["hmac_secret"], batch_size=200)
    return len(integrations)
