from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AuditEvent(models.Model):
    """Who did what to which object, when and from where. Written by ``audit.record``.

    The actor's username and the object's text are copied, so the trail still reads
    after the user or the object is deleted.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    source = models.CharField(
        max_length=64, blank=True, help_text=_("Client address, or the process (worker, beat)")
    )
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"])]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")

    def __str__(self):
        who = self.actor_name or _("system")
        return f"{self.at:%Y-%m-%d %H:%M:%S} {who} {self.action} {self.object_repr}".strip()


class ApiToken(models.Model):
    """A named API token for scripts. Only a SHA-256 digest of the secret is stored.

    Tokens are 256 random bits, so a fast hash is enough (there is nothing to brute
    force); ``prefix`` is the public part shown in lists to tell tokens apart.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self):
        return f"{self.name} (ops_{self.prefix}_…)"

    @property
    def is_active(self):
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Heartbeat(models.Model):
    """The last time a background process proved it works (e.g. beat's scheduled task
    ran on a worker). The System page and ``manage.py up`` read it."""

    name = models.CharField(max_length=50, unique=True)
    at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"


# Notification channels and their outbox live in opsplane/notify/ (same app, own module).
from opsplane.notify.models import Attempt, Channel, Notification  # noqa: E402, F401
