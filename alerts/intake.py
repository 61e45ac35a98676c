"""The intake: alerts in, and everything they cause committed in one transaction.

``ingest()`` upserts alerts by fingerprint (one SELECT ... FOR UPDATE for the batch, one
bulk INSERT, one bulk UPDATE), writes each state change as an event, links new alerts to
CMDB hosts, routes alerts that (re)start firing into incidents, and flushes incidents
that are already due (which queues their notifications in the same transaction). A
request costs a handful of statements however many alerts it carries; on PostgreSQL a
new alert joining an open incident is five (``authenticate``, which also reads the
routing versions; the receipt with the lock; the insert, which finds the CMDB host
itself; the open incidents; links and events together) besides BEGIN and COMMIT. The
hot statements are written here rather than through the ORM: building querysets and
model instances was most of a small request's Python time.

Concurrent requests about the same alert or the same new incident collide on a unique
constraint or a row lock; the loser's transaction is rolled back and run again.
"""

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache

from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from alerts import bulk, flush, live, metrics
from alerts.fingerprint import fingerprint
from alerts.models import (
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Integration,
    Receipt,
    severity_of,
)
from alerts.payloads import Incoming
from alerts.routing_state import (
    active_silences,
    silence_for,
    snapshot,
    versions_from,
    versions_sql,
)
from cmdb.models import Host

logger = logging.getLogger(__name__)

ATTEMPTS = 4
# A re-sent alert that changed nothing gets its last_received_at moved at most this often.
TOUCH_EVERY = timedelta(seconds=60)
HOST_LABELS = ("instance", "host", "hostname")
_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\](?::\d+)?|(?P<name>[^:]+)(?::\d+)?)$")

A = Alert.Status


@dataclass
class Result:
    receipt_id: int = 0
    received: int = 0
    created: int = 0
    firing: int = 0
    resolved: int = 0
    refired: int = 0
    incidents_opened: int = 0
    notifications: int = 0
    counts: dict = field(default_factory=dict)  # status -> alerts received

    def as_dict(self):
        return {"receipt": self.receipt_id, "alerts": self.received, "new": self.created,
                "firing": self.firing, "resolved": self.resolved, "refired": self.refired,
                "incidents_opened": self.incidents_opened}


def host_hint(labels):
    """The host an alert is about: its instance/host/hostname label without a port."""
    for name in HOST_LABELS:
        value = labels.get(name, "").strip()
        if value:
            match = _PORT.match(value)
            if match:
                return (match.group("v6") or match.group("name"))[:255]
            return value[:255]  # e.g. a bare IPv6 address
    return ""


def group_hash(group_key):
    return hashlib.sha256(group_key.encode()).hexdigest()


def authenticate(token):
    """(the integration ``token`` belongs to or None, the routing versions for
    ``ingest``), in one query: a request's first round trip also tells whether the
    cached routing tree and silences are current."""
    from alerts.services import token_digest

    digest = token_digest(token)
    if digest is None:
        return None, None
    sql, load, count = _auth_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    versions = versions_from(row[count:])
    if row[0] is None:
        return None, versions
    return load(row[:count]), versions


@cache
def _auth_statement():
    fields = Integration._meta.concrete_fields
    qn = connection.ops.quote_name
    columns = ", ".join(f"i.{qn(field.column)}" for field in fields)
    return (f"SELECT {columns}, {versions_sql()} FROM (SELECT 1) AS one "  # noqa: S608
            f"LEFT JOIN {qn(Integration._meta.db_table)} i ON i.token_digest = %s",
            _loader(Integration), len(fields))


def _loader(model):
    """row (the values of ``model``'s concrete fields, in order, as the database sent
    them) -> a model instance, converted as the ORM converts them (JSON, SQLite's
    datetimes): for the few hot statements the intake writes itself."""
    fields = model._meta.concrete_fields
    names = [f.attname for f in fields]
    convert = []
    for i, model_field in enumerate(fields):
        col = model_field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            convert.append((i, col, found))

    def load(row):
        values = list(row)
        for i, col, converters in convert:
            for converter in converters:
                values[i] = converter(values[i], col, connection)
        return model.from_db(connection.alias, names, values)

    return load


