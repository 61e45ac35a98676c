"""Notification timing, as Alertmanager's aggregation groups and dedup stage do it.

Beat calls ``flush_due(now)`` every few seconds; it flushes each open incident whose
``next_flush_at`` has come, one transaction per incident with its row locked (a second
beat, a retried task or a concurrent intake waits or skips it). A flush:

1. stops if the route is muted now (mute/active time intervals);
2. leaves out silenced and inhibited alerts;
3. notifies each receiver (one per channel) when Alertmanager would (``needs_update``,
   against that receiver's ``NotificationLog``): first notification with firing alerts,
   new firing alerts, all alerts resolved, new resolved alerts when the receiver sends
   resolved ones, or ``repeat_interval`` passed since it was last notified. A receiver
   added later, or whose last message the outbox gave up on, gets the current state;
4. records per receiver what it was told (fingerprints) and numbers the round, which is
   part of every notification's idempotency key;
5. drops resolved alerts from the group and resolves the incident when none fires; else
   schedules the next flush ``group_interval`` later.

Everything lives in the database, so a restart loses nothing and a second run of the
same tick finds nothing due. Pass ``now`` to drive it with a controlled clock.
"""

import logging
from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from alerts import matchers as m
from alerts import metrics, notifications, states
from alerts.models import (
    Alert,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Notification,
    NotificationLog,
    narrow_by_labels,
)
from alerts.routing_state import active_silences, current_tree, silence_for, snapshot
from opsplane.notify.models import Notification as Outbox

logger = logging.getLogger(__name__)

A = Alert.Status
BATCH = 500


class FlushContext:
    """What one tick decides with: the routing tree, the clock, the active silences and
    (built on first use) the firing alerts that can inhibit others."""

    def __init__(self, tree, now, *, silences=None):
        self.tree, self.now = tree, now
        self._silences = silences
        self._sources = {}

    @property
    def silences(self):
        if self._silences is None:
            self._silences = active_silences(snapshot()[1], self.now)
        return self._silences

    def silenced_by(self, labels):
        return silence_for(labels, self.silences)

    def _index(self, number):
        """Firing alerts matching rule ``number``'s source matchers, by their values of
        its ``equal`` labels (a missing label counts as empty)."""
        if number not in self._sources:
            rule = self.tree.inhibit_rules[number]
            alerts = narrow_by_labels(Alert.objects.filter(status=A.FIRING), rule.source)
            index = defaultdict(list)
            for labels in alerts.values_list("labels", flat=True).iterator(chunk_size=2000):
                if m.matches_all(rule.source, labels):
                    index[tuple(labels.get(name, "") for name in rule.equal)].append(labels)
            self._sources[number] = index
        return self._sources[number]

    def inhibited(self, labels):
        """Alertmanager's Inhibitor.Mutes: a rule whose target matches ``labels`` and a
        firing source alert with the same ``equal`` values. When ``labels`` also match
        the rule's source, sources that match its target are not counted (an alert
        never inhibits itself or its like)."""
        for number, rule in enumerate(self.tree.inhibit_rules):
            if not m.matches_all(rule.target, labels):
                continue
            both = m.matches_all(rule.source, labels)
            key = tuple(labels.get(name, "") for name in rule.equal)
            for source in self._index(number).get(key, ()):
                if both and m.matches_all(rule.target, source):
                    continue
                return True
        return False


def needs_update(log, firing, resolved, *, send_resolved, repeat_interval, now):
    """Alertmanager's DedupStage.needsUpdate for one receiver, against its
    ``NotificationLog`` entry (None: told nothing yet)."""
    if log is None:
        return bool(firing)
    notified = set(log.firing)
    if not firing <= notified:
        return True
    if not firing:
        return bool(notified)
    if send_resolved and not resolved <= set(log.resolved):
        return True
    return log.notified_at <= now - repeat_interval


def _receiver_logs(incident, receivers):
    """{receiver: NotificationLog} of ``incident``, leaving out receivers whose last
    message the outbox gave up on (delivery attempted and failed to the end): as in
    Alertmanager, whose log only records what was delivered, they are told again."""
    logs = {log.receiver: log for log in NotificationLog.objects.filter(
        incident=incident, receiver__in=receivers)}
    outbox_ids = [log.outbox_id for log in logs.values() if log.outbox_id]
    if outbox_ids:
        failed = set(Outbox.objects.filter(pk__in=outbox_ids, state=Outbox.State.DEAD,
                                           attempts__gt=0).values_list("pk", flat=True))
        logs = {name: log for name, log in logs.items() if log.outbox_id not in failed}
    return logs


