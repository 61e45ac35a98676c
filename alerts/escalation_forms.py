"""Forms of the escalation pages: a policy with its steps (a formset, one row a step),
and a person's on-call contact. The rules are in ``alerts.escalation``."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils.translation import gettext_lazy as _

from alerts.escalation import TARGET_FIELD
from alerts.models import EscalationPolicy, EscalationStep, OnCallContact
from oncall.models import Schedule
from opsplane.notify.models import Channel

K = EscalationStep.Kind


class PolicyForm(forms.ModelForm):
    class Meta:
        model = EscalationPolicy
        fields = ["name", "description", "repeat"]


class StepForm(forms.Form):
    kind = forms.ChoiceField(label=_("Step"), required=False,
                             choices=[("", "—"), *K.choices])
    schedule = forms.ModelChoiceField(label=_("Schedule"), required=False,
                                      queryset=Schedule.objects.order_by("name"))
    user = forms.ModelChoiceField(label=_("User"), required=False,
                                  queryset=get_user_model().objects.filter(is_active=True)
                                  .order_by("username"))
    group = forms.ModelChoiceField(label=_("Group"), required=False,
                                   queryset=Group.objects.order_by("name"))
    channel = forms.ModelChoiceField(label=_("Channel"), required=False,
                                     queryset=Channel.objects.order_by("name"))
    wait_minutes = forms.IntegerField(label=_("Minutes"), required=False, min_value=1,
                                      max_value=24 * 60)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A row of a table: the column heading is the visible label, this the spoken one.
        for field in self.fields.values():
            field.widget.attrs.setdefault("aria-label", field.label)

    def step(self):
        """The step as ``alerts.escalation.save_policy`` takes it; None for a blank row."""
        data = self.cleaned_data
        kind = data.get("kind")
        if not kind or data.get("DELETE"):
            return None
        step = {"kind": kind}
        if kind == K.WAIT:
            step["wait_minutes"] = data.get("wait_minutes") or 0
        else:
            field = TARGET_FIELD[kind]
            step[field] = data.get(field)
        return step


class _Steps(forms.BaseFormSet):
    def add_fields(self, form, index):
        super().add_fields(form, index)
        if "DELETE" in form.fields:
            form.fields["DELETE"].widget.attrs["aria-label"] = _("Remove")


StepFormSet = forms.formset_factory(StepForm, formset=_Steps, extra=2, can_delete=True,
                                    max_num=50)


def initial_steps(policy):
    return [{"kind": s.kind, "schedule": s.schedule, "user": s.user, "group": s.group,
             "channel": s.channel, "wait_minutes": s.wait_minutes or None}
            for s in policy.steps.all()] if policy.pk else []


class ContactForm(forms.ModelForm):
    channels = forms.ModelMultipleChoiceField(
        label=_("Notify me through"), required=False,
        queryset=Channel.objects.filter(enabled=True).order_by("name"),
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Escalation messages for you go to each of these channels, with "
                    "your own one-click acknowledge link."))

    class Meta:
        model = OnCallContact
        fields = ["mobile", "email", "chat_id"]
        help_texts = {"mobile": _("For SMS, and @mentions on DingTalk and WeCom."),
                      "email": _("For e-mail channels; empty: your account's address.")}