def ingest(integration, alerts, *, envelope=None, now=None, source="", seen=True,
           versions=None):
    """Store ``alerts`` (``payloads.Incoming``) from ``integration``; returns ``Result``.
    ``seen``: the integration itself sent them (a heartbeat), as opposed to beat's
    heartbeat check speaking for it. ``versions``: from ``authenticate``.

    Opens its own transaction and retries it when a concurrent request won a race;
    called inside an outer transaction (heartbeats) it runs once, in that one."""
    now = now or timezone.now()
    unique = list({alert.fingerprint: alert for alert in alerts}.values())
    if connection.in_atomic_block:
        return _ingest(integration, unique, envelope or {}, now, source, seen, versions)
    for attempt in range(ATTEMPTS):
        try:
            with transaction.atomic():
                result = _ingest(integration, unique, envelope or {}, now, source, seen,
                                 versions)
        except (IntegrityError, OperationalError) as exc:
            retry = isinstance(exc, IntegrityError) or "deadlock" in str(exc).lower()
            if not retry or attempt == ATTEMPTS - 1:
                raise
            logger.info("intake: a concurrent request won a race (%s); retrying", exc)
            continue
        return result
    raise AssertionError("unreachable")


def _ingest(integration, incoming, envelope, now, source, seen, versions=None):
    result = Result(received=len(incoming))
    transaction.on_commit(lambda: metrics.count_received(integration, result))
    if seen and integration is not None:
        incoming = incoming + _heartbeat_back(integration, now)
    receipt_id, existing = _receive_and_lock(integration, incoming, envelope, now, source)
    result.receipt_id = receipt_id
    tree, all_silences = snapshot(versions)
    silences = active_silences(all_silences, now)
    created, changed, touched, to_route, events = [], [], [], [], []
    for item in incoming:
        result.counts[item.status] = result.counts.get(item.status, 0) + 1
        alert = existing.get(item.fingerprint)
        if alert is None:
            alert = _new_alert(item, integration, now, silences)
            created.append(alert)
            kind = AlertEvent.Kind.FIRED if item.status == A.FIRING else AlertEvent.Kind.RESOLVED
            events.append((alert, kind, {"receipt": receipt_id, "first_seen": True}))
            if alert.silenced_by_id:
                events.append((alert, AlertEvent.Kind.SILENCED, {"silence": alert.silenced_by_id}))
            if item.status == A.FIRING:
                to_route.append(alert)
            continue
        state = _apply(alert, item, integration, now, silences)
        if state == "refired":
            result.refired += 1
            events.append((alert, AlertEvent.Kind.REFIRED, {"receipt": receipt_id}))
            if alert.silenced_by_id:
                events.append((alert, AlertEvent.Kind.SILENCED,
                               {"silence": alert.silenced_by_id}))
            to_route.append(alert)
            changed.append(alert)
        elif state == "resolved":
            events.append((alert, AlertEvent.Kind.RESOLVED, {"receipt": receipt_id}))
            changed.append(alert)
        elif state == "changed":
            changed.append(alert)
        elif state == "touch":
            touched.append(alert.pk)
    result.firing = result.counts.get(A.FIRING, 0)
    result.resolved = result.counts.get(A.RESOLVED, 0)
    result.created = len(created)
    _insert_alerts(created)
    if changed:
        Alert.objects.bulk_update(changed, [
            "status", "labels", "annotations", "starts_at", "ends_at", "generator_url",
            "integration", "last_received_at", "resolved_at", "resolution", "fire_count",
            "silenced_by", "raw", "alertname", "severity"])
    if touched:
        Alert.objects.filter(pk__in=touched).update(last_received_at=now)
    links = []
    routed, opened = route_alerts(to_route, tree, now, links=links)
    result.incidents_opened = len(opened)
    fired = (AlertEvent.Kind.FIRED, AlertEvent.Kind.REFIRED)
    bulk.insert_all(  # alerts joining incidents, and the timeline events: one statement
        (IncidentAlert, LINK_COLUMNS, links, {"conflict": LINK_CONFLICT}),
        (AlertEvent, ("alert", "at", "kind", "detail"), [
            (alert.pk, now, kind, {**detail, **({"incidents": routed[alert.pk]}
                                                if alert.pk in routed and kind in fired
                                                else {})})
            for alert, kind, detail in events], {"json_columns": ("detail",)}))
    # A group whose alerts are older than its group_wait flushes at once, as in
    # Alertmanager; its notifications are then in this very transaction.
    due = [i for i in opened if i.next_flush_at <= now]
    if due:
        ctx = flush.FlushContext(tree, now, silences=silences)
        for incident in due:
            result.notifications += flush.flush_incident(incident, ctx)
    if created or changed:
        # One board message per committed request, however many alerts it carried.
        live.board_changed({pk for pks in routed.values() for pk in pks})
    return result


