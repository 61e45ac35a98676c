"""The channel form: the common fields plus those of the channel's kind.

Secret fields are never filled in from the database: a saved secret is not shown again.
Leave them empty to keep what is stored.
"""

from django import forms
from django.utils.translation import gettext_lazy as _

from opsplane.notify import render, services
from opsplane.notify.models import Channel

K = Channel.Kind

SECRET_LABELS = {
    "url": (_("URL"), _("The robot's or endpoint's full URL, with its token.")),
    "signing_secret": (_("Signing secret"), _("DingTalk: the SEC… secret; Feishu: the "
                                              "signature key; webhook: HMAC key of "
                                              "X-Opsplane-Signature.")),
    "token": (_("Bearer token"), _("Sent as Authorization: Bearer <token>.")),
}
FORMAT_CHOICES = {
    K.DINGTALK: [("markdown", "markdown"), ("text", "text")],
    K.WECOM: [("markdown", "markdown"), ("text", "text")],
    K.FEISHU: [("interactive", _("card")), ("post", _("rich text (post)")),
               ("text", "text")],
}
MENTION_HELP = {
    K.DINGTALK: _("Mobile numbers to @ in every message, comma-separated."),
    K.WECOM: _("Mobile numbers or user ids to @ (@all for everyone). With mobile "
               "numbers, messages are sent as text: WeCom's markdown cannot @ a mobile."),
    K.FEISHU: _("Open ids (ou_…) to @, or all."),
    K.SLACK: _("Slack member ids (U…) to @."),
}


def _csv(value):
    return ", ".join(value or [])


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["name", "description", "enabled", "rate_budget", "template"]
        widgets = {"template": forms.Textarea(attrs={"rows": 8, "class": "mono",
                                                     "spellcheck": "false"})}

    def __init__(self, *args, kind, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        stored = set(self.instance.secret_fields or []) if self.instance.pk else set()
        config = self.instance.config if self.instance.pk else {}
        for name in services.SECRET_FIELDS[kind]:
            label, help_text = SECRET_LABELS[name]
            if name in stored:
                help_text = _("Stored (not shown). Leave empty to keep it.")
            self.fields[name] = forms.CharField(
                label=label, required=False, strip=True, help_text=help_text,
                widget=forms.PasswordInput(render_value=False,
                                           attrs={"autocomplete": "off"}))
            if name in stored and name != "url":
                self.fields[f"clear_{name}"] = forms.BooleanField(
                    label=_("Remove the stored %(label)s") % {"label": label},
                    required=False)
        allowed = services.CONFIG_FIELDS[kind]
        if "mentions" in allowed:
            self.fields["mentions"] = forms.CharField(
                label=_("Mentions"), required=False, initial=_csv(config.get("mentions")),
                help_text=MENTION_HELP.get(kind, ""))
        if "at_all" in allowed:
            self.fields["at_all"] = forms.BooleanField(
                label=_("@ everyone in the group"), required=False,
                initial=config.get("at_all", False))
        if "format" in allowed:
            self.fields["format"] = forms.ChoiceField(
                label=_("Message type"), choices=FORMAT_CHOICES[kind],
                initial=config.get("format") or FORMAT_CHOICES[kind][0][0])
        if "recipients" in allowed:
            self.fields["recipients"] = forms.CharField(
                label=_("Recipients"), initial=_csv(config.get("recipients")),
                required=kind != K.EMAIL,
                help_text=_("E-mail addresses, comma-separated. Empty: only the people "
                            "each message names (e.g. approvers).") if kind == K.EMAIL
                else _("Mobile numbers, comma-separated."))
        if "from_email" in allowed:
            self.fields["from_email"] = forms.EmailField(
                label=_("From"), required=False, initial=config.get("from_email", ""),
                help_text=_("Empty: DEFAULT_FROM_EMAIL."))
        if kind == K.SMS:
            self.fields["method"] = forms.ChoiceField(
                label=_("HTTP method"), choices=[(m, m) for m in ("POST", "GET", "PUT")],
                initial=config.get("method", "POST"))
            self.fields["content_type"] = forms.CharField(
                label=_("Content type"), required=False,
                initial=config.get("content_type", "application/json; charset=utf-8"))
            self.fields["body_template"] = forms.CharField(
                label=_("Body template"), required=False,
                initial=config.get("body_template", ""),
                widget=forms.Textarea(attrs={"rows": 4, "class": "mono",
                                             "placeholder": services.senders.DEFAULT_SMS_BODY}),
                help_text=_("Django template with text, title, severity, link, mobiles, "
                            "mobiles_csv; filters json and urlencode. The URL may use them "
                            "too."))
            self.fields["headers"] = forms.CharField(
                label=_("Extra headers"), required=False,
                initial="\n".join(f"{k}: {v}" for k, v in (config.get("headers") or {}).items()),
                widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}),
                help_text=_("One “Name: value” per line."))
            self.fields["result_field"] = forms.CharField(
                label=_("Result field"), required=False,
                initial=config.get("result_field", ""),
                help_text=_("Dotted path of a result code in the JSON answer (e.g. code); "
                            "empty: any 2xx answer is success."))
            self.fields["ok_values"] = forms.CharField(
                label=_("Success values"), required=False,
                initial=_csv(config.get("ok_values")), help_text=_("Default: 0."))
        self.fields["template"].widget.attrs["placeholder"] = render.default_template(kind)
        secret_names = services.SECRET_FIELDS[kind]
        self.order_fields(["name", "description", "enabled", *secret_names,
                           *(f"clear_{name}" for name in secret_names),
                           *services.CONFIG_FIELDS[kind], "rate_budget", "template"])

    def clean_headers(self):
        headers = {}
        for line in self.cleaned_data["headers"].splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise forms.ValidationError(_("Write each header as “Name: value”."))
            headers[name.strip()] = value.strip()
        return headers

    def validate_unique(self):
        pass  # the service's full_clean() checks it, with the same message

    def config(self):
        """``Channel.config`` from the kind's fields, as typed: ``services.clean_config``
        splits the comma- or line-separated lists."""
        return {name: self.cleaned_data[name] for name in services.CONFIG_FIELDS[self.kind]
                if name in self.cleaned_data}

    def secrets(self):
        return {name: self.cleaned_data.get(name) or ""
                for name in services.SECRET_FIELDS[self.kind]}

    def cleared(self):
        return [name for name in services.SECRET_FIELDS[self.kind]
                if self.cleaned_data.get(f"clear_{name}")]

    def model_data(self):
        return {name: self.cleaned_data[name] for name in self.Meta.fields}


class KindForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind"), choices=Channel.Kind.choices)
