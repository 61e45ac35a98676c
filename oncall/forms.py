from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from oncall.models import WEEKDAYS, Layer, Schedule


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ["name", "description", "time_zone"]
        widgets = {"time_zone": forms.TextInput(attrs={"list": "zone-names",
                                                       "autocomplete": "off"})}


class LayerForm(forms.ModelForm):
    participants = forms.CharField(
        label=_("Participants"), widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
        help_text=_("User names in rotation order, one per line (or separated by commas)."))
    restrict_days = forms.TypedMultipleChoiceField(
        label=_("Only on"), choices=WEEKDAYS, coerce=int, required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Leave all unticked for round the clock; otherwise the layer covers "
                    "only these days, between the times below (an until before the from "
                    "runs into the next day)."))

    class Meta:
        model = Layer
        fields = ["name", "level", "rotation", "shift_length", "shift_unit", "handoff_time",
                  "start_date", "restrict_days", "restrict_start", "restrict_end"]
        widgets = {
            "handoff_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "start_date": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "restrict_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "restrict_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["participants"] = "\n".join(
                self.instance.members.values_list("user__username", flat=True))

    def clean_participants(self):
        names = [n.strip() for n in self.cleaned_data["participants"].replace(",", "\n").split()
                 if n.strip()]
        users = get_user_model().objects.filter(username__in=names, is_active=True).in_bulk(
            field_name="username")
        unknown = [n for n in names if n not in users]
        if unknown:
            raise forms.ValidationError(_("Unknown or inactive users: %(names)s") % {
                "names": ", ".join(unknown)})
        if not names:
            raise forms.ValidationError(_("A rotation needs at least one participant."))
        return [users[n] for n in names]


class OverrideForm(forms.Form):
    user = forms.ModelChoiceField(label=_("Who takes over"), queryset=None)
    start = forms.DateTimeField(label=pgettext_lazy("time range", "From"),
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(label=pgettext_lazy("time range", "Until"),
                              widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    note = forms.CharField(label=_("Note"), max_length=200, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(
            is_active=True).order_by("username")