def _receive_and_lock(integration, incoming, envelope, now, source):
    """Record the request (a ``Receipt``) and lock the stored alerts it is about, in
    fingerprint order; returns (receipt id, {fingerprint: Alert}). Statements of our own
    rather than the ORM's: this is most of a small request's Python time otherwise."""
    fingerprints = sorted(item.fingerprint for item in incoming)
    # One row: its received_at names it in what bulk.insert returns.
    receipt = bulk.statement(Receipt, RECEIPT_COLUMNS, [
        (integration.pk if integration is not None else None, now, len(incoming), envelope,
         source[:100])], json_columns=("envelope",), returning="received_at")
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(*receipt)
            receipt_id = cursor.fetchone()[1]
        return receipt_id, {a.fingerprint: a for a in Alert.objects.select_for_update()
                            .filter(fingerprint__in=fingerprints).order_by("fingerprint")}
    sql, load = _lock_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql.format(receipt=receipt[0]), [*receipt[1], fingerprints])
        rows = cursor.fetchall()
    # One row per locked alert, each with the receipt's id; one row of NULLs besides the
    # receipt's id when there is none.
    return rows[0][0], {alert.fingerprint: alert for alert in
                        (load(row[1:]) for row in rows if row[1] is not None)}


RECEIPT_COLUMNS = ("integration", "received_at", "alert_count", "envelope", "source")


@cache
def _lock_statement():
    """PostgreSQL: the receipt's INSERT (``{receipt}``) and the lock of the stored alerts
    in one statement."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(field.column) for field in Alert._meta.concrete_fields)
    return (
        "WITH receipt AS ({receipt}) SELECT receipt.id, alert.* FROM receipt "  # noqa: S608
        f"LEFT JOIN LATERAL (SELECT {columns} FROM {qn(Alert._meta.db_table)} "
        "WHERE fingerprint = ANY(%s) ORDER BY fingerprint FOR UPDATE) alert ON true "
        "ORDER BY alert.fingerprint", _loader(Alert))


def _heartbeat_back(integration, now):
    """Any request from an integration is a heartbeat: keep ``last_seen_at`` fresh (at
    most one write a minute, as many requests share the row) and resolve the "heartbeat
    missing" alert when the integration was silent."""
    # The integration object is left as it is: a retried transaction does this again.
    last = integration.last_seen_at
    if last is None or now - last >= TOUCH_EVERY or integration.heartbeat_missing_since:
        type(integration).objects.filter(pk=integration.pk).update(
            last_seen_at=now, heartbeat_missing_since=None)
    if integration.heartbeat_missing_since:
        return [heartbeat_alert(integration, now, firing=False)]
    return []


def heartbeat_alert(integration, now, *, firing):
    labels = {"alertname": "HeartbeatMissing", "integration": integration.name,
              "severity": "critical"}
    return Incoming(
        fingerprint=fingerprint(labels), labels=labels,
        annotations={"summary": f"No request from integration {integration.name} for "
                                f"{integration.heartbeat_minutes} minutes"},
        status=A.FIRING if firing else A.RESOLVED, starts_at=now,
        ends_at=None if firing else now, generator_url="", raw={"heartbeat": True})


class NewAlert:
    """An alert about to be inserted: the attributes of ``Alert`` the intake uses, without
    a model instance's cost (a 100-alert request makes a hundred of these)."""

    __slots__ = ("pk", "id", *("fingerprint", "alertname", "severity", "status", "labels",
                               "annotations", "starts_at", "ends_at", "generator_url",
                               "integration_id", "host_id", "host_hint", "first_received_at",
                               "last_received_at", "resolved_at", "resolution", "fire_count",
                               "silenced_by_id", "raw"))

    def __init__(self, **fields):
        self.pk = self.id = None
        for name, value in fields.items():
            setattr(self, name, value)


