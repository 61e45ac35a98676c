from django.db import models
from django.utils.translation import gettext_lazy as _


class Environment(models.Model):
    """Where hosts live: dev, staging, prod... ``protected`` environments need approval
    before a change runs on them (the approvals app's default policy reads it)."""

    name = models.SlugField(_("name"), max_length=50, unique=True)
    description = models.CharField(_("description"), max_length=200, blank=True)
    protected = models.BooleanField(
        _("protected"), default=False,
        help_text=_("Changes on hosts of a protected environment need approval."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("environment")
        verbose_name_plural = _("environments")

    def __str__(self):
        return self.name
