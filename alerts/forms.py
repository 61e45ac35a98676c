from django import forms
from django.utils.translation import gettext_lazy as _

from alerts.models import Integration

DURATIONS = [(1, _("1 hour")), (2, _("2 hours")), (4, _("4 hours")), (8, _("8 hours")),
             (24, _("1 day")), (72, _("3 days")), (168, _("1 week"))]


class IntegrationForm(forms.ModelForm):
    hmac_secret = forms.CharField(
        label=_("Signing secret"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Optional. With a secret, requests must carry an HMAC-SHA256 signature "
                    "(Grafana: the contact point's HMAC secret). Leave empty to keep the "
                    "current one."))
    clear_secret = forms.BooleanField(label=_("Remove the signing secret"), required=False)

    class Meta:
        model = Integration
        fields = ["name", "kind", "description", "enabled", "heartbeat_minutes",
                  "resolve_timeout_minutes", "hmac_timestamp_header", "escalation_policy"]


class SilenceForm(forms.Form):
    matchers = forms.CharField(
        label=_("Matchers"), widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
        help_text=_("One per line, as Alertmanager writes them: alertname=\"HighCPU\", "
                    "instance=~\"web-.*\", env!=\"dev\". An alert is silenced when all "
                    "match."))
    starts_at = forms.DateTimeField(
        label=_("Starts"), required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text=_("Leave empty to start now (e.g. set it to a maintenance window)."))
    hours = forms.TypedChoiceField(label=_("For"), choices=DURATIONS, coerce=int, initial=2)
    comment = forms.CharField(label=_("Comment"), max_length=500,
                              help_text=_("Why, for whoever sees this silence later."))


class SilenceAlertForm(forms.Form):
    hours = forms.TypedChoiceField(label=_("For"), choices=DURATIONS, coerce=int, initial=2)
    comment = forms.CharField(label=_("Comment"), max_length=500, required=False)


class RoutingForm(forms.Form):
    source = forms.CharField(
        label=_("Routing tree (YAML)"), strip=False,
        widget=forms.Textarea(attrs={"rows": 30, "class": "mono", "spellcheck": "false"}))
    comment = forms.CharField(label=_("What changed"), max_length=200, required=False)


class ImportForm(forms.Form):
    alertmanager_yml = forms.CharField(
        label=_("alertmanager.yml"), strip=False,
        widget=forms.Textarea(attrs={"rows": 20, "class": "mono", "spellcheck": "false"}),
        help_text=_("Paste a whole Alertmanager configuration: its route, receivers, "
                    "inhibit_rules and time_intervals are taken, and its receivers' webhook, "
                    "Slack and e-mail settings become notification channels (other kinds "
                    "become disabled placeholders). You see what it does before anything "
                    "is saved."))


class LabelsForm(forms.Form):
    labels = forms.CharField(
        label=_("Labels"), widget=forms.Textarea(attrs={"rows": 6, "class": "mono"}),
        help_text=_("One name=value per line, {name=\"value\", …}, or YAML/JSON."))
