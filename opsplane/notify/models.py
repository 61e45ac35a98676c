"""Notification channels and the delivery outbox.

These models belong to the ``opsplane`` app (``opsplane/models.py`` imports them); their
tables are prefixed ``opsplane_notify_``. Every write goes through
``opsplane.notify.services``.
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    _("Use letters, digits, dots, dashes and underscores; start with a letter or digit."),
)

# "20/60s", "5/1s,100/60s", "20/min", "5/s": messages per period, every window enforced.
BUDGET_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|m|min|h)?\s*$")
UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(text):
    """``"5/1s,100/60s"`` -> ``[(5, 1), (100, 60)]``; ``"none"`` or ``"0"`` -> ``[]``
    (unlimited); empty -> None (the kind's default). Raises ``ValueError`` with a message
    for people."""
    text = (text or "").strip().lower()
    if not text:
        return None
    if text in {"none", "0", "unlimited"}:
        return []
    windows = []
    for part in text.split(","):
        match = BUDGET_PART.match(part)
        if not match:
            raise ValueError(_("Write the budget as messages/period, e.g. 20/60s or "
                               "5/1s,100/60s (or “none”)."))
        count, number, unit = int(match.group(1)), match.group(2), match.group(3)
        seconds = int(number or 1) * UNIT_SECONDS[unit]
        if count < 1 or seconds < 1:
            raise ValueError(_("A budget needs at least one message per at least one second."))
        windows.append((count, seconds))
    return windows


def format_budget(windows):
    return ",".join(f"{count}/{seconds}s" for count, seconds in windows) or "none"


class Channel(models.Model):
    """Somewhere notifications go: a chat robot, a webhook, e-mail addresses, an SMS
    gateway. ``config`` holds what may be shown (mentions, recipients, message format,
    the SMS gateway's request shape); ``secret`` a Fernet token (``opsplane.secrets``)
    of what may not: the webhook URL (robot URLs carry their access token), the signing
    secret, a bearer token. The secret is never shown back after saving."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", _("Webhook")
        DINGTALK = "dingtalk", _("DingTalk robot")
        WECOM = "wecom", _("WeCom robot")
        FEISHU = "feishu", _("Feishu/Lark robot")
        SLACK = "slack", _("Slack incoming webhook")
        EMAIL = "email", _("E-mail")
        SMS = "sms", _("SMS gateway")

    # What each robot tolerates (../shared/reference/alerting.md): DingTalk and WeCom 20
    # a minute (DingTalk blocks an over-eager robot for ~10 minutes), Feishu 5 a second
    # and 100 a minute, Slack about 1 a second. Others: no budget unless set.
    DEFAULT_BUDGETS = {
        Kind.DINGTALK: [(20, 60)],
        Kind.WECOM: [(20, 60)],
        Kind.FEISHU: [(5, 1), (100, 60)],
        Kind.SLACK: [(1, 1)],
    }

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[name_validator])
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    description = models.CharField(_("description"), max_length=200, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    config = models.JSONField(_("settings"), default=dict, blank=True)
    secret = models.TextField(blank=True, editable=False)
    # Which secret fields are stored (names only), and where messages go, for people.
    secret_fields = models.JSONField(default=list, blank=True, editable=False)
    target = models.CharField(_("target"), max_length=200, blank=True, editable=False)
    rate_budget = models.CharField(
        _("rate budget"), max_length=100, blank=True,
        help_text=_("Messages per period, e.g. 20/60s or 5/1s,100/60s; “none” for no "
                    "limit; empty for the default of the kind."),
    )
    template = models.TextField(
        _("message template"), blank=True,
        help_text=_("Django template for the message text; empty for the default of the "
                    "kind."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        db_table = "opsplane_notify_channel"
        ordering = ["name"]
        verbose_name = _("notification channel")
        verbose_name_plural = _("notification channels")

    def __str__(self):
        return self.name

    def __repr__(self):  # never the secret, even in a debugger or a log line
        return f"<Channel {self.pk} {self.name!r} {self.kind}>"

    def clean(self):
        try:
            parse_budget(self.rate_budget)
        except ValueError as exc:
            raise ValidationError({"rate_budget": str(exc)}) from None

    def budget(self):
        """The rate windows ``[(messages, seconds), ...]`` this channel must stay within."""
        windows = parse_budget(self.rate_budget)
        return list(self.DEFAULT_BUDGETS.get(self.kind, [])) if windows is None else windows

    @property
    def budget_display(self):
        return format_budget(self.budget())


class Notification(models.Model):
    """One message to one channel: a row of the outbox.

    Written by ``services.enqueue`` inside the caller's transaction; a Celery task
    delivers it after the commit, and beat's sweep picks up rows the task never reached.
    ``idempotency_key`` is unique: enqueueing the same key again returns this row.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        SENDING = "sending", _("sending")
        SENT = "sent", _("sent")
        FAILED = "failed", _("failed, will retry")
        HELD = "held", _("held by the rate budget")
        FOLDED = "folded", _("delivered in a digest")
        DEAD = "dead", _("gave up")

    # Waiting for a worker (pending/failed at next_attempt_at, held until a digest).
    WAITING = (State.PENDING, State.FAILED)
    TERMINAL = (State.SENT, State.FOLDED, State.DEAD)

    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="notifications",
                                verbose_name=_("channel"))
    idempotency_key = models.CharField(max_length=255, unique=True)
    ref = models.CharField(_("about"), max_length=100, blank=True, db_index=True,
                           help_text=_("What this is about, e.g. incident:42"))
    payload = models.JSONField(default=dict)
    state = models.CharField(_("state"), max_length=10, choices=State.choices,
                             default=State.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    provider_code = models.CharField(_("provider code"), max_length=50, blank=True)
    # A digest is a notification of its own that stands for the rows folded into it.
    is_digest = models.BooleanField(default=False)
    digest = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="folded", verbose_name=_("digest"))
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        db_table = "opsplane_notify_notification"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="notify_due"),
            models.Index(fields=["channel", "state"], name="notify_channel_state"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state="sent", sent_at__isnull=False)
                | (~Q(state="sent") & Q(sent_at__isnull=True)),
                name="notify_sent_at_iff_sent",
            ),
            models.CheckConstraint(
                condition=Q(state="folded", digest__isnull=False)
                | (~Q(state="folded") & Q(digest__isnull=True)),
                name="notify_digest_iff_folded",
            ),
        ]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")

    def __str__(self):
        return f"#{self.pk} {self.payload.get('title', '')}"[:200]

    @property
    def title(self):
        return self.payload.get("title", "")

    @property
    def is_terminal(self):
        return self.state in self.TERMINAL

    @property
    def status_class(self):
        """The shared status vocabulary of the pages (app.css)."""
        return {"sent": "ok", "folded": "ok", "dead": "failed", "sending": "running",
                "failed": "pending", "held": "pending"}.get(self.state, "pending")


class Attempt(models.Model):
    """One try at delivering a notification: what the provider answered."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE,
                                     related_name="attempt_set")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    # DingTalk/WeCom ``errcode``, Feishu ``code``, Slack's error text, an SMTP code.
    provider_code = models.CharField(max_length=50, blank=True)
    provider_message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "opsplane_notify_attempt"
        ordering = ["notification", "number"]

    def __str__(self):
        return f"attempt {self.number} of #{self.notification_id}"


# Register the outbox's scrape-time collector in every process that loads the models
# (``/metrics`` on web serves it). Its natural home is OpsplaneConfig.ready(), next to
# the other apps' ``metrics`` imports; it is here while that file is not ours to edit.
from opsplane.notify import metrics as _metrics  # noqa: E402, F401