def _new_alert(item, integration, now, silences):
    resolved = item.status == A.RESOLVED
    return NewAlert(
        fingerprint=item.fingerprint, alertname=item.labels.get("alertname", "")[:200],
        severity=severity_of(item.labels), status=item.status, labels=item.labels,
        annotations=item.annotations, starts_at=item.starts_at, ends_at=item.ends_at,
        generator_url=item.generator_url,
        integration_id=integration.pk if integration is not None else None, host_id=None,
        host_hint=host_hint(item.labels), first_received_at=now, last_received_at=now,
        resolved_at=now if resolved else None,
        resolution=Alert.Resolution.SENDER if resolved else Alert.Resolution.NONE,
        fire_count=1, silenced_by_id=None if resolved else silence_for(item.labels, silences),
        raw=item.raw,
    )


def _apply(alert, item, integration, now, silences):
    """Apply a received ``item`` to a stored ``alert``; returns what happened:
    "refired", "resolved", "changed", "touch" or "" (nothing to write)."""
    content = (item.labels, item.annotations, item.ends_at, item.generator_url)
    same = content == (alert.labels, alert.annotations, alert.ends_at, alert.generator_url)

    def take():
        alert.labels, alert.annotations = item.labels, item.annotations
        alert.ends_at, alert.generator_url, alert.raw = item.ends_at, item.generator_url, item.raw
        alert.alertname = item.labels.get("alertname", "")[:200]
        alert.severity = severity_of(item.labels)
        alert.integration = integration
        alert.last_received_at = now

    if item.status == A.FIRING:
        if alert.status == A.RESOLVED:
            # A late retry of the notification that preceded a sender's resolve carries
            # the old start: ignore it. A real re-fire starts later.
            if alert.resolution == Alert.Resolution.SENDER and item.starts_at <= alert.starts_at:
                return ""
            take()
            alert.status, alert.starts_at = A.FIRING, item.starts_at
            alert.resolved_at, alert.resolution = None, Alert.Resolution.NONE
            alert.fire_count += 1
            alert.silenced_by_id = silence_for(item.labels, silences)
            return "refired"
        if not same:
            take()
            return "changed"
    else:
        if alert.status == A.FIRING:
            take()
            alert.status, alert.resolved_at = A.RESOLVED, now
            alert.resolution = Alert.Resolution.SENDER
            alert.ends_at = item.ends_at or now
            return "resolved"
        if not same:
            take()
            return "changed"
    if now - alert.last_received_at >= TOUCH_EVERY:
        alert.last_received_at = now
        return "touch"
    return ""


ALERT_COLUMNS = ("fingerprint", "alertname", "severity", "status", "labels", "annotations",
                 "starts_at", "ends_at", "generator_url", "integration", "host_hint",
                 "first_received_at", "last_received_at", "resolved_at", "resolution",
                 "fire_count", "silenced_by", "raw")


@cache
def _host_sql():
    """The CMDB host a new alert is about, found by the database as the alert is
    inserted (no round trip of its own): the host named like its hint, else the first
    host with that address."""
    qn = connection.ops.quote_name
    table, hint = qn(Host._meta.db_table), 'x."host_hint"'
    return (f"CASE WHEN {hint} <> '' THEN COALESCE("  # noqa: S608
            f"(SELECT h.{qn('id')} FROM {table} h WHERE h.{qn('name')} = {hint}), "
            f"(SELECT MIN(h.{qn('id')}) FROM {table} h WHERE h.{qn('address')} = {hint})) END")


def _insert_alerts(alerts):
    """Insert new alerts (``NewAlert``); their ``host_id`` is left unknown (None)."""
    keys = bulk.insert(Alert, ALERT_COLUMNS, [
        (a.fingerprint, a.alertname, a.severity, a.status, a.labels, a.annotations,
         a.starts_at, a.ends_at, a.generator_url, a.integration_id, a.host_hint,
         a.first_received_at, a.last_received_at, a.resolved_at, a.resolution, a.fire_count,
         a.silenced_by_id, a.raw) for a in alerts],
        json_columns=("labels", "annotations", "raw"), returning="fingerprint",
        computed={"host": _host_sql()})
    for alert in alerts:
        alert.pk = alert.id = keys[alert.fingerprint]


# --- routing into incidents -------------------------------------------------------------------


