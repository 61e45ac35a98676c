from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from cmdb.models import Credential, Environment, Group, Host, Service


class LabelsField(forms.CharField):
    """Labels as text, one ``key=value`` per line (or comma-separated)."""

    widget = forms.Textarea(attrs={"rows": 4, "placeholder": "role=web\nzone=a"})

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{k}={v}" for k, v in sorted(value.items()))
        return value

    def to_python(self, value):
        labels = {}
        for number, raw in enumerate((value or "").replace(",", "\n").splitlines(), 1):
            item = raw.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValidationError(
                    _("Line %(n)d: write key=value, not “%(item)s”."),
                    params={"n": number, "item": item},
                )
            labels[key.strip()] = val.strip()
        return labels


class VariablesField(forms.JSONField):
    widget = forms.Textarea(attrs={"rows": 4, "class": "mono", "placeholder": "{}"})

    def clean(self, value):
        value = super().clean(value)
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError(_("Variables are a JSON object, e.g. {\"http_port\": 80}."))
        return value


class HostForm(forms.ModelForm):
    labels = LabelsField(label=_("Labels"), required=False,
                         help_text=_("One key=value per line."))
    variables = VariablesField(label=_("Variables"), required=False)

    class Meta:
        model = Host
        fields = ["name", "address", "port", "ssh_user", "environment", "labels", "groups",
                  "owner_team", "credential", "enabled", "description", "variables"]
        widgets = {"groups": forms.SelectMultiple(attrs={"size": 6}),
                   "description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = Environment.objects.all()
        self.fields["groups"].queryset = Group.objects.all()
        self.fields["credential"].queryset = Credential.objects.all()

    def validate_unique(self):
        """The service validates (full_clean) when it saves; not twice."""


class GroupForm(forms.ModelForm):
    variables = VariablesField(label=_("Variables"), required=False)

    class Meta:
        model = Group
        fields = ["name", "description", "parents", "variables"]
        widgets = {"parents": forms.SelectMultiple(attrs={"size": 6})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        parents = Group.objects.all()
        if self.instance.pk:
            parents = parents.exclude(pk=self.instance.pk)
        self.fields["parents"].queryset = parents

    def validate_unique(self):
        pass


class ServiceForm(forms.ModelForm):
    class Meta:
        model = Service
        fields = ["name", "description", "owner_team", "tier"]

    def validate_unique(self):
        pass


class EnvironmentForm(forms.ModelForm):
    class Meta:
        model = Environment
        fields = ["name", "description", "protected"]

    def validate_unique(self):
        pass


class CredentialForm(forms.ModelForm):
    """The secret fields are never filled in from the database: a saved secret is not
    shown again. Leave them empty on edit to keep the stored secret."""

    private_key = forms.CharField(
        label=_("SSH private key"), required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "class": "mono", "autocomplete": "off",
                                     "spellcheck": "false"}),
    )
    passphrase = forms.CharField(label=_("Key passphrase"), required=False, strip=False,
                                 widget=forms.PasswordInput(render_value=False))
    password = forms.CharField(label=_("Password"), required=False, strip=False,
                               widget=forms.PasswordInput(render_value=False))

    class Meta:
        model = Credential
        fields = ["name", "kind", "description"]

    def validate_unique(self):
        pass


class BulkLabelsForm(forms.Form):
    hosts = forms.ModelMultipleChoiceField(queryset=Host.objects.all(),
                                           widget=forms.MultipleHiddenInput)
    set_labels = LabelsField(label=_("Set labels"), required=False)
    remove_keys = forms.CharField(label=_("Remove label keys"), required=False,
                                  help_text=_("Comma-separated keys."))

    def clean_remove_keys(self):
        return [k.strip() for k in self.cleaned_data["remove_keys"].split(",") if k.strip()]


class TrustKeyForm(forms.Form):
    key = forms.CharField(label=_("Public host key"), required=False,
                          widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}),
                          help_text=_("Paste the key, or leave empty to pin the key the "
                                      "host presents now."))


MAX_UPLOAD = 20 * 1024 * 1024


class UploadOrPasteForm(forms.Form):
    """Text pasted in a box or uploaded as a file (one of them)."""

    content = forms.CharField(label=_("Paste"), required=False, strip=False,
                              widget=forms.Textarea(attrs={"rows": 10, "class": "mono",
                                                           "spellcheck": "false"}))
    file = forms.FileField(label=_("or upload a file"), required=False)

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_UPLOAD:
                raise ValidationError(_("The file is larger than 20 MB."))
            try:
                data["content"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError(_("The file is not UTF-8 text.")) from None
        if not data.get("content", "").strip():
            raise ValidationError(_("Paste the text or choose a file."))
        return data

    def text(self):
        return self.cleaned_data["content"]


class KnownHostsForm(UploadOrPasteForm):
    pass


class InventoryImportForm(UploadOrPasteForm):
    FORMAT_CHOICES = [("", _("from the file name")), ("ini", _("Ansible INI")),
                      ("yaml", _("Ansible YAML")), ("csv", "CSV"), ("json", "JSON")]

    format = forms.ChoiceField(label=_("Format"), choices=FORMAT_CHOICES, required=False)
    environment = forms.ModelChoiceField(
        label=_("Environment for new hosts"), queryset=Environment.objects.all(),
        to_field_name="name",
        help_text=_("A host variable opsplane_env picks another one per host."))

    def clean(self):
        from cmdb.inventory import format_for_filename

        data = super().clean()
        if not data.get("format"):
            upload = data.get("file")
            fmt = format_for_filename(upload.name) if upload else None
            if fmt is None:
                self.add_error("format", _("Say which format this is."))
            data["format"] = fmt
        return data
