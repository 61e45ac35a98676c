"""Runbooks, changes, runs and per-host results.

A runbook is versioned: editing it makes a new ``RunbookVersion``; a change points at the
version it was composed from, so a run always executes exactly what was approved. The
allowed status moves live in ``changes/states.py``; every write in ``changes/services.py``.
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from cmdb.models import NAME_RE, Host


class Runbook(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True,
                            validators=[RegexValidator(NAME_RE)])
    description = models.TextField(_("description"), blank=True)
    archived = models.BooleanField(_("archived"), default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("runbook")
        verbose_name_plural = _("runbooks")

    def __str__(self):
        return self.name

    @property
    def latest(self):
        return self.versions.order_by("-number").first()


class RunbookVersion(models.Model):
    """What a runbook was at one edit: its parameter declarations and steps (JSON, in the
    shapes ``changes.runbooks`` validates). Never changed after it is made."""

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parameters = models.JSONField(default=list, blank=True)
    steps = models.JSONField(default=list)
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["runbook", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["runbook", "number"],
                                    name="changes_runbookversion_unique_number"),
        ]

    def __str__(self):
        return f"{self.runbook.name} v{self.number}"


class Change(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("draft")
        PENDING_APPROVAL = "pending_approval", _("awaiting approval")
        READY = "ready", _("ready")
        RUNNING = "running", _("running")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")
        INTERRUPTED = "interrupted", _("interrupted")

    title = models.CharField(_("title"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    runbook_version = models.ForeignKey(RunbookVersion, on_delete=models.PROTECT,
                                        related_name="changes")
    # Non-secret parameter values; secret ones are Fernet-encrypted in ``secret_params``.
    params = models.JSONField(default=dict, blank=True)
    secret_params = models.TextField(blank=True)
    selector = models.CharField(_("target selector"), max_length=4096)
    # Frozen at submission: the hosts this change is about, whatever the CMDB says later.
    targets = models.ManyToManyField(Host, related_name="changes", blank=True)
    target_names = models.JSONField(default=list, blank=True)
    strategy = models.JSONField(default=dict, blank=True)
    scheduled_at = models.DateTimeField(_("scheduled for"), null=True, blank=True)
    queue = models.CharField(max_length=100, default="runs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT,
                              db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="changes")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("change")
        verbose_name_plural = _("changes")

    def __str__(self):
        return f"#{self.pk} {self.title}"

    @property
    def check_mode(self):
        return bool(self.strategy.get("check_mode"))


class Run(models.Model):
    """One execution of a change; a retry is a new run on the failed/unknown hosts."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")
        INTERRUPTED = "interrupted", _("interrupted")

    TERMINAL = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED}

    change = models.ForeignKey(Change, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED,
                              db_index=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    check_mode = models.BooleanField(default=False)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    worker = models.CharField(max_length=200, blank=True)
    aborted_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["change", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["change", "number"],
                                    name="changes_run_unique_number"),
            # finished_at is set exactly when the run is over.
            models.CheckConstraint(
                condition=Q(status__in=["succeeded", "failed", "cancelled", "interrupted"],
                            finished_at__isnull=False)
                | Q(status__in=["queued", "running"], finished_at__isnull=True),
                name="changes_run_finished_when_terminal",
            ),
        ]

    def __str__(self):
        return f"{self.change} run {self.number}"

    @property
    def is_terminal(self):
        return self.status in self.TERMINAL


class HostResult(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        RUNNING = "running", _("running")
        OK = "ok", _("ok")
        FAILED = "failed", _("failed")
        SKIPPED = "skipped", _("skipped")
        CANCELLED = "cancelled", _("cancelled")
        UNREACHABLE = "unreachable", _("unreachable")
        UNKNOWN = "unknown", _("unknown")

    DONE = {State.OK, State.FAILED, State.SKIPPED, State.CANCELLED, State.UNREACHABLE,
            State.UNKNOWN}
    # What a retry runs again.
    RETRYABLE = {State.FAILED, State.UNREACHABLE, State.UNKNOWN, State.CANCELLED}

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="results")
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="results")
    host_name = models.CharField(max_length=255)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    exit_status = models.IntegerField(null=True, blank=True)
    error_reason = models.CharField(max_length=50, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "host_name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "host_name"],
                                    name="changes_hostresult_unique_host"),
        ]

    def __str__(self):
        return f"{self.host_name}: {self.state}"


# --- output -----------------------------------------------------------------------------
# Every line a run's hosts print, and the lines the worker adds (step headers, results,
# host states), carries a sequence number: 1, 2, 3, ... per run, across all hosts, with
# no gap. Rows hold runs of consecutive numbers; ``changes/output.py`` reads and writes
# them and says how.


class OutputChunk(models.Model):
    """Live output: lines ``seq``..``seq_end`` of one host, step and stream, written by the
    worker in batches while the run goes. Compacted into ``OutputBlock`` rows when the run
    is over. ``stream`` is stdout, stderr, diff, or one of the worker's own: cmd (a step
    starts), result (it ended), host (the host's state changed: the text starts with it).
    ``at`` is when the worker read the text (Unix time)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+", db_index=False)
    seq = models.BigIntegerField()
    seq_end = models.BigIntegerField()
    host_name = models.CharField(max_length=255)
    step = models.SmallIntegerField(null=True, blank=True)
    stream = models.CharField(max_length=8)
    text = models.TextField()
    at = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "seq_end"],
                                    name="changes_outputchunk_unique_seq"),
        ]
        indexes = [models.Index(fields=["run", "host_name", "seq_end"],
                                name="changes_outputchunk_host")]

    def __str__(self):
        return f"run {self.run_id} lines {self.seq}-{self.seq_end} ({self.host_name})"


class OutputBlock(models.Model):
    """Compacted output of a finished run: every event numbered ``seq``..``seq_end``, in one
    zlib-compressed section per host (``index``: ``[[host, offset, length, lines], ...]``
    into ``data``), so one host's lines are read without inflating the others'."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+", db_index=False)
    seq = models.BigIntegerField()
    seq_end = models.BigIntegerField()
    index = models.JSONField()
    data = models.BinaryField()
    lines = models.IntegerField()
    raw_bytes = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "seq_end"],
                                    name="changes_outputblock_unique_seq"),
        ]

    def __str__(self):
        return f"run {self.run_id} lines {self.seq}-{self.seq_end} (compacted)"


class RunOutput(models.Model):
    """What became of a run's output: compacted (with its size) and, after the retention
    period, deleted. Per-host results stay either way."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True,
                               related_name="output")
    lines = models.BigIntegerField(default=0)
    raw_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    compacted_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"output of run {self.run_id}"