def flush_incident(incident, ctx):
    """Flush one incident; returns how many notifications were queued. Call inside
    atomic with the incident locked (or just created by this transaction)."""
    now, tree = ctx.now, ctx.tree
    route = tree.route(incident.route_key) or tree.root
    members = list(IncidentAlert.objects.filter(incident=incident, active=True)
                   .select_related("alert", "alert__host").order_by("alert__starts_at", "alert_id"))
    alerts = [member.alert for member in members]
    queued = 0
    muted = tree.muted_by_time(route, now)
    visible = [a for a in alerts if ctx.silenced_by(a.labels) is None
               and not ctx.inhibited(a.labels)] if not muted else []
    # Nothing left to say (muted, or every alert silenced or inhibited): the pipeline
    # stops there, as Alertmanager's does, and what was last notified stays as it was.
    if visible:
        firing = [a for a in visible if a.status == A.FIRING]
        resolved = [a for a in visible if a.status == A.RESOLVED]
        receiver, channels, send_resolved = tree.targets(route, incident.severity)
        firing_set = {a.fingerprint for a in firing}
        resolved_set = {a.fingerprint for a in resolved}
        # Each channel is a receiver of its own; "" records a route that sends nowhere.
        receivers = list(dict.fromkeys(channels)) or [""]
        logs = _receiver_logs(incident, receivers)
        due = [name for name in receivers if needs_update(
            logs.get(name), firing_set, resolved_set, send_resolved=send_resolved,
            repeat_interval=route.repeat_interval, now=now)]
        if due:
            incident.round += 1
            incident.last_notified_at = now
            told_resolved = resolved if send_resolved else []
            rows = {}
            if firing or told_resolved:
                rows = notifications.send(incident, receiver=receiver,
                                          channels=[name for name in due if name],
                                          firing=firing, resolved=told_resolved, now=now)
                queued = sum(1 for row in rows.values()
                             if row.status == Notification.Status.QUEUED)
                metrics.flushes.inc()
            _log(incident, due, rows, firing_set, resolved_set, now)
            IncidentEvent.objects.create(
                incident=incident, at=now, kind=IncidentEvent.Kind.NOTIFIED,
                detail={"round": incident.round, "receiver": receiver,
                        "channels": [name for name in due if name], "firing": len(firing),
                        "resolved": len(told_resolved),
                        "muted": len(alerts) - len(visible)})
    done = [member.pk for member in members if member.alert.status == A.RESOLVED]
    if done:
        IncidentAlert.objects.filter(pk__in=done).update(active=False)
    incident.last_flush_at = now
    fields = ["round", "last_notified_at", "last_flush_at"]
    if any(a.status == A.FIRING for a in alerts):
        incident.next_flush_at = now + route.group_interval
        incident.save(update_fields=[*fields, "next_flush_at"])
    else:
        incident.save(update_fields=fields)
        states.transition(incident, Incident.Status.RESOLVED, now=now,
                          detail={"reason": "all alerts resolved" if alerts else "no alerts"})
    return queued


def _log(incident, receivers, rows, firing, resolved, now):
    """Record what ``receivers`` were told this round (``rows``: their notifications)."""
    for name in receivers:
        row = rows.get(name)
        values = {"firing": sorted(firing), "resolved": sorted(resolved), "notified_at": now,
                  "round": incident.round, "outbox_id": row.outbox_id if row else None}
        NotificationLog.objects.update_or_create(incident=incident, receiver=name,
                                                 defaults=values)


def flush_due(now=None, *, limit=BATCH):
    """Flush every open incident that is due at ``now`` (beat's tick); returns how many
    were flushed. Each in its own transaction; a locked one is skipped (someone else is
    flushing it)."""
    now = now or timezone.now()
    ids = list(Incident.objects.filter(status__in=Incident.OPEN, next_flush_at__lte=now)
               .order_by("next_flush_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return 0
    ctx = FlushContext(current_tree(), now)
    done = 0
    for pk in ids:
        with transaction.atomic():
            incident = (Incident.objects.select_for_update(skip_locked=True)
                        .filter(pk=pk, status__in=Incident.OPEN, next_flush_at__lte=now).first())
            if incident is None:
                continue
            flush_incident(incident, ctx)
            done += 1
    return done
