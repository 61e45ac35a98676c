"""On-call schedules: who is on call, when. Shift times are local wall-clock times with an
IANA zone, expanded with zoneinfo (``oncall/rotations.py``)."""

import datetime

from django.conf import settings
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


WEEKDAYS = [(0, _("Mon")), (1, _("Tue")), (2, _("Wed")), (3, _("Thu")), (4, _("Fri")),
            (5, _("Sat")), (6, _("Sun"))]


class Layer(models.Model):
    """A rotation on a schedule. Higher ``level`` wins where layers overlap.

    Shift ``k`` begins at the wall-clock time ``start_date + handoff_time + k × length``
    in the schedule's zone (see ``oncall/rotations.py`` for the DST rule)."""

    class Rotation(models.TextChoices):
        DAILY = "daily", _("Daily")
        WEEKLY = "weekly", _("Weekly")
        CUSTOM = "custom", _("Custom")

    class Unit(models.TextChoices):
        HOURS = "hours", _("hours")
        DAYS = "days", _("days")

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="layers")
    name = models.CharField(_("name"), max_length=100)
    level = models.PositiveSmallIntegerField(_("level"), default=1,
                                             help_text=_("Higher levels win where layers overlap."))
    rotation = models.CharField(_("rotation"), max_length=10, choices=Rotation.choices,
                                default=Rotation.WEEKLY)
    shift_length = models.PositiveIntegerField(_("shift length"), default=1,
                                               help_text=_("For custom rotations."))
    shift_unit = models.CharField(_("unit"), max_length=5, choices=Unit.choices,
                                  default=Unit.DAYS)
    handoff_time = models.TimeField(_("hand-off time"), default=datetime.time(9))
    start_date = models.DateField(_("start date"))
    # Restriction to weekly windows: on each of these weekdays (0 = Monday), from
    # ``restrict_start`` to ``restrict_end``. No days: no restriction.
    restrict_days = models.JSONField(_("restricted to days"), default=list, blank=True)
    restrict_start = models.TimeField(_("from"), null=True, blank=True)
    restrict_end = models.TimeField(_("until"), null=True, blank=True)
    participants = models.ManyToManyField(settings.AUTH_USER_MODEL, through="LayerMember",
                                          related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["schedule", "-level", "id"]
        verbose_name = _("layer")
        verbose_name_plural = _("layers")
        constraints = [
            models.UniqueConstraint(fields=["schedule", "level"], name="oncall_layer_level_unique"),
            models.CheckConstraint(condition=models.Q(shift_length__gte=1),
                                   name="oncall_layer_length_positive"),
        ]

    def __str__(self):
        return f"{self.schedule} / {self.name}"

    @property
    def length_and_unit(self):
        """(length, unit) of one shift, unit one of ``Unit``."""
        if self.rotation == self.Rotation.DAILY:
            return 1, self.Unit.DAYS
        if self.rotation == self.Rotation.WEEKLY:
            return 7, self.Unit.DAYS
        return self.shift_length, self.shift_unit

    @property
    def is_restricted(self):
        return bool(self.restrict_days)

    @property
    def restrict_day_names(self):
        names = dict(WEEKDAYS)
        return [names[d] for d in self.restrict_days if d in names]


class LayerMember(models.Model):
    """A participant of a layer's rotation, in order."""

    layer = models.ForeignKey(Layer, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="oncall_memberships")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["layer", "position"]
        constraints = [
            models.UniqueConstraint(fields=["layer", "position"],
                                    name="oncall_member_position_unique"),
        ]

    def __str__(self):
        return f"{self.layer}: {self.position}. {self.user}"


class Override(models.Model):
    """``user`` takes ``[start, end)`` on a schedule, above every layer; the newest
    override wins over older ones. A one-off range, so stored as instants."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="overrides")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="oncall_overrides")
    start = models.DateTimeField(_("start"))
    end = models.DateTimeField(_("end"))
    note = models.CharField(_("note"), max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["schedule", "start", "id"]
        verbose_name = _("override")
        verbose_name_plural = _("overrides")
        constraints = [
            models.CheckConstraint(condition=models.Q(end__gt=models.F("start")),
                                   name="oncall_override_end_after_start"),
        ]
        indexes = [models.Index(fields=["schedule", "end"])]

    def __str__(self):
        return f"{self.schedule}: {self.user} {self.start:%Y-%m-%d %H:%M}–{self.end:%Y-%m-%d %H:%M}"
