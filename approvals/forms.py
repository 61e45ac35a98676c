import re

from django import forms
from django.utils.translation import gettext_lazy as _

from approvals.matching import RISKS
from approvals.models import Decision, Window

REQUIREMENT_RE = re.compile(r"^\s*(\d+)\s*(?:of\s+|×\s*|x\s+)?([A-Za-z0-9._@+-]+)\s*$")


def _split(text):
    return [item.strip() for item in (text or "").split(",") if item.strip()]


class DecisionForm(forms.Form):
    kind = forms.ChoiceField(choices=[(k, label) for k, label in Decision.Kind.choices
                                      if k != Decision.Kind.EMERGENCY])
    comment = forms.CharField(label=_("Comment"), required=False, strip=True,
                              widget=forms.Textarea(attrs={"rows": 2}))


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), required=False,
                             widget=forms.Textarea(attrs={"rows": 2}))


class ReviewForm(forms.Form):
    note = forms.CharField(label=_("Review note"), required=False,
                           widget=forms.Textarea(attrs={"rows": 2}))


class PolicyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    description = forms.CharField(label=_("Description"), max_length=300, required=False)
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    environments = forms.CharField(
        label=_("Environments"), required=False,
        help_text=_("Comma-separated, e.g. prod, staging. Empty: any environment."))
    selector = forms.CharField(
        label=_("Host selector"), required=False, max_length=4096,
        widget=forms.TextInput(attrs={"class": "mono", "placeholder": "role=db,zone in (a,b)"}),
        help_text=_("Labels, env, service and name, as in the inventory's selectors "
                    "(no group). Empty: any host."))
    runbooks = forms.CharField(label=_("Runbooks"), required=False,
                               help_text=_("Comma-separated runbook names. Empty: any."))
    min_risk = forms.ChoiceField(
        label=_("Minimum risk"), required=False,
        choices=[("", _("any"))] + [(r, r) for r in RISKS],
        help_text=_("A change's risk is the highest tier among the services it touches."))
    requirements = forms.CharField(
        label=_("Requires"), initial="1 of approver",
        help_text=_("Comma-separated, e.g. “2 of approver” or “1 of dba, 1 of approver”: "
                    "all of them, each by a different person."))
    allow_author = forms.BooleanField(label=_("The author may approve"), required=False)
    validity_hours = forms.IntegerField(label=_("Valid for (hours)"), min_value=1,
                                        max_value=24 * 365, initial=72)
    rejection_ends = forms.BooleanField(label=_("One rejection ends the request"),
                                        required=False, initial=True)
    channels = forms.CharField(
        label=_("Notify channels"), required=False,
        help_text=_("Comma-separated names of notification channels that hear when a "
                    "request needs approvers and about each decision."))

    @classmethod
    def for_policy(cls, policy, data=None):
        initial = {}
        if policy.pk:
            initial = {
                "name": policy.name, "description": policy.description,
                "enabled": policy.enabled, "environments": ", ".join(policy.environments),
                "selector": policy.selector, "runbooks": ", ".join(policy.runbooks),
                "min_risk": policy.min_risk,
                "requirements": ", ".join(f"{r['count']} of {r['group']}"
                                          for r in policy.requirements),
                "allow_author": policy.allow_author, "validity_hours": policy.validity_hours,
                "rejection_ends": policy.rejection_ends,
                "channels": ", ".join(policy.channels),
            }
        return cls(data, initial=initial)

    def clean_requirements(self):
        items = []
        for part in _split(self.cleaned_data["requirements"]):
            match = REQUIREMENT_RE.match(part)
            if not match:
                raise forms.ValidationError(
                    _("“%(part)s”: write a count and a group, e.g. 2 of approver."),
                    params={"part": part})
            items.append({"group": match.group(2), "count": int(match.group(1))})
        return items

    def policy_data(self):
        data = dict(self.cleaned_data)
        data["environments"] = _split(data["environments"])
        data["runbooks"] = _split(data["runbooks"])
        data["channels"] = _split(data["channels"])
        return data


class WindowForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    description = forms.CharField(label=_("Description"), max_length=300, required=False)
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    environments = forms.CharField(label=_("Environments"), required=False,
                                   help_text=_("Comma-separated. Empty: any environment."))
    selector = forms.CharField(
        label=_("Host selector"), required=False, max_length=4096,
        widget=forms.TextInput(attrs={"class": "mono"}),
        help_text=_("Labels, env, service and name (no group). Empty: any host."))
    kind = forms.ChoiceField(label=_("Repeats"), choices=Window.Kind.choices)
    timezone = forms.CharField(label=_("Time zone"), initial="UTC",
                               help_text=_("IANA name, e.g. Asia/Shanghai, Europe/Berlin."))
    start_weekday = forms.TypedChoiceField(
        label=_("From day"), required=False, coerce=int, empty_value=None,
        choices=[("", "—")] + list(Window.Weekday.choices))
    start_date = forms.DateField(label=_("From date"), required=False,
                                 widget=forms.DateInput(attrs={"type": "date"}))
    start_time = forms.TimeField(label=_("From time"),
                                 widget=forms.TimeInput(attrs={"type": "time"}))
    end_weekday = forms.TypedChoiceField(
        label=_("To day"), required=False, coerce=int, empty_value=None,
        choices=[("", "—")] + list(Window.Weekday.choices))
    end_date = forms.DateField(label=_("To date"), required=False,
                               widget=forms.DateInput(attrs={"type": "date"}))
    end_time = forms.TimeField(label=_("To time"),
                               widget=forms.TimeInput(attrs={"type": "time"}))

    @classmethod
    def for_window(cls, window, data=None):
        initial = {}
        if window.pk:
            initial = {f: getattr(window, f) for f in (
                "name", "description", "enabled", "selector", "kind", "timezone",
                "start_weekday", "end_weekday", "start_date", "end_date", "start_time",
                "end_time")}
            initial["environments"] = ", ".join(window.environments)
        return cls(data, initial=initial)

    def window_data(self):
        data = dict(self.cleaned_data)
        data["environments"] = _split(data["environments"])
        return data


class ImportForm(forms.Form):
    document = forms.CharField(
        label=_("Policies (YAML)"), strip=False,
        widget=forms.Textarea(attrs={"rows": 18, "class": "mono", "spellcheck": "false"}))
    prune = forms.BooleanField(label=_("Delete policies the document does not name"),
                               required=False)

