from django import forms
from django.utils.translation import gettext_lazy as _


class ApiTokenForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100,
                           help_text=_("What will use it, e.g. “deploy pipeline”."))
    expires_at = forms.DateTimeField(
        label=_("Expires"), required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text=_("Leave empty for a token that lasts until revoked."),
    )