def route_alerts(alerts, tree, now, *, only=None, links=None):
    """Put firing ``alerts`` (saved) into the open incident of every route they match,
    opening incidents as needed. ``only`` limits it to those group hashes. ``links``: a
    list that gets the incident-alert rows for the caller to insert (with
    ``LINK_COLUMNS`` and ``LINK_CONFLICT``); without it they are inserted here.

    Returns ({alert pk: [incident pk, ...]}, [incidents opened]). Call inside atomic."""
    if not alerts:
        return {}, []
    groups = {}
    for alert in alerts:
        for route in tree.match(alert.labels):
            key = route.group_key(alert.labels)
            digest = group_hash(key)
            if only is not None and digest not in only.get(alert.pk, ()):
                continue
            group = groups.setdefault(digest, {"route": route, "key": key, "alerts": [],
                                               "labels": route.group_labels(alert.labels)})
            group["alerts"].append(alert)
    found = {i.group_hash: i for i in _open_incidents_locked(list(groups))}
    opened = []
    for digest, group in groups.items():
        if digest in found:
            continue
        route, members = group["route"], group["alerts"]
        oldest = min(a.starts_at for a in members)
        first = members[0]
        title = first.alertname or first.fingerprint
        extra = ", ".join(f"{k}={v}" for k, v in sorted(group["labels"].items())
                          if k != "alertname")
        opened.append(Incident(
            route_key=route.key, route_path=route.path[:500], group_key=group["key"],
            group_hash=digest, group_labels=group["labels"],
            title=(f"{title} ({extra})" if extra else title)[:300],
            severity=max((a.severity for a in members), key=SEVERITY_RANK.get),
            opened_at=now,
            next_flush_at=now if oldest + route.group_wait <= now else now + route.group_wait,
        ))
    if opened:
        Incident.objects.bulk_create(opened)
        IncidentEvent.objects.bulk_create([
            IncidentEvent(incident=i, at=now, kind=IncidentEvent.Kind.OPENED,
                          detail={"route": i.route_path, "group": i.group_labels})
            for i in opened])
        for incident in opened:
            found[incident.group_hash] = incident
    members, routed = [], {}
    for digest, group in groups.items():
        incident = found[digest]
        for alert in group["alerts"]:
            members.append((incident.pk, alert.pk, now, True))
            routed.setdefault(alert.pk, []).append(incident.pk)
        _raise_existing(incident, group, opened, now)
    if links is None:
        bulk.insert(IncidentAlert, LINK_COLUMNS, members, conflict=LINK_CONFLICT)
    else:
        links.extend(members)
    return routed, opened


LINK_COLUMNS = ("incident", "alert", "added_at", "active")
LINK_CONFLICT = "ON CONFLICT (incident_id, alert_id) DO UPDATE SET active = EXCLUDED.active"


def _raise_existing(incident, group, opened, now):
    """An alert joining an open incident may raise its severity, and an alert older than
    group_wait makes a group that has not notified yet flush now (Alertmanager)."""
    if incident in opened:
        return
    fields = {}
    top = max((a.severity for a in group["alerts"]), key=SEVERITY_RANK.get)
    if SEVERITY_RANK[top] > SEVERITY_RANK[incident.severity]:
        fields["severity"] = top
    wait = group["route"].group_wait
    if (incident.last_flush_at is None and incident.next_flush_at
            and incident.next_flush_at > now
            and any(a.starts_at + wait <= now for a in group["alerts"])):
        fields["next_flush_at"] = now
    if fields:
        Incident.objects.filter(pk=incident.pk).update(**fields)


def _open_incidents_locked(hashes):
    """The open incidents of these groups, share-locked until commit: a flush (which locks
    for update) cannot resolve them while this transaction adds alerts to them, and
    concurrent intakes share the lock. SQLite serialises writers anyway."""
    if connection.vendor != "postgresql":
        return list(Incident.objects.filter(group_hash__in=hashes, status__in=Incident.OPEN))
    sql, load = _incidents_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [hashes])
        return list(map(load, cursor.fetchall()))


@cache
def _incidents_statement():
    qn = connection.ops.quote_name
    columns = ", ".join(qn(field.column) for field in Incident._meta.concrete_fields)
    return (f"SELECT {columns} FROM {qn(Incident._meta.db_table)} "  # noqa: S608
            "WHERE group_hash = ANY(%s) AND status <> 'resolved' ORDER BY id FOR SHARE",
            _loader(Incident))
