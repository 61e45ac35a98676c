"""Alert intake, routing and incidents.

- ``Integration``: a source that posts alerts (Alertmanager, Grafana, our generic JSON,
  or a heartbeat that only has to keep posting), with its own token and optional HMAC.
- ``Alert``: one alert identity (its fingerprint) and its lifecycle; ``AlertEvent`` is
  its timeline. ``Receipt`` keeps what each accepted request carried besides the alerts.
- ``RoutingConfig``: the routing tree as YAML, versioned; the newest one is in force.
- ``Incident``: an Alertmanager aggregation group (route + group labels) while it has
  alerts, with the notification state that makes a restart or a second tick harmless.
- ``Notification``: what a flush decided to send to which channel, once per key.
- ``Silence``: matchers and a time window; silenced alerts are kept but not notified.

Every write is in ``alerts/services.py`` (and the intake in ``alerts/intake.py``).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cmdb.models import Host


class Severity(models.TextChoices):
    CRITICAL = "critical", _("critical")
    WARNING = "warning", _("warning")
    INFO = "info", _("info")


SEVERITY_RANK = {Severity.CRITICAL: 3, Severity.WARNING: 2, Severity.INFO: 1}
# What senders write in a `severity` label, folded onto our three levels.
SEVERITY_ALIASES = {
    "critical": Severity.CRITICAL, "crit": Severity.CRITICAL, "page": Severity.CRITICAL,
    "fatal": Severity.CRITICAL, "emergency": Severity.CRITICAL, "disaster": Severity.CRITICAL,
    "p1": Severity.CRITICAL, "high": Severity.WARNING, "error": Severity.WARNING,
    "major": Severity.WARNING, "warning": Severity.WARNING, "warn": Severity.WARNING,
    "average": Severity.WARNING, "p2": Severity.WARNING, "p3": Severity.WARNING,
    "info": Severity.INFO, "informational": Severity.INFO, "notice": Severity.INFO,
    "low": Severity.INFO, "minor": Severity.INFO, "none": Severity.INFO, "ok": Severity.INFO,
    "p4": Severity.INFO, "p5": Severity.INFO,
}


def label_value(name):
    """An expression for the text value of label ``name`` (any name, no ``__`` parsing),
    for narrowing alerts in SQL by an equality matcher."""
    return Cast(KeyTextTransform(name, "labels"), output_field=models.TextField())


def narrow_by_labels(alerts, matchers):
    """``alerts`` (a queryset) narrowed in SQL by the equality matchers among
    ``matchers``: what is left may match, the caller checks every matcher itself."""
    for i, matcher in enumerate(matchers):
        if matcher.op == "=" and matcher.value:
            alias = f"_l{i}"
            alerts = alerts.alias(**{alias: label_value(matcher.name)}).filter(
                **{alias: matcher.value})
    return alerts


def severity_of(labels):
    """Our severity for an alert's labels (``severity``, else ``priority``); warning when
    neither says anything we know."""
    value = (labels.get("severity") or labels.get("priority") or "").strip().lower()
    return SEVERITY_ALIASES.get(value, Severity.WARNING)


class Integration(models.Model):
    class Kind(models.TextChoices):
        ALERTMANAGER = "alertmanager", _("Prometheus Alertmanager")
        GRAFANA = "grafana", _("Grafana alerting")
        GENERIC = "generic", _("Generic JSON")
        HEARTBEAT = "heartbeat", _("Heartbeat only")

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    description = models.CharField(_("description"), max_length=200, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    token_prefix = models.CharField(max_length=16, editable=False)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    # Fernet token of {"secret": ...} (opsplane.secrets); empty: no signature required.
    hmac_secret = models.TextField(blank=True, editable=False)
    hmac_timestamp_header = models.CharField(
        _("signature timestamp header"), max_length=100, blank=True,
        help_text=_("Grafana: the timestamp header configured in the contact point's HMAC "
                    "settings, if any."))
    heartbeat_minutes = models.PositiveIntegerField(
        _("heartbeat (minutes)"), default=0,
        help_text=_("Open an incident when nothing arrives from this integration for this "
                    "many minutes. 0: no heartbeat."))
    resolve_timeout_minutes = models.PositiveIntegerField(
        _("resolve timeout (minutes)"), default=0,
        help_text=_("An alert posted without an end is resolved after this many minutes "
                    "unless it is posted again (Alertmanager's resolve_timeout). 0: never."))
    last_seen_at = models.DateTimeField(null=True, blank=True)
    heartbeat_missing_since = models.DateTimeField(null=True, blank=True)
    escalation_policy = models.ForeignKey(
        "alerts.EscalationPolicy", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="integrations", verbose_name=_("escalation policy"),
        help_text=_("Walked by this integration's incidents when their route names none."))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("integration")
        verbose_name_plural = _("integrations")

    def __str__(self):
        return self.name

    def __repr__(self):  # never the token or the secret
        return f"<Integration {self.pk} {self.name!r} {self.kind}>"

    @property
    def has_secret(self):
        return bool(self.hmac_secret)


class Receipt(models.Model):
    """One accepted intake request: the body's envelope (everything except the alert
    list, unknown fields included) for the record. Old receipts are pruned."""

    integration = models.ForeignKey(Integration, null=True, on_delete=models.SET_NULL,
                                    related_name="receipts")
    received_at = models.DateTimeField(db_index=True)
    alert_count = models.PositiveIntegerField(default=0)
    envelope = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self):
        return f"receipt #{self.pk} ({self.alert_count} alerts)"


class Silence(models.Model):
    matchers = models.JSONField(help_text="[[name, op, value], ...]")
    starts_at = models.DateTimeField(_("starts"))
    ends_at = models.DateTimeField(_("ends"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    author = models.CharField(_("author"), max_length=150)
    comment = models.TextField(_("comment"))
    created_at = models.DateTimeField(auto_now_add=True)
    # Moves with every change: processes cache the silences until it does.
    updated_at = models.DateTimeField(auto_now=True)
    # When the silence was last applied to stored alerts (services.apply_silences).
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-ends_at"]
        verbose_name = _("silence")
        verbose_name_plural = _("silences")
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")),
                                   name="alerts_silence_ends_after_start"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.matchers_text}"

    @property
    def matchers_text(self):
        from alerts.matchers import format_matchers, from_lists

        return format_matchers(from_lists(self.matchers))

    def state(self, now=None):
        now = now or timezone.now()
        if self.ends_at <= now:
            return "expired"
        return "pending" if self.starts_at > now else "active"


class Alert(models.Model):
    class Status(models.TextChoices):
        FIRING = "firing", _("firing")
        RESOLVED = "resolved", _("resolved")

    class Resolution(models.TextChoices):
        NONE = "", _("not resolved")
        SENDER = "sender", _("resolved by the sender")
        EXPIRED = "expired", _("its end time passed")

    TRANSITIONS = {Status.FIRING: {Status.RESOLVED}, Status.RESOLVED: {Status.FIRING}}

    fingerprint = models.CharField(max_length=64, unique=True)
    alertname = models.CharField(max_length=200, blank=True, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices,
                                default=Severity.WARNING, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict, blank=True)
    starts_at = models.DateTimeField()
    # None: no end announced (Go's zero time); a past value resolves the alert.
    ends_at = models.DateTimeField(null=True, blank=True, db_index=True)
    generator_url = models.TextField(blank=True)
    integration = models.ForeignKey(Integration, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="alerts")
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="alerts")
    # The instance/host/hostname label without its port: what `host` was looked up by.
    host_hint = models.CharField(max_length=255, blank=True)
    first_received_at = models.DateTimeField()
    last_received_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=10, choices=Resolution.choices, blank=True,
                                  default=Resolution.NONE)
    fire_count = models.PositiveIntegerField(default=1)
    silenced_by = models.ForeignKey(Silence, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="alerts")
    # The alert object exactly as last received, unknown fields included.
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-last_received_at", "-id"]
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        indexes = [models.Index(fields=["status", "-starts_at"], name="alerts_alert_status_start"),
                   models.Index(fields=["-last_received_at", "-id"], name="alerts_alert_recent")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="resolved", resolved_at__isnull=False)
                | Q(status="firing", resolved_at__isnull=True, resolution=""),
                name="alerts_alert_resolved_at_when_resolved",
            ),
        ]

    def __str__(self):
        return f"{self.alertname or self.fingerprint}"

    @property
    def summary(self):
        return (self.annotations.get("summary") or self.annotations.get("message")
                or self.annotations.get("description") or "")


class AlertEvent(models.Model):
    class Kind(models.TextChoices):
        FIRED = "fired", _("fired")
        REFIRED = "refired", _("fired again")
        RESOLVED = "resolved", _("resolved")
        EXPIRED = "expired", _("resolved: end time passed")
        SILENCED = "silenced", _("silenced")
        UNSILENCED = "unsilenced", _("no longer silenced")
        ROUTED = "routed", _("routed")
        UNROUTED = "unrouted", _("left an incident")

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["alert", "at", "id"]
        indexes = [models.Index(fields=["alert", "at"], name="alerts_event_alert_at")]

    def __str__(self):
        return f"{self.alert_id} {self.kind} at {self.at}"


class RoutingConfig(models.Model):
    """One saved version of the routing tree (YAML, validated by ``alerts.routing``)."""

    version = models.PositiveIntegerField(unique=True)
    source = models.TextField()
    comment = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self):
        return f"routing v{self.version}"


class Incident(models.Model):
    """An aggregation group: the alerts one route groups together by its group labels.

    Timers as in Alertmanager: the first flush ``group_wait`` after opening, then one
    every ``group_interval`` while the incident is open (``next_flush_at``). What each
    receiver was last told (``NotificationLog``) decides whether a flush sends it
    anything; ``round`` numbers the flushes that notified someone and is part of each
    message's idempotency key.
    """

    class Status(models.TextChoices):
        TRIGGERED = "triggered", _("triggered")
        ACKNOWLEDGED = "acknowledged", _("acknowledged")
        RESOLVED = "resolved", _("resolved")

    TRANSITIONS = {
        Status.TRIGGERED: {Status.ACKNOWLEDGED, Status.RESOLVED},
        Status.ACKNOWLEDGED: {Status.TRIGGERED, Status.RESOLVED},
        Status.RESOLVED: set(),
    }
    OPEN = (Status.TRIGGERED, Status.ACKNOWLEDGED)

    route_key = models.TextField()
    route_path = models.CharField(max_length=500, blank=True)
    group_key = models.TextField()
    group_hash = models.CharField(max_length=64, db_index=True)
    group_labels = models.JSONField(default=dict, blank=True)
    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=10, choices=Severity.choices,
                                default=Severity.WARNING)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.TRIGGERED,
                              db_index=True)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="+")
    next_flush_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_flush_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    round = models.PositiveIntegerField(default=0)
    alerts = models.ManyToManyField(Alert, through="IncidentAlert", related_name="incidents")
    # Escalation (alerts/escalation.py). A new incident is due at once: the first tick
    # picks its policy (cycle 0 -> 1). An ack, a snooze or the resolution stops it; the
    # end of an ack timeout or a snooze, and an unack, start a new cycle.
    escalation_policy = models.ForeignKey("alerts.EscalationPolicy", null=True, blank=True,
                                          on_delete=models.SET_NULL, related_name="+")
    escalation_cycle = models.PositiveIntegerField(default=0)
    escalation_repeat = models.PositiveIntegerField(default=0)
    escalation_step = models.PositiveIntegerField(default=0)
    next_escalation_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    ack_until = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    exhausted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        verbose_name = _("incident")
        verbose_name_plural = _("incidents")
        constraints = [
            # One open incident per aggregation group; concurrent intakes racing to open
            # it collide here and the loser retries.
            models.UniqueConstraint(fields=["group_hash"], condition=~Q(status="resolved"),
                                    name="alerts_incident_one_open_per_group"),
            models.CheckConstraint(
                condition=Q(status="resolved", resolved_at__isnull=False,
                            next_flush_at__isnull=True)
                | (~Q(status="resolved") & Q(resolved_at__isnull=True)),
                name="alerts_incident_resolved_at_when_resolved",
            ),
            # Only a triggered incident escalates; only an acknowledged one waits for
            # its ack timeout or snooze to end.
            models.CheckConstraint(
                condition=Q(status="triggered") | Q(next_escalation_at__isnull=True),
                name="alerts_incident_escalates_when_triggered",
            ),
            models.CheckConstraint(
                condition=Q(status="acknowledged")
                | Q(ack_until__isnull=True, snoozed_until__isnull=True),
                name="alerts_incident_ack_timers_when_acknowledged",
            ),
        ]
        indexes = [
            models.Index(fields=["next_escalation_at"], name="alerts_incident_escalation_due",
                         condition=Q(next_escalation_at__isnull=False)),
        ]

    def __str__(self):
        return f"#{self.pk} {self.title}"

    @property
    def is_open(self):
        return self.status in self.OPEN


class IncidentAlert(models.Model):
    """An alert routed into an incident. ``active`` goes false once a flush has dealt
    with the alert's resolution (Alertmanager removes it from the group then)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="members")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="memberships")
    added_at = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["incident", "alert"],
                                    name="alerts_incidentalert_unique"),
        ]

    def __str__(self):
        return f"alert {self.alert_id} in incident {self.incident_id}"


