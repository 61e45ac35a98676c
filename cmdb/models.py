"""The inventory: environments, hosts, groups, services, credentials, pinned host keys.

Writes go through ``cmdb/services.py``; targets are chosen with the selector language in
``cmdb/selectors.py``.
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

# Names that selectors, Ansible inventories and shells can all carry unquoted.
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
name_validator = RegexValidator(
    NAME_RE, _("Use letters, digits, dots, dashes and underscores; start with a letter or digit.")
)
# Label keys as Kubernetes spells them (optional DNS prefix, then a name).
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]*)?$")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9._:/@+-]*$")
# Selector keywords: a label may not take these names, or `env=prod` would be ambiguous.
RESERVED_LABEL_KEYS = {"env", "group", "name", "service"}


def validate_labels(value):
    if not isinstance(value, dict):
        raise ValidationError(_("Labels must be a mapping of key to value."))
    for key, val in value.items():
        if not isinstance(key, str) or len(key) > 63 or not LABEL_KEY_RE.match(key):
            raise ValidationError(_("Invalid label key “%(key)s”."), params={"key": key})
        if key in RESERVED_LABEL_KEYS:
            raise ValidationError(
                _("“%(key)s” is a selector keyword and cannot be a label key."),
                params={"key": key},
            )
        if not isinstance(val, str) or len(val) > 253 or not LABEL_VALUE_RE.match(val):
            raise ValidationError(
                _("Invalid value for label “%(key)s”: use letters, digits and ._:/@+-"),
                params={"key": key},
            )


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


class Credential(models.Model):
    """An SSH private key (with optional passphrase) or a password, encrypted at rest.

    ``secret`` holds a Fernet token (``opsplane/secrets.py``); the plaintext never leaves
    ``cmdb.services`` except into an SSH connection. ``public_key``/``fingerprint`` are
    derived from a key so people can tell keys apart without seeing them.
    """

    class Kind(models.TextChoices):
        SSH_KEY = "ssh_key", _("SSH private key")
        PASSWORD = "password", _("Password")

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[name_validator])
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    description = models.CharField(_("description"), max_length=200, blank=True)
    secret = models.TextField(editable=False)
    public_key = models.TextField(_("public key"), blank=True, editable=False)
    fingerprint = models.CharField(_("fingerprint"), max_length=100, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]
        verbose_name = _("credential")
        verbose_name_plural = _("credentials")

    def __str__(self):
        return self.name

    def __repr__(self):  # never the secret, even in a debugger or a log line
        return f"<Credential {self.pk} {self.name!r} {self.kind}>"


class Group(models.Model):
    """A named set of hosts. Groups nest (a group's hosts include its children's, to any
    depth, as Ansible's ``children``); cycles are refused by ``services.set_group_parents``."""

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[name_validator])
    description = models.CharField(_("description"), max_length=200, blank=True)
    parents = models.ManyToManyField("self", symmetrical=False, blank=True,
                                     related_name="children", verbose_name=_("parents"))
    variables = models.JSONField(_("variables"), default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("group")
        verbose_name_plural = _("groups")

    def __str__(self):
        return self.name


class Host(models.Model):
    class HostKeyState(models.TextChoices):
        UNKNOWN = "unknown", _("no key pinned")
        TRUSTED = "trusted", _("trusted")
        CHANGED = "changed", _("host key changed")

    name = models.CharField(_("name"), max_length=255, unique=True, validators=[name_validator])
    address = models.CharField(
        _("address"), max_length=255, blank=True,
        help_text=_("IP address or DNS name to connect to; empty means the name."),
    )
    port = models.PositiveIntegerField(
        _("SSH port"), default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    ssh_user = models.CharField(_("SSH user"), max_length=64, default="root",
                                validators=[RegexValidator(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")])
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="hosts",
                                    verbose_name=_("environment"))
    labels = models.JSONField(_("labels"), default=dict, blank=True, validators=[validate_labels])
    groups = models.ManyToManyField(Group, blank=True, related_name="hosts",
                                    verbose_name=_("groups"))
    owner_team = models.CharField(_("owner team"), max_length=100, blank=True)
    description = models.TextField(_("description"), blank=True)
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("Disabled hosts are never targeted.")
    )
    variables = models.JSONField(_("variables"), default=dict, blank=True)
    credential = models.ForeignKey(Credential, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="hosts", verbose_name=_("credential"))
    host_key_state = models.CharField(max_length=20, choices=HostKeyState.choices,
                                      default=HostKeyState.UNKNOWN)
    # The key a connection was offered that did not match the pinned ones (state CHANGED).
    presented_host_key = models.TextField(blank=True)
    presented_host_key_at = models.DateTimeField(null=True, blank=True)
    facts = models.JSONField(default=dict, blank=True)
    facts_updated_at = models.DateTimeField(null=True, blank=True)
    facts_error = models.CharField(max_length=30, blank=True)  # ssh.SSHError.reason
    facts_error_detail = models.TextField(blank=True)
    facts_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("host")
        verbose_name_plural = _("hosts")
        constraints = [
            models.CheckConstraint(
                condition=Q(host_key_state="changed") | Q(presented_host_key=""),
                name="cmdb_host_presented_key_only_when_changed",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def connect_address(self):
        return self.address or self.name


class HostKey(models.Model):
    """A pinned SSH host key: connections to the host succeed only with one of these."""

    class Source(models.TextChoices):
        FIRST_CONTACT = "first_contact", _("first contact")
        MANUAL = "manual", _("entered by hand")
        KNOWN_HOSTS = "known_hosts", _("known_hosts import")
        RETRUST = "retrust", _("re-trusted after a change")

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="host_keys")
    key = models.TextField(_("public key"))
    fingerprint = models.CharField(_("fingerprint"), max_length=100)
    source = models.CharField(max_length=20, choices=Source.choices)
    trusted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    trusted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host", "trusted_at"]
        constraints = [
            models.UniqueConstraint(fields=["host", "key"], name="cmdb_hostkey_unique_per_host"),
        ]
        verbose_name = _("host key")
        verbose_name_plural = _("host keys")

    def __str__(self):
        return f"{self.host} {self.fingerprint}"


class Service(models.Model):
    class Tier(models.TextChoices):
        CRITICAL = "critical", _("critical")
        HIGH = "high", _("high")
        MEDIUM = "medium", _("medium")
        LOW = "low", _("low")

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[name_validator])
    description = models.CharField(_("description"), max_length=200, blank=True)
    owner_team = models.CharField(_("owner team"), max_length=100, blank=True)
    tier = models.CharField(_("tier"), max_length=20, choices=Tier.choices, default=Tier.MEDIUM)
    hosts = models.ManyToManyField(Host, blank=True, related_name="services",
                                   verbose_name=_("hosts"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("service")
        verbose_name_plural = _("services")

    def __str__(self):
        return self.name
