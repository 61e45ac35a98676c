from django import forms
from django.utils.translation import gettext_lazy as _

from changes.models import Runbook
from changes.runbooks import dump_definition

EXAMPLE = """parameters:
  - name: service
    type: choice
    choices: [nginx, redis]
    required: true
steps:
  - name: restart
    kind: shell
    command: systemctl restart {{ service }}
    timeout: 120
"""


class RunbookForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    description = forms.CharField(label=_("Description"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    definition = forms.CharField(
        label=_("Parameters and steps (YAML)"), strip=False,
        widget=forms.Textarea(attrs={"rows": 18, "class": "mono", "spellcheck": "false",
                                     "placeholder": EXAMPLE}),
        help_text=_("Step kinds: shell, script, upload. Parameters are inserted shell-quoted: "
                    "{{ name }} is always one argument."),
    )

    @classmethod
    def for_runbook(cls, runbook, data=None):
        initial = {}
        if runbook.pk:
            version = runbook.latest
            initial = {"name": runbook.name, "description": runbook.description,
                       "definition": dump_definition(version.parameters, version.steps)
                       if version else ""}
        return cls(data, initial=initial)


def param_field(param):
    """The form field for one declared parameter (named ``param_<name>``)."""
    common = {"label": param["label"], "required": False,
              "help_text": param.get("description", "")}
    if "default" in param:
        common["initial"] = param["default"]
    kind = param["type"]
    if param["secret"]:
        return forms.CharField(widget=forms.PasswordInput(render_value=False), **common)
    if kind == "text":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
                               strip=False, **common)
    if kind == "int":
        return forms.CharField(widget=forms.NumberInput(), **common)
    if kind == "bool":
        return forms.BooleanField(**common)
    if kind == "choice":
        choices = [("", "—")] + [(c, c) for c in param["choices"]]
        return forms.ChoiceField(choices=choices, **common)
    return forms.CharField(**common)


class ChangeForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200)
    description = forms.CharField(label=_("Why"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    runbook = forms.ModelChoiceField(label=_("Runbook"), to_field_name="name",
                                     queryset=Runbook.objects.filter(archived=False))
    selector = forms.CharField(
        label=_("Target selector"), max_length=4096,
        widget=forms.TextInput(attrs={"class": "mono", "autocomplete": "off",
                                      "placeholder": "env=prod,role=web"}))
    parallelism = forms.IntegerField(label=_("Parallelism"), initial=20, min_value=1,
                                     max_value=1000, help_text=_("Hosts at once."))
    batches = forms.CharField(label=_("Batches"), required=False,
                              help_text=_("Rolling sizes, e.g. 1, 10%, 100%. Empty: all."))
    max_fail_percentage = forms.CharField(label=_("Abort above failure %"), required=False)
    pause_between_batches = forms.CharField(label=_("Pause between batches (s)"),
                                            required=False)
    check_mode = forms.BooleanField(label=_("Check mode (dry run: show, execute nothing)"),
                                    required=False)
    scheduled_at = forms.DateTimeField(
        label=_("Run at"), required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text=_("Empty: start it yourself when it is ready."))

    def __init__(self, *args, parameters=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.parameters = list(parameters)
        for param in self.parameters:
            self.fields[f"param_{param['name']}"] = param_field(param)

    def param_fields(self):
        return [self[f"param_{p['name']}"] for p in self.parameters]

    def service_kwargs(self):
        data = self.cleaned_data
        return {
            "title": data["title"], "description": data["description"],
            "runbook": data["runbook"], "selector": data["selector"],
            "scheduled_at": data["scheduled_at"],
            "params": {p["name"]: data.get(f"param_{p['name']}") for p in self.parameters},
            "strategy": {k: data[k] for k in ("parallelism", "batches", "max_fail_percentage",
                                              "pause_between_batches", "check_mode")},
        }
