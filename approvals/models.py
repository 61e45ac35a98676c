"""Approval policies, requests bound to a content digest, decisions, freeze and
maintenance windows.

A request is about a *subject* known only by type, id, title, link and digest, plus the
facts its owner passed in (``approvals.matching.Subject``): this app imports no other
domain app. Every write is in ``approvals/services.py``; the request's status moves are
``TRANSITIONS`` below.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from approvals import windows
from approvals.matching import RISKS

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    _("Use letters, digits, dots, dashes and underscores; start with a letter or digit."))
# Who may bypass a freeze (or the wait for approvers) in an emergency: a Django group,
# deliberately not one of the four roles, so admins are not emergency approvers by default.
EMERGENCY_GROUP = "emergency_approver"
# What a protected environment needs when no policy matches.
DEFAULT_GROUP = "approver"
DEFAULT_VALIDITY_HOURS = 72


class ApprovalPolicy(models.Model):
    """Which subjects need whose approval.

    A policy matches a subject when every condition it sets holds: one of its
    ``environments`` and its ``selector`` on the *same* host, the subject's ``runbook``
    among ``runbooks``, and the subject's risk at least ``min_risk``. Empty conditions
    hold for everything. ``requirements`` is ``[{"group": "dba", "count": 1}, ...]``: all
    of them, each by different people. Every matching policy must be met."""

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[NAME_VALIDATOR])
    description = models.CharField(_("description"), max_length=300, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    environments = models.JSONField(_("environments"), default=list, blank=True)
    selector = models.CharField(_("host selector"), max_length=4096, blank=True)
    runbooks = models.JSONField(_("runbooks"), default=list, blank=True)
    min_risk = models.CharField(_("minimum risk"), max_length=10, blank=True,
                                choices=[(r, r) for r in RISKS])
    requirements = models.JSONField(_("requirements"), default=list)
    allow_author = models.BooleanField(
        _("author may approve"), default=False,
        help_text=_("Off (the default): four eyes, the author's own approval never counts."))
    validity_hours = models.PositiveIntegerField(
        _("validity (hours)"), default=DEFAULT_VALIDITY_HOURS,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 365)],
        help_text=_("A request expires this long after it was opened (or after its "
                    "scheduled start, when later)."))
    rejection_ends = models.BooleanField(
        _("one rejection ends the request"), default=True)
    # Names of notification channels (``opsplane.notify``) that hear about the requests
    # this policy matches: when one needs approvers, and each decision.
    channels = models.JSONField(_("notify channels"), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("approval policy")
        verbose_name_plural = _("approval policies")

    def __str__(self):
        return self.name

    def requirement_text(self):
        return " + ".join(f"{r['count']} × {r['group']}" for r in self.requirements)


class ApprovalRequest(models.Model):
    """One subject's request for approval. One row per subject; an edit of the subject
    (a new digest) or a resubmission opens a new *round* on the same row: decisions of
    earlier rounds stay in the history but no longer count."""

    class Status(models.TextChoices):
        PENDING = "pending", _("awaiting approval")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        EXPIRED = "expired", _("expired")
        WITHDRAWN = "withdrawn", _("withdrawn")
        MISSED = "missed", _("missed its start")

    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64)
    title = models.CharField(_("title"), max_length=300)
    link = models.CharField(max_length=500, blank=True)
    digest = models.CharField(max_length=64)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                               on_delete=models.SET_NULL, related_name="approval_requests")
    author_name = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    round = models.PositiveIntegerField(default=1)
    # True when no policy asked for anyone: approved the moment it was opened.
    automatic = models.BooleanField(default=False)
    # What the matched policies demanded when this round opened (policy edits do not
    # change an open round): [{"policy", "requirements", "allow_author",
    # "rejection_ends", "validity_hours", "channels"}].
    requirements = models.JSONField(default=list, blank=True)
    facts = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    environments = models.JSONField(default=list, blank=True)
    not_before = models.DateTimeField(_("scheduled for"), null=True, blank=True)
    opened_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(_("expires"))
    started_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["opened_at", "id"]
        verbose_name = _("approval request")
        verbose_name_plural = _("approval requests")
        constraints = [
            models.UniqueConstraint(fields=["subject_type", "subject_id"],
                                    name="approvals_request_one_per_subject"),
            # decided_at is set exactly when the round is no longer waiting.
            models.CheckConstraint(
                condition=Q(status="pending", decided_at__isnull=True)
                | (~Q(status="pending") & Q(decided_at__isnull=False)),
                name="approvals_request_decided_when_not_pending"),
        ]

    def __str__(self):
        return self.title

    @property
    def is_open(self):
        return self.status in (self.Status.PENDING, self.Status.APPROVED)


TRANSITIONS = {
    ApprovalRequest.Status.PENDING: {"approved", "rejected", "expired", "withdrawn", "missed",
                                     "pending"},
    ApprovalRequest.Status.APPROVED: {"pending", "approved", "expired", "withdrawn", "missed"},
    ApprovalRequest.Status.REJECTED: {"pending", "approved"},
    ApprovalRequest.Status.EXPIRED: {"pending", "approved"},
    ApprovalRequest.Status.WITHDRAWN: {"pending", "approved"},
    ApprovalRequest.Status.MISSED: {"pending", "approved"},
}


class Decision(models.Model):
    """Something an approver (or, for emergencies, an emergency approver) said about one
    round of a request, bound to the digest of that round."""

    class Kind(models.TextChoices):
        APPROVE = "approve", _("approved")
        REJECT = "reject", _("rejected")
        REQUEST_CHANGES = "request_changes", _("asked for changes")
        COMMENT = "comment", _("commented")
        EMERGENCY = "emergency", _("emergency bypass")

    VERDICTS = (Kind.APPROVE, Kind.REJECT)

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE,
                                related_name="decisions")
    round = models.PositiveIntegerField()
    digest = models.CharField(max_length=64)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                           related_name="approval_decisions")
    by_name = models.CharField(max_length=150)
    # The requirement groups this person counted for when they decided.
    groups = models.JSONField(default=list, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Emergency bypasses are reviewed after the incident.
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    review_note = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One approval and one rejection per person per round: a double click or
            # two tabs cannot count twice.
            models.UniqueConstraint(fields=["request", "round", "by", "kind"],
                                    condition=Q(kind__in=["approve", "reject"]),
                                    name="approvals_decision_one_verdict_per_round"),
            models.CheckConstraint(
                condition=Q(kind__in=["approve", "comment"]) | ~Q(comment=""),
                name="approvals_decision_reason_required"),
            models.CheckConstraint(
                condition=Q(kind="emergency") | Q(reviewed_at__isnull=True),
                name="approvals_decision_review_only_emergencies"),
        ]

    def __str__(self):
        return f"{self.by_name} {self.get_kind_display()} {self.request}"


class Window(models.Model):
    """A span of time on some hosts: weekly (weekday + time to weekday + time) or dated
    (date + time to date + time), in a named time zone (``approvals/windows.py``)."""

    class Kind(models.TextChoices):
        WEEKLY = windows.WEEKLY, _("every week")
        DATED = windows.DATED, _("once (dates)")

    class Weekday(models.IntegerChoices):
        MON = 0, _("Monday")
        TUE = 1, _("Tuesday")
        WED = 2, _("Wednesday")
        THU = 3, _("Thursday")
        FRI = 4, _("Friday")
        SAT = 5, _("Saturday")
        SUN = 6, _("Sunday")

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[NAME_VALIDATOR])
    description = models.CharField(_("description"), max_length=300, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    environments = models.JSONField(_("environments"), default=list, blank=True)
    selector = models.CharField(_("host selector"), max_length=4096, blank=True)
    kind = models.CharField(_("repeats"), max_length=10, choices=Kind.choices,
                            default=Kind.WEEKLY)
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC")
    start_weekday = models.PositiveSmallIntegerField(_("from day"), null=True, blank=True,
                                                     choices=Weekday.choices)
    end_weekday = models.PositiveSmallIntegerField(_("to day"), null=True, blank=True,
                                                   choices=Weekday.choices)
    start_date = models.DateField(_("from date"), null=True, blank=True)
    end_date = models.DateField(_("to date"), null=True, blank=True)
    start_time = models.TimeField(_("from time"))
    end_time = models.TimeField(_("to time"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self):
        return self.name

    def describe(self):
        return windows.describe(self)

    @classmethod
    def _kind_constraint(cls, prefix):
        return models.CheckConstraint(
            condition=Q(kind="weekly", start_weekday__isnull=False, end_weekday__isnull=False,
                        start_date__isnull=True, end_date__isnull=True)
            | Q(kind="dated", start_weekday__isnull=True, end_weekday__isnull=True,
                start_date__isnull=False, end_date__isnull=False),
            name=f"{prefix}_fields_match_kind")


class FreezeWindow(Window):
    """No change starts on matching hosts while it is open (an emergency bypass aside)."""

    class Meta(Window.Meta):
        verbose_name = _("freeze window")
        verbose_name_plural = _("freeze windows")
        constraints = [Window._kind_constraint("approvals_freeze")]


class MaintenanceWindow(Window):
    """When changes on matching hosts may be scheduled to start. Hosts that no
    maintenance window matches may be scheduled at any time."""

    class Meta(Window.Meta):
        verbose_name = _("maintenance window")
        verbose_name_plural = _("maintenance windows")
        constraints = [Window._kind_constraint("approvals_maintenance")]