class NotificationLog(models.Model):
    """Alertmanager's notification log: what one receiver of an incident was last told
    (fingerprints of the firing and resolved alerts, when, in which round). Alertmanager
    keys it by receiver, integration and group; here a receiver is one notification
    channel (our integrations), and "" the record-only receiver of a route without a
    channel for the incident's severity. So a channel added to a receiver later hears the
    current firing set, one whose message was given up on hears it again, the others
    nothing new; repeat_interval runs on each receiver's own clock."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE,
                                 related_name="receiver_logs")
    receiver = models.CharField(max_length=100, blank=True)
    firing = models.JSONField(default=list, blank=True)
    resolved = models.JSONField(default=list, blank=True)
    notified_at = models.DateTimeField()
    round = models.PositiveIntegerField()
    # The outbox row (opsplane.notify) of the last message, when one was queued.
    outbox_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["incident", "receiver"],
                                    name="alerts_notificationlog_unique"),
        ]

    def __str__(self):
        return f"incident {self.incident_id} → {self.receiver or '(recorded)'}"


class IncidentEvent(models.Model):
    class Kind(models.TextChoices):
        OPENED = "opened", _("opened")
        NOTIFIED = "notified", _("notified")
        SUPPRESSED = "suppressed", _("not notified")
        ACKNOWLEDGED = "acknowledged", _("acknowledged")
        UNACKNOWLEDGED = "unacknowledged", _("unacknowledged")
        RESOLVED = "resolved", _("resolved")
        ESCALATED = "escalated", _("escalation step")
        SNOOZED = "snoozed", _("snoozed")
        EXHAUSTED = "exhausted", _("escalation policy exhausted")

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["incident", "at", "id"]

    def __str__(self):
        return f"{self.incident_id} {self.kind} at {self.at}"


class Notification(models.Model):
    """One message to one channel for one notification round of an incident. The key
    is unique, so however often a flush is retried the row (and the outbox row it
    queues under the same key) exists once."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued for delivery")
        RECORDED = "recorded", _("recorded only (no channel for this severity)")
        NO_CHANNEL = "no_channel", _("no such channel")

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE,
                                 related_name="notifications")
    round = models.PositiveIntegerField()
    channel_name = models.CharField(max_length=100, blank=True)
    # The outbox row (opsplane.notify) that delivers it, when queued.
    outbox_id = models.BigIntegerField(null=True, blank=True)
    receiver = models.CharField(max_length=100, blank=True)
    key = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    firing = models.PositiveIntegerField(default=0)
    resolved = models.PositiveIntegerField(default=0)
    title = models.CharField(max_length=300)
    text = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["incident", "round", "channel_name"]

    def __str__(self):
        return self.key


