"""On-call schedules: who is on call, when. Shift times are local wall-clock times with an
IANA zone, expanded with zoneinfo (``oncall/rotations.py``)."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Schedule(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=300, blank=True)
    time_zone = models.CharField(_("time zone"), max_length=64, default="UTC",
                                 help_text=_("IANA time zone, e.g. Asia/Shanghai"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")

    def __str__(self):
        return self.name
