"""The Simplified Chinese catalogue is complete and compiled."""

import ast
import gettext
import re
from pathlib import Path

from django.conf import settings

LOCALE = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"


def _entries(po_text):
    """(msgid, msgstr, msgctxt or None, block) of each entry of a .po file, plural forms
    as their first form."""
    entries = []
    for block in po_text.split("\n\n"):
        fields, current = {}, None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            match = re.match(r'^(msgctxt|msgid|msgid_plural|msgstr(?:\[0\])?) (".*")$', line)
            if match:
                current = match.group(1).replace("[0]", "")
                fields[current] = ast.literal_eval(match.group(2))
            elif line.startswith('"') and current:
                fields[current] += ast.literal_eval(line)
            elif line.startswith("msgstr["):
                current = None
        if fields.get("msgid"):
            entries.append((fields["msgid"], fields.get("msgstr", ""), fields.get("msgctxt"),
                            block))
    return entries


def test_every_message_is_translated_and_none_is_fuzzy():
    po = (LOCALE / "django.po").read_text()
    entries = _entries(po)
    assert len(entries) > 50
    untranslated = [msgid for msgid, msgstr, _context, _block in entries if not msgstr]
    assert untranslated == []
    assert "#, fuzzy" not in po


def test_compiled_catalogue_matches_the_source():
    with open(LOCALE / "django.mo", "rb") as fh:
        catalogue = gettext.GNUTranslations(fh)
    for msgid, msgstr, context, block in _entries((LOCALE / "django.po").read_text()):
        if "msgid_plural" in block:
            continue
        found = (catalogue.pgettext(context, msgid) if context is not None
                 else catalogue.gettext(msgid))
        assert found == msgstr, "run `manage.py compilemessages`"


def test_every_string_in_the_code_is_in_the_catalogue(tmp_path, settings, monkeypatch):
    """makemessages over a copy of the code finds no msgid the catalogue lacks (a copy:
    makemessages writes next to the code it scans)."""
    import shutil

    from django.core.management import call_command

    base = Path(settings.BASE_DIR)
    skip = shutil.ignore_patterns("__pycache__", "vendor", "*.mo")
    for part in ("opsplane", "cmdb", "changes", "approvals", "alerts", "oncall", "templates",
                 "locale"):
        shutil.copytree(base / part, tmp_path / part, ignore=skip)
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)
    call_command("makemessages", locale=["zh_Hans"], verbosity=0, no_obsolete=True)
    copy = tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    known = {msgid for msgid, *_ in _entries((LOCALE / "django.po").read_text())}
    found = {msgid for msgid, *_ in _entries(copy.read_text())}
    missing = sorted(found - known)
    assert missing == [], "run `manage.py makemessages -l zh_Hans` and translate these"


def test_blocktranslate_bodies_use_only_plain_variables(settings):
    """Inside {% blocktranslate %} a `{{ obj.attr }}` renders as nothing: bind it with
    `with name=obj.attr` instead."""
    found = []
    for path in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        text = path.read_text()
        for block in re.findall(r"{% blocktranslate(?:.*?)%}(.*?){% endblocktranslate %}",
                                text, re.S):
            found += [(path.name, v) for v in re.findall(r"{{\s*([^}]*?)\s*}}", block)
                      if "." in v or "|" in v]
    assert found == []