class EscalationPolicy(models.Model):
    """Who is paged, in what order, until someone acknowledges: ordered steps, walked
    once and then ``repeat`` more times (alerts/escalation.py)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=300, blank=True)
    repeat = models.PositiveSmallIntegerField(
        _("repeat"), default=0,
        help_text=_("Walk the steps this many more times when nobody acknowledged."))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("escalation policy")
        verbose_name_plural = _("escalation policies")

    def __str__(self):
        return self.name


class EscalationStep(models.Model):
    """One step of a policy: notify someone, or wait. A target deleted later leaves the
    step in place (it notifies nobody, and the timeline says so)."""

    class Kind(models.TextChoices):
        SCHEDULE = "schedule", _("Notify who is on call on a schedule")
        USER = "user", _("Notify a user")
        GROUP = "group", _("Notify a group")
        CHANNEL = "channel", _("Notify a channel")
        WAIT = "wait", _("Wait")

    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE,
                               related_name="steps")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    schedule = models.ForeignKey("oncall.Schedule", null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="+",
                                 verbose_name=_("schedule"))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+",
                             verbose_name=_("user"))
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+", verbose_name=_("group"))
    channel = models.ForeignKey("opsplane.Channel", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+",
                                verbose_name=_("channel"))
    wait_minutes = models.PositiveIntegerField(_("minutes"), default=0)

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"],
                                    name="alerts_escalationstep_position_unique"),
            models.CheckConstraint(condition=~Q(kind="wait") | Q(wait_minutes__gte=1),
                                   name="alerts_escalationstep_wait_positive"),
        ]

    def __str__(self):
        return f"{self.policy} #{self.position + 1} {self.kind}"

    @property
    def target(self):
        """The schedule, user, group or channel (None for a wait or a deleted target)."""
        return {self.Kind.SCHEDULE: self.schedule, self.Kind.USER: self.user,
                self.Kind.GROUP: self.group, self.Kind.CHANNEL: self.channel}.get(self.kind)


class OnCallContact(models.Model):
    """How escalation reaches one person: the channels to send to, and the handles that
    @mention them there (mobile for DingTalk, WeCom and SMS; a chat user id for Feishu,
    Slack and WeCom; an address for e-mail, the account's own when empty)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="oncall_contact")
    mobile = models.CharField(_("mobile"), max_length=20, blank=True)
    email = models.EmailField(_("e-mail"), blank=True)
    chat_id = models.CharField(_("chat user id"), max_length=100, blank=True,
                               help_text=_("Feishu ou_…, Slack U…, or WeCom user id."))
    channels = models.ManyToManyField("opsplane.Channel", blank=True, related_name="+",
                                      verbose_name=_("notify me through"))

    class Meta:
        verbose_name = _("on-call contact")
        verbose_name_plural = _("on-call contacts")

    def __str__(self):
        return f"contact of {self.user_id}"
